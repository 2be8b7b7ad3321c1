//! Feed-forward blocks.

use std::path::Path;

use burn::tensor::Tensor;
use burn::tensor::activation::{gelu, gelu_approximate, relu, silu};
use strata_core::{Error, Result};

use crate::linear::Linear;
use crate::loader::WeightLoader;

/// An element-wise activation, named as in HF configs (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActFn {
    /// `silu` / `swish`: `x · sigmoid(x)`.
    Silu,
    /// `gelu`: exact, `x · Φ(x)` (erf).
    Gelu,
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `relu`.
    Relu,
}

impl ActFn {
    /// The activation an HF config names in `hidden_act`; errors name `path` and the field.
    pub fn from_hf(name: &str, path: &Path) -> Result<Self> {
        Self::from_hf_field(name, "hidden_act", path)
    }

    /// Like [`ActFn::from_hf`] for a config that names its activation in another field (GPT-2:
    /// `activation_function`); errors name `path` and `field`.
    pub fn from_hf_field(name: &str, field: &str, path: &Path) -> Result<Self> {
        match name {
            "silu" | "swish" => Ok(ActFn::Silu),
            "gelu" => Ok(ActFn::Gelu),
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Ok(ActFn::GeluTanh),
            "relu" => Ok(ActFn::Relu),
            other => Err(Error::Unsupported(format!(
                "{}: field `{field}`: activation `{other}` is not supported (supported: silu, \
                 swish, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, relu)",
                path.display()
            ))),
        }
    }

    /// Applies the activation element-wise.
    pub fn apply<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        if crate::cpu::flex_f32(&x) {
            return crate::cpu::activation(x, self);
        }
        match self {
            ActFn::Silu => silu(x),
            ActFn::Gelu => gelu(x),
            ActFn::GeluTanh => gelu_approximate(x),
            ActFn::Relu => relu(x),
        }
    }
}

/// The gated MLP of Llama, Qwen2, Mistral and Gemma: `down(act(gate(x)) · up(x))`. Gate and up
/// run as one fused matmul.
#[derive(Debug, Clone)]
pub struct GatedMlp {
    gate_up: Linear,
    down: Linear,
    d_ff: usize,
    act: ActFn,
}

impl GatedMlp {
    /// An MLP from its three projections.
    pub fn new(gate: Linear, up: Linear, down: Linear, act: ActFn) -> Self {
        let d_ff = gate.out_features();
        assert_eq!(
            up.out_features(),
            d_ff,
            "GatedMlp: gate and up widths differ"
        );
        Self {
            gate_up: Linear::concat(vec![gate, up]),
            down,
            d_ff,
            act,
        }
    }

    /// Loads HF's `{prefix}.gate_proj`, `{prefix}.up_proj` (`[d_ff, d_model]`) and
    /// `{prefix}.down_proj` (`[d_model, d_ff]`), with biases when `bias`.
    pub fn load(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        d_model: usize,
        d_ff: usize,
        act: ActFn,
        bias: bool,
    ) -> Result<Self> {
        let gate = Linear::load(loader, &format!("{prefix}.gate_proj"), d_model, d_ff, bias)?;
        let up = Linear::load(loader, &format!("{prefix}.up_proj"), d_model, d_ff, bias)?;
        let down = Linear::load(loader, &format!("{prefix}.down_proj"), d_ff, d_model, bias)?;
        Ok(Self::new(gate, up, down, act))
    }

    /// `[b, t, d_model]` → `[b, t, d_model]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let gu = self.gate_up.forward(x);
        if crate::cpu::flex_f32(&gu) {
            return self
                .down
                .forward(crate::cpu::gated(gu, self.d_ff, self.act));
        }
        let gate = gu.clone().narrow(2, 0, self.d_ff);
        let up = gu.narrow(2, self.d_ff, self.d_ff);
        self.down.forward(self.act.apply(gate) * up)
    }
}

/// The plain MLP of GPT-2, GPT-NeoX and BERT: `proj(act(fc(x)))`.
#[derive(Debug, Clone)]
pub struct Mlp {
    fc: Linear,
    proj: Linear,
    act: ActFn,
}

impl Mlp {
    /// An MLP from its two projections.
    pub fn new(fc: Linear, proj: Linear, act: ActFn) -> Self {
        Self { fc, proj, act }
    }

    /// `[b, t, d_model]` → `[b, t, d_model]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        self.proj.forward(self.act.apply(self.fc.forward(x)))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use burn::tensor::{Device, Tensor, TensorData};

    use super::{ActFn, GatedMlp, Linear};

    fn t2(v: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
        Tensor::from_data(TensorData::new(v, shape), device)
    }

    #[test]
    fn activations_match_their_formulas() {
        let device = Device::flex();
        let xs = [-2.0f64, -0.5, 0.0, 0.7, 3.0];
        let x =
            Tensor::<1>::from_data(TensorData::new(xs.map(|v| v as f32).to_vec(), [5]), &device);
        let erf = |v: f64| {
            // Abramowitz–Stegun 7.1.26 is too coarse; use the series, exact enough for |v| < 3.
            let mut sum = 0.0;
            let mut term = v;
            for n in 0..60 {
                sum += term / (2 * n + 1) as f64;
                term *= -v * v / (n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        };
        type Reference = Box<dyn Fn(f64) -> f64>;
        let cases: [(ActFn, Reference); 4] = [
            (ActFn::Silu, Box::new(|v| v / (1.0 + (-v).exp()))),
            (
                ActFn::Gelu,
                Box::new(move |v| 0.5 * v * (1.0 + erf(v / 2f64.sqrt()))),
            ),
            (
                ActFn::GeluTanh,
                Box::new(|v| {
                    0.5 * v
                        * (1.0
                            + ((2.0 / std::f64::consts::PI).sqrt() * (v + 0.044715 * v.powi(3)))
                                .tanh())
                }),
            ),
            (ActFn::Relu, Box::new(|v| v.max(0.0))),
        ];
        for (act, f) in cases {
            let out = act.apply(x.clone()).try_into_vec_as::<f32>().unwrap();
            for (o, v) in out.iter().zip(xs) {
                assert!(
                    (*o as f64 - f(v)).abs() < 1e-5,
                    "{act:?}({v}) = {o}, expected {}",
                    f(v)
                );
            }
        }
        assert!(ActFn::from_hf("quick_gelu", Path::new("c.json")).is_err());
        assert_eq!(
            ActFn::from_hf("gelu_pytorch_tanh", Path::new("c.json")).unwrap(),
            ActFn::GeluTanh
        );
    }

    #[test]
    fn gated_mlp_is_down_of_act_gate_times_up() {
        let device = Device::flex();
        // d_model 2, d_ff 2; weights stored [in, out].
        let gate = Linear::new(t2(vec![1.0, 0.0, 0.0, 1.0], [2, 2], &device), None);
        let up = Linear::new(t2(vec![2.0, 0.0, 0.0, 3.0], [2, 2], &device), None);
        let down = Linear::new(t2(vec![1.0, 1.0, 0.0, 1.0], [2, 2], &device), None);
        let mlp = GatedMlp::new(gate, up, down, ActFn::Relu);
        let x = Tensor::<3>::from_data(TensorData::new(vec![1.0f32, -1.0], [1, 1, 2]), &device);
        // gate = (1, -1) → relu (1, 0); up = (2, -3); product (2, 0); down: (2·1 + 0·0, 2·1 + 0·1).
        let out = mlp.forward(x).try_into_vec_as::<f32>().unwrap();
        assert_eq!(out, vec![2.0, 2.0]);
    }
}

//! Normalisations over the last axis, computed in f32 as Hugging Face does.

use burn::tensor::module::layer_norm;
use burn::tensor::{Device, Tensor};
use strata_core::{NormKind, Result};

use crate::loader::WeightLoader;

/// RMSNorm: `x · rsqrt(mean(x²) + eps) · w` over the last axis (HF `LlamaRMSNorm` order:
/// normalise first, then scale).
///
/// Gemma's variant multiplies by `(1 + w)`; [`RmsNorm::load`] folds the offset into the stored
/// weight once (`1 + w` rounded to f32, exactly what HF computes per call).
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor<1>,
    eps: f64,
}

impl RmsNorm {
    /// A norm with the effective weight `weight` (already offset for Gemma).
    pub fn new(weight: Tensor<1>, eps: f64) -> Self {
        Self { weight, eps }
    }

    /// Loads `name` (`[width]`); `unit_offset` means the checkpoint stores Gemma's `w` of
    /// `(1 + w)`.
    pub fn load(
        loader: &mut WeightLoader<'_>,
        name: &str,
        width: usize,
        eps: f64,
        unit_offset: bool,
    ) -> Result<Self> {
        let w = loader.tensor(name, [width])?;
        Ok(Self::new(
            if unit_offset { w.add_scalar(1.0) } else { w },
            eps,
        ))
    }

    /// Normalises the last axis of `x` (any rank: hidden states or per-head q/k).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if crate::cpu::flex_f32(&x) {
            return crate::cpu::rms_norm(x, &self.weight, self.eps);
        }
        let mean_sq = x.clone().square().mean_dim(D - 1);
        let normed = x * mean_sq.add_scalar(self.eps).sqrt().recip();
        normed * self.weight.clone().unsqueeze::<D>()
    }
}

/// LayerNorm: `(x − mean) / sqrt(var + eps) · γ + β` over the last axis (biased variance).
#[derive(Debug, Clone)]
pub struct LayerNorm {
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
}

impl LayerNorm {
    /// A norm with scale `gamma` and shift `beta`.
    pub fn new(gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Self {
        Self { gamma, beta, eps }
    }

    /// Loads `{prefix}.weight` (γ) and `{prefix}.bias` (β), both `[width]`.
    pub fn load(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        width: usize,
        eps: f64,
    ) -> Result<Self> {
        let gamma = loader.tensor(&format!("{prefix}.weight"), [width])?;
        let beta = loader.tensor(&format!("{prefix}.bias"), [width])?;
        Ok(Self::new(gamma, beta, eps))
    }

    /// Normalises the last axis of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        if crate::cpu::flex_f32(&x) {
            // flex's fused layer norm: one pass per row, rows across threads.
            return layer_norm(x, self.gamma.clone(), Some(self.beta.clone()), self.eps);
        }
        let (var, mean) = x.clone().var_mean_bias(D - 1);
        let normed = (x - mean) * var.add_scalar(self.eps).sqrt().recip();
        normed * self.gamma.clone().unsqueeze::<D>() + self.beta.clone().unsqueeze::<D>()
    }
}

/// Either norm, chosen by a model's [`NormKind`] (boxed: a burn tensor handle is large).
#[derive(Debug, Clone)]
pub enum Norm {
    /// RMSNorm.
    Rms(Box<RmsNorm>),
    /// LayerNorm.
    Layer(Box<LayerNorm>),
}

impl Norm {
    /// Loads the norm of `kind` at `prefix` (`{prefix}.weight`, plus `{prefix}.bias` for
    /// LayerNorm).
    pub fn load(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        kind: NormKind,
        width: usize,
    ) -> Result<Self> {
        match kind {
            NormKind::RmsNorm { eps, unit_offset } => {
                RmsNorm::load(loader, &format!("{prefix}.weight"), width, eps, unit_offset)
                    .map(|n| Norm::Rms(Box::new(n)))
            }
            NormKind::LayerNorm { eps } => {
                LayerNorm::load(loader, prefix, width, eps).map(|n| Norm::Layer(Box::new(n)))
            }
        }
    }

    /// A freshly initialised norm of `kind`: unit scale, zero shift (HF's initialisation; for
    /// Gemma's `(1 + w)` form that is `w = 0`, i.e. an effective scale of 1 as well).
    pub fn fresh(kind: NormKind, width: usize, device: &Device) -> Self {
        let ones = Tensor::ones([width], device);
        match kind {
            NormKind::RmsNorm { eps, .. } => Norm::Rms(Box::new(RmsNorm::new(ones, eps))),
            NormKind::LayerNorm { eps } => {
                let zeros = Tensor::zeros([width], device);
                Norm::Layer(Box::new(LayerNorm::new(ones, zeros, eps)))
            }
        }
    }

    /// Normalises the last axis of `x`.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Norm::Rms(n) => n.forward(x),
            Norm::Layer(n) => n.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};
    use strata_core::NormKind;

    use super::{LayerNorm, Norm, RmsNorm};

    fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
        t.try_into_vec_as::<f32>().unwrap()
    }

    fn close(actual: &[f32], expected: &[f64], tol: f64) {
        assert_eq!(actual.len(), expected.len());
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            assert!((a as f64 - e).abs() <= tol, "element {i}: {a} vs {e}");
        }
    }

    const X: [f64; 8] = [1.0, 2.0, 3.0, 4.0, -0.5, 0.25, 8.0, -3.0];

    fn input(device: &Device) -> Tensor<2> {
        let x: Vec<f32> = X.iter().map(|&v| v as f32).collect();
        Tensor::from_data(TensorData::new(x, [2, 4]), device)
    }

    #[test]
    fn rms_norm_matches_the_formula() {
        let device = Device::flex();
        let w = [1.0, 2.0, 0.5, -1.0];
        let eps = 1e-5;
        let expected = |offset: f64| -> Vec<f64> {
            X.chunks(4)
                .flat_map(|row| {
                    let ms = row.iter().map(|v| v * v).sum::<f64>() / 4.0;
                    let r = 1.0 / (ms + eps).sqrt();
                    row.iter()
                        .zip(w)
                        .map(move |(v, w)| v * r * (w + offset))
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let weight =
            || Tensor::<1>::from_data(TensorData::new(w.map(|v| v as f32).to_vec(), [4]), &device);
        let plain = RmsNorm::new(weight(), eps);
        close(&values(plain.forward(input(&device))), &expected(0.0), 1e-6);
        // Gemma: stored w, effective (1 + w).
        let gemma = RmsNorm::new(weight().add_scalar(1.0), eps);
        close(&values(gemma.forward(input(&device))), &expected(1.0), 1e-6);
        // First row by hand: mean(x²) = 30/4 = 7.5.
        let r = 1.0 / (7.5f64 + 1e-5).sqrt();
        close(
            &values(plain.forward(input(&device)))[..4],
            &[r, 4.0 * r, 1.5 * r, -4.0 * r],
            1e-6,
        );
    }

    #[test]
    fn layer_norm_matches_the_formula() {
        let device = Device::flex();
        let gamma =
            Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0, 0.5, -1.0], [4]), &device);
        let beta =
            Tensor::<1>::from_data(TensorData::new(vec![0.1f32, 0.0, -0.2, 0.3], [4]), &device);
        let eps = 1e-5;
        let ln = LayerNorm::new(gamma, beta, eps);
        let (g, b) = ([1.0, 2.0, 0.5, -1.0], [0.1, 0.0, -0.2, 0.3]);
        let expected: Vec<f64> = X
            .chunks(4)
            .flat_map(|row| {
                let mean = row.iter().sum::<f64>() / 4.0;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / 4.0;
                (0..4)
                    .map(|i| (row[i] - mean) / (var + eps).sqrt() * g[i] + b[i])
                    .collect::<Vec<_>>()
            })
            .collect();
        close(&values(ln.forward(input(&device))), &expected, 1e-5);
        // First row by hand: mean 2.5, biased variance 1.25.
        let s = 1.0 / (1.25f64 + 1e-5).sqrt();
        close(
            &values(ln.forward(input(&device)))[..4],
            &[-1.5 * s + 0.1, -s, 0.25 * s - 0.2, -1.5 * s + 0.3],
            1e-6,
        );
    }

    #[test]
    fn fresh_norms_only_normalise() {
        let device = Device::flex();
        let rms = Norm::fresh(
            NormKind::RmsNorm {
                eps: 0.0,
                unit_offset: true,
            },
            4,
            &device,
        );
        let out = values(rms.forward(input(&device)));
        let ms: f32 = out[..4].iter().map(|v| v * v).sum::<f32>() / 4.0;
        assert!((ms - 1.0).abs() < 1e-6);
        let ln = Norm::fresh(NormKind::LayerNorm { eps: 0.0 }, 4, &device);
        let out = values(ln.forward(input(&device)));
        let mean: f32 = out[4..].iter().sum::<f32>() / 4.0;
        assert!(mean.abs() < 1e-6);
    }
}

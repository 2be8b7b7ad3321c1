//! Affine maps and token embeddings.

use std::sync::Arc;

use burn::tensor::{Bool, Int, Tensor, TensorData};
use strata_core::packed::PackedRows;
use strata_core::{Error, Result, TokenBatch};

use crate::loader::WeightLoader;

/// `y = x·W + b` for `W` of shape `[in, out]`, stored in the layout the backend's matmul reads
/// best, contiguous:
///
/// - on flex, `[out, in]` (HF's own `nn.Linear` layout, so [`Linear::load`] copies nothing),
///   multiplied by gemm directly into the output with the bias as its initial value; a
///   decoding step's matrix–vector product streams contiguous weight rows, split by output
///   blocks across the threads (gemm alone runs a single-row product on one thread);
/// - elsewhere, `[in, out]`, so every forward is one plain matmul of a row-major matrix.
///
/// GPT-2's `Conv1D` stores `[in, out]` ([`Linear::load_conv1d`]).
///
/// A map loaded on flex from a container with block-quantised storage (GGUF) also keeps that
/// storage ([`PackedRows`], read in place from the file): products of at most
/// [`cpu::packed::MAX_ROWS`](crate::cpu::packed::MAX_ROWS) rows — decoding steps — read it
/// instead of the f32 copy, 4–8 bits per weight instead of 32, with the same weight values.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]` when `out_major`, else `[in, out]`.
    weight: Tensor<2>,
    out_major: bool,
    bias: Option<Tensor<1>>,
    /// The weight's block-quantised rows (`[out, in]`, in blocks of consecutive outputs).
    packed: Option<Arc<[PackedRows]>>,
}

impl Linear {
    /// A linear map from a `[in, out]` weight and an optional `[out]` bias.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        if crate::on_flex(&weight.device()) {
            Self::from_stored(contiguous(weight.transpose()), true, bias)
        } else {
            Self::from_stored(weight, false, bias)
        }
    }

    /// A linear map from a contiguous `[out, in]` weight (HF's layout).
    fn from_out_in(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        if crate::on_flex(&weight.device()) {
            Self::from_stored(weight, true, bias)
        } else {
            Self::from_stored(contiguous(weight.transpose()), false, bias)
        }
    }

    fn from_stored(weight: Tensor<2>, out_major: bool, bias: Option<Tensor<1>>) -> Self {
        let out = weight.dims()[usize::from(!out_major)];
        if let Some(b) = &bias {
            assert_eq!(
                b.dims()[0],
                out,
                "Linear: bias length must equal the output width"
            );
        }
        Self {
            weight,
            out_major,
            bias,
            packed: None,
        }
    }

    /// Loads an HF `nn.Linear`: `{prefix}.weight` of shape `[out, in]` and, when `bias`,
    /// `{prefix}.bias` of shape `[out]`.
    pub fn load(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let w = loader.tensor(&name, [out_features, in_features])?;
        let bias = Self::load_bias(loader, prefix, out_features, bias)?;
        let mut linear = Self::from_out_in(w, bias);
        if linear.out_major {
            linear.packed = loader
                .packed(&name, [out_features, in_features])?
                .filter(|p| crate::cpu::packed::supports(p.format()))
                .map(|p| Arc::from([p]));
        }
        Ok(linear)
    }

    /// Loads a GPT-2 `Conv1D`: `{prefix}.weight` of shape `[in, out]` and, when `bias`,
    /// `{prefix}.bias` of shape `[out]`.
    pub fn load_conv1d(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        bias: bool,
    ) -> Result<Self> {
        let w = loader.tensor(&format!("{prefix}.weight"), [in_features, out_features])?;
        let bias = Self::load_bias(loader, prefix, out_features, bias)?;
        Ok(Self::new(w, bias))
    }

    fn load_bias(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        out_features: usize,
        bias: bool,
    ) -> Result<Option<Tensor<1>>> {
        if bias {
            loader
                .tensor(&format!("{prefix}.bias"), [out_features])
                .map(Some)
        } else {
            Ok(None)
        }
    }

    /// One map computing every part's outputs side by side (`[in, Σ out]`), e.g. q|k|v or
    /// gate|up: one matmul instead of several. Parts without a bias get a zero bias when another
    /// part has one.
    pub fn concat(parts: Vec<Linear>) -> Self {
        assert!(!parts.is_empty(), "Linear::concat needs at least one part");
        let any_bias = parts.iter().any(|p| p.bias.is_some());
        let bias = any_bias.then(|| {
            let biases = parts
                .iter()
                .map(|p| {
                    p.bias
                        .clone()
                        .unwrap_or_else(|| Tensor::zeros([p.out_features()], &p.weight.device()))
                })
                .collect();
            Tensor::cat(biases, 0)
        });
        let out_major = parts[0].out_major;
        let axis = usize::from(!out_major);
        let packed: Option<Vec<PackedRows>> = parts
            .iter()
            .map(|p| p.packed.as_deref().map(<[PackedRows]>::to_vec))
            .collect::<Option<Vec<_>>>()
            .map(|parts| parts.concat());
        let weight = Tensor::cat(parts.into_iter().map(|p| p.weight).collect(), axis);
        let mut linear = Self::from_stored(weight, out_major, bias);
        linear.packed = packed.map(Arc::from);
        linear
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[usize::from(self.out_major)]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[usize::from(!self.out_major)]
    }

    /// The `[in, out]` weight (a transposed view of the stored `[out, in]` on flex).
    pub fn weight(&self) -> Tensor<2> {
        let w = self.weight.clone();
        if self.out_major { w.transpose() } else { w }
    }

    /// The `[out]` bias, if any.
    pub fn bias(&self) -> Option<&Tensor<1>> {
        self.bias.as_ref()
    }

    /// Applies the map to the last axis of `x` (`[..., in]` → `[..., out]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let k = self.in_features();
        let x = x.reshape([rows, k]);
        let y = if let Some(packed) = &self.packed
            && rows <= crate::cpu::packed::MAX_ROWS
            && crate::cpu::flex_f32(&x)
        {
            crate::cpu::packed::linear(x, packed, self.bias.as_ref())
        } else if self.out_major && crate::cpu::flex_f32(&x) {
            crate::cpu::linear(x, &self.weight, self.bias.as_ref())
        } else {
            let y = x.matmul(self.weight());
            match &self.bias {
                Some(b) => y + b.clone().unsqueeze::<2>(),
                None => y,
            }
        };
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }
}

/// A token-embedding table.
///
/// Stored as `[vocab, width]` (its own checkpoint tensor, or a tied language-model head stored
/// `[out, in]`) or as the `[width, vocab]` weight of a tied head stored `[in, out]`, so tied
/// models keep one copy of the matrix.
#[derive(Debug, Clone)]
pub struct Embedding {
    table: Tensor<2>,
    /// `table` is `[width, vocab]` (shared with a tied head).
    transposed: bool,
}

impl Embedding {
    /// Loads `name` of shape `[vocab, width]`.
    pub fn load(
        loader: &mut WeightLoader<'_>,
        name: &str,
        vocab: usize,
        width: usize,
    ) -> Result<Self> {
        Ok(Self {
            table: loader.tensor(name, [vocab, width])?,
            transposed: false,
        })
    }

    /// The embedding that shares the weight of a tied head (no copy). Load the
    /// head with [`Linear::load`] from the embedding tensor's name: an `[vocab, width]`
    /// embedding matrix is exactly an `nn.Linear` from `width` to `vocab`.
    pub fn tied_to(head: &Linear) -> Self {
        Self {
            table: head.weight.clone(),
            transposed: !head.out_major,
        }
    }

    /// Vocabulary size.
    pub fn vocab_size(&self) -> usize {
        self.table.dims()[usize::from(self.transposed)]
    }

    /// Embeds a batch (`[batch, max_len, width]`) after checking every id against the
    /// vocabulary; errors name `model`. Padding slots are looked up as id 0 whatever the batch's
    /// pad id, since their outputs are never meaningful.
    pub fn forward_batch(&self, batch: &TokenBatch, model: &str) -> Result<Tensor<3>> {
        let vocab = self.vocab_size();
        for (row, ids) in batch.rows().iter().enumerate() {
            if let Some((pos, id)) = ids
                .iter()
                .enumerate()
                .find(|(_, id)| **id as usize >= vocab)
            {
                return Err(Error::InvalidRequest(format!(
                    "token id {id} at position {pos} of sequence {row} is outside the vocabulary \
                     of `{model}` ({vocab} ids)"
                )));
            }
        }
        let device = self.table.device();
        let mut ids = batch.ids_tensor(&device);
        if batch.is_padded() {
            let pads: Vec<bool> = batch
                .real_mask()
                .into_iter()
                .flatten()
                .map(|real| !real)
                .collect();
            let pads = Tensor::<2, Bool>::from_data(TensorData::new(pads, ids.dims()), &device);
            ids = ids.mask_fill(pads, 0);
        }
        Ok(self.forward(ids))
    }

    /// Looks up `[batch, tokens]` ids (all `< vocab_size`) → `[batch, tokens, width]`.
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, t] = ids.dims();
        let flat = ids.reshape([b * t]);
        let rows = if self.transposed {
            self.table.clone().select(1, flat).transpose()
        } else {
            self.table.clone().select(0, flat)
        };
        let width = rows.dims()[1];
        rows.reshape([b, t, width])
    }
}

/// A contiguous copy of `t` (used once at load time, so that per-call matmuls read a plain
/// row-major matrix on every backend).
fn contiguous(t: Tensor<2>) -> Tensor<2> {
    let device = t.device();
    Tensor::from_data(t.into_data(), &device)
}

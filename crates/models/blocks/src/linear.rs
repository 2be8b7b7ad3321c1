//! Affine maps and token embeddings.

use burn::tensor::{Bool, Int, Tensor, TensorData};
use strata_core::{Error, Result, TokenBatch};

use crate::loader::WeightLoader;

/// `y = x·W + b` with `W` stored `[in, out]` (contiguous), so the forward is one plain matmul.
///
/// HF `nn.Linear` checkpoints store `[out, in]` ([`Linear::load`] transposes once at load time);
/// GPT-2's `Conv1D` already stores `[in, out]` ([`Linear::load_conv1d`]).
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
}

impl Linear {
    /// A linear map from a `[in, out]` weight and an optional `[out]` bias.
    pub fn new(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        if let Some(b) = &bias {
            assert_eq!(
                b.dims()[0],
                weight.dims()[1],
                "Linear: bias length must equal the output width"
            );
        }
        Self { weight, bias }
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
        let w = loader.tensor(&format!("{prefix}.weight"), [out_features, in_features])?;
        let bias = Self::load_bias(loader, prefix, out_features, bias)?;
        Ok(Self::new(contiguous(w.transpose()), bias))
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
        let weight = Tensor::cat(parts.into_iter().map(|p| p.weight).collect(), 1);
        Self::new(weight, bias)
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims()[1]
    }

    /// The `[in, out]` weight.
    pub fn weight(&self) -> &Tensor<2> {
        &self.weight
    }

    /// The `[out]` bias, if any.
    pub fn bias(&self) -> Option<&Tensor<1>> {
        self.bias.as_ref()
    }

    /// Applies the map to the last axis of `x` (`[..., in]` → `[..., out]`).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let dims = x.dims();
        let rows: usize = dims[..D - 1].iter().product();
        let y = x
            .reshape([rows, self.in_features()])
            .matmul(self.weight.clone());
        let y = match &self.bias {
            Some(b) => y + b.clone().unsqueeze::<2>(),
            None => y,
        };
        let mut out = dims;
        out[D - 1] = self.out_features();
        y.reshape(out)
    }
}

/// A token-embedding table.
///
/// Stored either as `[vocab, width]` (its own checkpoint tensor) or as the `[width, vocab]`
/// weight of a tied language-model head, so tied models keep one copy of the matrix.
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

    /// The embedding that shares the weight of a tied head (`[width, vocab]`, no copy). Load the
    /// head with [`Linear::load`] from the embedding tensor's name: an `[vocab, width]`
    /// embedding matrix is exactly an `nn.Linear` from `width` to `vocab`.
    pub fn tied_to(head: &Linear) -> Self {
        Self {
            table: head.weight().clone(),
            transposed: true,
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

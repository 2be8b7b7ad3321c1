//! `strata-blocks`: the neural building blocks every Strata model crate is made of, written once.
//!
//! | block | what it covers |
//! | --- | --- |
//! | [`WeightLoader`] | loads HF-named tensors with shape checks and counts the parameters it loaded |
//! | [`Linear`], [`Embedding`] | `nn.Linear` (`[out, in]`), GPT-2 `Conv1D` (`[in, out]`), token embeddings, tied heads |
//! | [`RmsNorm`], [`LayerNorm`], [`Norm`] | HF's norms, computed in f32; Gemma's `(1 + w)` weights |
//! | [`RopeConfig`], [`Rope`], [`RopeTables`] | rotary embeddings in HF's `rotate_half` convention, partial rotary, `linear` and `llama3` scaling, both config forms |
//! | [`Attention`], [`AttentionLayout`], [`MaskSpec`] | multi-head attention with GQA/MQA, causal or bidirectional, sliding windows, key padding, attention-key interventions, pattern capture |
//! | [`KvCache`] | per-layer keys and values for batched, left-padded incremental decoding |
//! | [`GatedMlp`], [`Mlp`], [`ActFn`] | `down(act(gate(x)) · up(x))` and `proj(act(fc(x)))` |
//! | [`residual`] | a branch joining the residual stream |
//! | [`forward_in_row_groups`], [`on_the_pool`] | a full forward pass on flex as row groups side by side on the threads; a pass or decoding step run on a thread of the pool |
//! | [`recurrent`] | recurrent models (Mamba, RWKV): decoding-step rules, the real-token mask that keeps padding out of a state, host `f32` buffers for scans |
//!
//! Everything runs on whatever burn [`Device`](burn::tensor::Device) the weights were loaded on;
//! nothing is generic over a backend. On flex, products and elementwise passes run as fused CPU
//! kernels (`cpu`) that compute the same formulas as the generic path. Shapes follow one
//! convention: hidden states are `[batch, tokens, width]`, per-head tensors
//! `[batch, heads, tokens, head_dim]`.

mod attention;
mod cpu;
mod kv_cache;
mod layout;
mod linear;
mod loader;
mod mlp;
mod norm;
mod parts;
pub mod recurrent;
mod rope;

pub use attention::{Attention, AttentionConfig, AttentionContext};

use burn::tensor::Tensor;
use strata_core::{Recorder, Result, Site};

/// Implements [`strata_core::LanguageModel`] for a model type with fields `info: ModelInfo` and
/// `device: Device` and a method `run(&self, &TokenBatch, &CapturePlan, Option<&mut State>) ->
/// Result<Captures>` that serves both the full forward (`None`) and incremental decoding: `new`
/// builds the empty decoding state from the model. The full forward goes through
/// [`forward_in_row_groups`], so `run` must give each row the values it would give it alone;
/// a decoding step runs [`on_the_pool`].
#[macro_export]
macro_rules! language_model {
    ($model:ty, $state:ty, $new:expr) => {
        impl ::strata_core::LanguageModel for $model {
            fn info(&self) -> &::strata_core::ModelInfo {
                &self.info
            }

            fn device(&self) -> &::strata_core::burn::tensor::Device {
                &self.device
            }

            fn forward(
                &self,
                batch: &::strata_core::TokenBatch,
                plan: &::strata_core::CapturePlan,
            ) -> ::strata_core::Result<::strata_core::Captures> {
                $crate::forward_in_row_groups(&self.device, batch, plan, |rows| {
                    self.run(rows, plan, None)
                })
            }

            fn new_cache(&self) -> ::strata_core::DecodeCache {
                let new: fn(&Self) -> $state = $new;
                ::strata_core::DecodeCache::new(new(self))
            }

            fn forward_cached(
                &self,
                batch: &::strata_core::TokenBatch,
                plan: &::strata_core::CapturePlan,
                cache: &mut ::strata_core::DecodeCache,
            ) -> ::strata_core::Result<::strata_core::Captures> {
                let state = cache.state_for::<$state>(&self.info.name)?;
                $crate::on_the_pool(&self.device, || self.run(batch, plan, Some(state)))
            }
        }
    };
}

/// Whether `device` is burn's flex CPU backend, whose kernels the blocks choose their fastest
/// path for (weight layout in [`Linear`], fused attention in [`Attention`]).
pub(crate) fn on_flex(device: &burn::tensor::Device) -> bool {
    *device == burn::tensor::Device::flex()
}

/// `x + branch`: a block's branch joining the residual stream (on flex, one pass across the
/// threads, in place in the branch's buffer when nothing else holds it).
pub fn residual<const D: usize>(x: Tensor<D>, branch: Tensor<D>) -> Tensor<D> {
    if cpu::flex_f32(&x) && cpu::flex_f32(&branch) {
        cpu::add(x, branch)
    } else {
        x + branch
    }
}

/// `t` (`[batch, …]`) with every row repeated `n` times in order (row `i` becomes rows
/// `i·n … i·n + n − 1`): [`strata_core::DecodeState::repeat_rows`] for device tensors.
pub fn repeat_rows<const D: usize>(t: &Tensor<D>, n: usize) -> Tensor<D> {
    let rows = t.dims()[0];
    let parts = (0..rows)
        .flat_map(|i| std::iter::repeat_n(t.clone().narrow(0, i, 1), n))
        .collect();
    Tensor::cat(parts, 0)
}

/// A row-major host buffer of `rows` equal-sized rows with every row repeated `n` times in
/// order, as [`repeat_rows`] does for tensors.
pub fn repeat_host_rows<T: Clone>(values: &[T], rows: usize, n: usize) -> Vec<T> {
    if rows == 0 {
        return Vec::new();
    }
    let width = values.len() / rows;
    values
        .chunks(width.max(1))
        .flat_map(|row| std::iter::repeat_n(row, n).flatten().cloned())
        .collect()
}

/// The start of every attention model's forward: validates `plan` against the model, lays out
/// the batch (as the continuation of `cache` when decoding), checks the context length, and
/// returns the layout with the number of blocks to run — every block when decoding (a cache must
/// hold every layer), otherwise only up to the deepest block the plan needs.
pub fn begin_attention_forward(
    info: &strata_core::ModelInfo,
    plan: &strata_core::CapturePlan,
    batch: &strata_core::TokenBatch,
    cache: Option<&KvCache>,
) -> Result<(AttentionLayout, usize)> {
    plan.validate(info)?;
    let layout = match cache {
        Some(c) => c.begin(batch)?,
        None => AttentionLayout::for_batch(batch),
    };
    layout.check_context(info.context_length, &info.name)?;
    let n_blocks = match cache {
        Some(_) => info.n_layers,
        None => plan.blocks_needed(info.n_layers),
    };
    Ok((layout, n_blocks))
}

/// The end of every language model's forward: the final norm and the unembedding, each run only
/// when the plan asks for it (the final norm also when the logits are asked for), both reported
/// to the recorder.
pub fn final_norm_and_logits(
    rec: &mut Recorder<'_>,
    x: Tensor<3>,
    norm: impl FnOnce(Tensor<3>) -> Tensor<3>,
    head: impl FnOnce(Tensor<3>) -> Tensor<3>,
) -> Result<()> {
    let plan = rec.plan();
    let logits = plan.wants(Site::Logits);
    if plan.wants(Site::FinalNorm) || logits {
        let normed = rec.point(Site::FinalNorm, norm(x))?;
        if logits {
            rec.point(Site::Logits, head(normed))?;
        }
    }
    Ok(())
}
pub use kv_cache::{KvCache, LayerKv};
pub use layout::{AttentionLayout, MaskSpec};
pub use linear::{Embedding, Linear};
pub use loader::WeightLoader;
pub use mlp::{ActFn, GatedMlp, Mlp};
pub use norm::{LayerNorm, Norm, RmsNorm};
pub use parts::{forward_in_row_groups, on_the_pool};
pub use rope::{Rope, RopeConfig, RopeScaling, RopeTables};

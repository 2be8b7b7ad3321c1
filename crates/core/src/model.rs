//! The language-model trait every architecture implements.

use std::any::Any;

use burn::tensor::Device;
use serde::Serialize;

use crate::batch::TokenBatch;
use crate::capture::{CapturePlan, Captures};
use crate::error::Result;

/// The normalisation a model uses (analyses that build a fresh norm of the model's kind read it).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NormKind {
    /// `x / sqrt(mean(x²) + eps) · w`; `unit_offset` means Gemma's `(1 + w)` weights.
    RmsNorm { eps: f64, unit_offset: bool },
    /// `(x − mean) / sqrt(var + eps) · γ + β`.
    LayerNorm { eps: f64 },
}

/// Which entries HF's `output_hidden_states` holds for this family (see `ARCHITECTURE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HiddenStatesLayout {
    /// `[embed, resid_post.0, …, resid_post.{L-2}, final_norm]` (pre-norm decoders).
    EmbedThenBlocks,
    /// `[embed, resid_post.0, …, resid_post.{L-1}]` (BERT: post-LN blocks, no final norm).
    EmbedThenAllBlocks,
    /// `[resid_post.0, …, resid_post.{L-2}, final_norm]` (Mamba, RWKV: no embedding entry).
    BlocksOnly,
}

/// What a loaded model is.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    /// The user's name for it (the experiment's model id, or the file name).
    pub name: String,
    /// The registered architecture family (`llama`, `gpt2`, …).
    pub architecture: String,
    /// The checkpoint's own `model_type` (`qwen2`, `mistral`, …).
    pub model_type: String,
    pub n_layers: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    pub vocab_size: usize,
    /// Longest sequence the model supports (`max_position_embeddings`).
    pub context_length: usize,
    pub norm: NormKind,
    pub hidden_states: HiddenStatesLayout,
    /// Attention probabilities exist (false for Mamba, RWKV).
    pub has_attention: bool,
    /// Causal (decoder) rather than bidirectional (encoder).
    pub causal: bool,
    /// A language-model head exists (false for encoders).
    pub has_lm_head: bool,
    /// Number of parameters (tied matrices counted once).
    pub n_params: u64,
}

/// A model's own incremental-decoding state (KV cache, recurrent state).
pub trait DecodeState: Any + Send {
    /// The state with every sequence repeated `n` times, in order: row `i` becomes rows
    /// `i·n … i·n + n − 1`. This is how many continuations of one prompt share the prompt's
    /// forward pass.
    fn repeat_rows(&self, n: usize) -> Self
    where
        Self: Sized;
}

/// A state that cannot decode (encoders): nothing to repeat.
impl DecodeState for () {
    fn repeat_rows(&self, _n: usize) -> Self {}
}

/// [`DecodeState`] with its type erased, for [`DecodeCache`].
trait ErasedState: Send {
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
    fn repeat_rows(&self, n: usize) -> Box<dyn ErasedState>;
}

impl<T: DecodeState> ErasedState for T {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn repeat_rows(&self, n: usize) -> Box<dyn ErasedState> {
        Box::new(DecodeState::repeat_rows(self, n))
    }
}

/// Opaque incremental-decoding state; each model downcasts its own [`DecodeState`].
pub struct DecodeCache(Box<dyn ErasedState>);

impl DecodeCache {
    /// Wraps a model's own cache type.
    pub fn new<T: DecodeState>(state: T) -> Self {
        Self(Box::new(state))
    }

    /// The model's own cache type, if `T` is it.
    pub fn downcast_mut<T: Any>(&mut self) -> Option<&mut T> {
        self.0.as_any_mut().downcast_mut()
    }

    /// The model's own cache type, if `T` is it.
    pub fn downcast_ref<T: Any>(&self) -> Option<&T> {
        self.0.as_any().downcast_ref()
    }

    /// The model's own cache type, or the invalid-request error a model gives when handed a
    /// cache another model made (`model` names the one that was called).
    pub fn state_for<T: Any>(&mut self, model: &str) -> Result<&mut T> {
        self.downcast_mut().ok_or_else(|| {
            crate::Error::InvalidRequest(format!(
                "the decoding cache passed to `{model}` was not made by its `new_cache`"
            ))
        })
    }

    /// The cache with every sequence repeated `n` times ([`DecodeState::repeat_rows`]).
    pub fn repeat_rows(&self, n: usize) -> Self {
        Self(self.0.repeat_rows(n))
    }
}

impl std::fmt::Debug for DecodeCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DecodeCache")
    }
}

/// A loaded model: a forward pass with captures and interventions, and incremental decoding.
pub trait LanguageModel: Send + Sync {
    /// Metadata.
    fn info(&self) -> &ModelInfo;

    /// The device its weights live on.
    fn device(&self) -> &Device;

    /// A full forward pass over `batch`, keeping what `plan` asks for.
    fn forward(&self, batch: &TokenBatch, plan: &CapturePlan) -> Result<Captures>;

    /// An empty incremental-decoding state.
    fn new_cache(&self) -> DecodeCache;

    /// Runs `batch` as the continuation of what `cache` holds (the first call is the prompt,
    /// later calls the new tokens, one column per step), appending to the cache. Captures and
    /// positions refer to the new tokens; attention-key masks use absolute positions.
    fn forward_cached(
        &self,
        batch: &TokenBatch,
        plan: &CapturePlan,
        cache: &mut DecodeCache,
    ) -> Result<Captures>;
}

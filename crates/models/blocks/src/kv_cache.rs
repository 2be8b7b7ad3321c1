//! Keys and values of earlier tokens, for incremental decoding.

use burn::tensor::Tensor;
use strata_core::{Error, PadSide, Result, TokenBatch};

use crate::layout::AttentionLayout;

/// One layer's cached keys and values, `[batch, kv_heads, slots, head_dim]` (keys after RoPE).
#[derive(Debug, Clone, Default)]
pub struct LayerKv {
    kv: Option<(Tensor<4>, Tensor<4>)>,
}

impl LayerKv {
    /// Number of cached slots.
    pub fn len(&self) -> usize {
        self.kv.as_ref().map_or(0, |(k, _)| k.dims()[2])
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.kv.is_none()
    }

    /// Appends this step's keys and values along the slot axis and returns everything cached.
    ///
    /// Cost: a concatenation copies the whole cache, so a step costs O(cached slots) memory
    /// traffic per layer (O(T²) over a generation of T tokens). That is negligible next to the
    /// attention itself, which reads every cached slot anyway.
    pub fn append(&mut self, k: Tensor<4>, v: Tensor<4>) -> (Tensor<4>, Tensor<4>) {
        let (k, v) = match self.kv.take() {
            None => (k, v),
            Some((k0, v0)) => (Tensor::cat(vec![k0, k], 2), Tensor::cat(vec![v0, v], 2)),
        };
        self.kv = Some((k.clone(), v.clone()));
        (k, v)
    }
}

impl LayerKv {
    fn repeat_rows(&self, n: usize) -> Self {
        Self {
            kv: self
                .kv
                .as_ref()
                .map(|(k, v)| (crate::repeat_rows(k, n), crate::repeat_rows(v, n))),
        }
    }
}

/// The decoding state of an attention model: per-layer [`LayerKv`] plus, per row, the left
/// padding of the prompt and the next position id, so a left-padded batch of prompts of
/// different lengths decodes in lockstep (one new column per step). Models wrap it in
/// [`strata_core::DecodeCache`].
///
/// A step is `begin` (validates the new tokens, gives their [`AttentionLayout`]), one
/// [`LayerKv::append`] per layer, then `commit`.
#[derive(Debug, Clone)]
pub struct KvCache {
    layers: Vec<LayerKv>,
    key_pad: Vec<usize>,
    next_position: Vec<usize>,
    len: usize,
}

impl strata_core::DecodeState for KvCache {
    fn repeat_rows(&self, n: usize) -> Self {
        let rows = self.key_pad.len();
        Self {
            layers: self.layers.iter().map(|l| l.repeat_rows(n)).collect(),
            key_pad: crate::repeat_host_rows(&self.key_pad, rows, n),
            next_position: crate::repeat_host_rows(&self.next_position, rows, n),
            len: self.len,
        }
    }
}

impl KvCache {
    /// An empty cache for a model with `n_layers` attention layers.
    pub fn new(n_layers: usize) -> Self {
        Self {
            layers: vec![LayerKv::default(); n_layers],
            key_pad: Vec::new(),
            next_position: Vec::new(),
            len: 0,
        }
    }

    /// Number of cached slots (padding included).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True before the prompt was run.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Leading padding slots of each row (the prompt's left padding).
    pub fn key_pad(&self) -> &[usize] {
        &self.key_pad
    }

    /// The position id the next token of each row gets (its number of real tokens so far).
    pub fn next_positions(&self) -> &[usize] {
        &self.next_position
    }

    /// The layout of `batch` as the continuation of what is cached. The first call (the prompt)
    /// may be left-padded; later calls add the same number of tokens to every row, unpadded.
    pub fn begin(&self, batch: &TokenBatch) -> Result<AttentionLayout> {
        if let Some(l) = self.layers.iter().position(|l| l.len() != self.len) {
            return Err(Error::InvalidRequest(format!(
                "the decoding cache is inconsistent (layer {l} holds {} slots, expected {}): a \
                 previous step failed part-way; start a new cache",
                self.layers[l].len(),
                self.len
            )));
        }
        let q = batch.max_len();
        if self.is_empty() {
            if batch.is_padded() && batch.pad_side() == PadSide::Right {
                return Err(Error::InvalidRequest(
                    "incremental decoding needs a left-padded prompt batch (PadSide::Left) when \
                     rows differ in length"
                        .into(),
                ));
            }
            let key_pad = batch.lengths().iter().map(|len| q - len).collect();
            let key_end = vec![q; batch.batch_size()];
            return Ok(AttentionLayout::new(
                key_pad,
                key_end,
                q,
                q,
                batch.position_ids(0),
            ));
        }
        if batch.batch_size() != self.key_pad.len() {
            return Err(Error::InvalidRequest(format!(
                "the decoding cache holds {} sequences, but the step has {}",
                self.key_pad.len(),
                batch.batch_size()
            )));
        }
        if batch.is_padded() {
            return Err(Error::InvalidRequest(
                "after the prompt, every decoding step must add the same number of tokens to \
                 every sequence (no padding)"
                    .into(),
            ));
        }
        let n_key = self.len + q;
        let positions = self
            .next_position
            .iter()
            .map(|&p| (p..p + q).collect())
            .collect();
        Ok(AttentionLayout::new(
            self.key_pad.clone(),
            vec![n_key; self.key_pad.len()],
            q,
            n_key,
            positions,
        ))
    }

    /// The cache of layer `l`.
    pub fn layer_mut(&mut self, l: usize) -> &mut LayerKv {
        &mut self.layers[l]
    }

    /// Records that the step of `layout` (from [`KvCache::begin`]) completed on every layer.
    pub fn commit(&mut self, layout: &AttentionLayout) {
        let q = layout.n_query();
        if self.is_empty() {
            // The prompt: each row holds its real tokens after its padding.
            self.key_pad = layout.key_pad().to_vec();
            self.next_position = self.key_pad.iter().map(|pad| q - pad).collect();
        } else {
            self.next_position.iter_mut().for_each(|p| *p += q);
        }
        self.len = layout.n_key();
    }
}

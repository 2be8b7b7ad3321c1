//! Tokenizers: `tokenizer.json` files (HF `tokenizers`, pure Rust).

use std::path::Path;

use crate::error::{Error, Result};

/// A tokenizer with the special-token facts generation needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    eos_ids: Vec<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("eos_ids", &self.eos_ids)
            .finish()
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`. Fixed padding and truncation some files carry are switched off:
    /// Strata pads batches itself and never truncates silently.
    pub fn from_file(path: &Path) -> Result<Self> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("cannot read tokenizer: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::model(path, format!("cannot disable truncation: {e}")))?;
        Ok(Self {
            inner,
            eos_ids: Vec::new(),
        })
    }

    /// Wraps a tokenizer built elsewhere (e.g. from GGUF metadata).
    pub fn from_inner(inner: tokenizers::Tokenizer) -> Self {
        Self {
            inner,
            eos_ids: Vec::new(),
        }
    }

    /// Sets the end-of-sequence ids (from the model config).
    pub fn with_eos_ids(mut self, eos_ids: Vec<u32>) -> Self {
        self.eos_ids = eos_ids;
        self
    }

    /// End-of-sequence ids.
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos_ids
    }

    /// Encodes `text`, adding the tokenizer's default special tokens (BOS, CLS/SEP, …) when
    /// `add_special` is set.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.inner
            .encode(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::Tokenizer(format!("encoding {text:?}: {e}")))
    }

    /// Decodes ids to text (special tokens kept, so the text round-trips).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("decoding {ids:?}: {e}")))
    }

    /// The text of one token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Vocabulary size, special tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The wrapped `tokenizers` tokenizer.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

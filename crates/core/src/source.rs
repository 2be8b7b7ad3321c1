//! Resolving a model source (a Hugging Face folder today; GGUF files and hub ids build on it) to
//! the files an architecture loads from.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use crate::weights::{SafetensorsWeights, WeightSource};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face folder (`config.json`, safetensors, `tokenizer.json`) or a model file.
    Path(PathBuf),
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Everything an architecture needs to build a model: an HF-format config, weights by HF name,
/// and the tokenizer when there is one.
pub struct ModelFiles {
    /// The folder or file the user named.
    pub root: PathBuf,
    /// Where the config came from (for error messages).
    pub config_path: PathBuf,
    /// The config in Hugging Face's `config.json` form.
    pub config: serde_json::Value,
    /// The weights.
    pub weights: Box<dyn WeightSource>,
    /// The tokenizer, when the source has one.
    pub tokenizer: Option<Tokenizer>,
    /// Every file read (hashed into the run manifest).
    pub files: Vec<PathBuf>,
}

impl ModelFiles {
    /// Opens a model source.
    pub fn open(source: &ModelSource) -> Result<Self> {
        match source {
            ModelSource::Path(path) => Self::open_path(path),
        }
    }

    fn open_path(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(
                path,
                "no such file or folder (expected a Hugging Face model folder with config.json)",
            ));
        }
        if path.is_file() {
            return Err(Error::Unsupported(format!(
                "{}: single-file models are not supported by this build; give a Hugging Face \
                 folder (config.json + model.safetensors + tokenizer.json)",
                path.display()
            )));
        }
        let config_path = path.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::model(&config_path, format!("invalid JSON at line {}, column {}: {e}", e.line(), e.column()))
        })?;
        let single = path.join("model.safetensors");
        let index = path.join("model.safetensors.index.json");
        let weights = if single.exists() {
            SafetensorsWeights::open(&single)?
        } else if index.exists() {
            SafetensorsWeights::open_sharded(&index)?
        } else {
            return Err(Error::model(
                path,
                "no weights: expected model.safetensors or model.safetensors.index.json",
            ));
        };
        let tok_path = path.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(Tokenizer::from_file(&tok_path)?.with_eos_ids(eos_ids(&config)))
        } else {
            None
        };
        let mut files = vec![config_path.clone()];
        files.extend(weights.files());
        if tokenizer.is_some() {
            files.push(tok_path);
        }
        Ok(Self {
            root: path.to_path_buf(),
            config_path,
            config,
            weights: Box::new(weights),
            tokenizer,
            files,
        })
    }

    /// The config's `model_type`.
    pub fn model_type(&self) -> Result<&str> {
        self.config
            .get("model_type")
            .and_then(|v| v.as_str())
            .ok_or_else(|| Error::model(&self.config_path, "field `model_type`: expected a string"))
    }

    /// Deserialises the config into an architecture's typed config struct.
    pub fn config<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_value(self.config.clone())
            .map_err(|e| Error::model(&self.config_path, format!("config: {e}")))
    }
}

/// `eos_token_id` of an HF config: a number or a list.
fn eos_ids(config: &serde_json::Value) -> Vec<u32> {
    match config.get("eos_token_id") {
        Some(serde_json::Value::Number(n)) => n.as_u64().map(|v| vec![v as u32]).unwrap_or_default(),
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| v.as_u64()).map(|v| v as u32).collect(),
        _ => Vec::new(),
    }
}

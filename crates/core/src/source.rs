//! Resolving a model source — a Hugging Face folder, a GGUF file, or a hub id found in the local
//! Hugging Face cache — to the files an architecture loads from.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufWeights, build_tokenizer};
use crate::hub::{self, HubId};
use crate::registry;
use crate::tokenizer::Tokenizer;
use crate::weights::{SafetensorsWeights, WeightSource};

/// Where a model comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// A Hugging Face folder (`config.json`, safetensors, `tokenizer.json`) or a `.gguf` file.
    Path(PathBuf),
    /// A hub id, `org/name[@revision][/file]`, resolved offline from the Hugging Face cache
    /// (see [`crate::hub`]).
    Hub(String),
}

impl ModelSource {
    /// What a user typed: an existing file or folder is a path; otherwise something shaped like
    /// `org/name` is a hub id; anything else is a path (whose absence the loader reports).
    pub fn parse(s: &str) -> Self {
        let path = Path::new(s);
        if !path.exists() && HubId::parse(s).is_some() {
            ModelSource::Hub(s.to_string())
        } else {
            ModelSource::Path(path.to_path_buf())
        }
    }

    /// The local file or folder this source stands for (a hub id is looked up in the cache).
    pub fn resolve(&self) -> Result<PathBuf> {
        match self {
            ModelSource::Path(p) => Ok(p.clone()),
            ModelSource::Hub(id) => {
                let parsed = HubId::parse(id).ok_or_else(|| {
                    Error::InvalidRequest(format!(
                        "`{id}` is not a hub id (expected `org/name`, optionally `@revision` and `/file`)"
                    ))
                })?;
                hub::resolve(&parsed)
            }
        }
    }
}

impl std::fmt::Display for ModelSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ModelSource::Path(p) => write!(f, "{}", p.display()),
            ModelSource::Hub(id) => write!(f, "{id} (Hugging Face cache)"),
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
    /// End-of-sequence ids from the config (`eos_token_id`: a number or a list).
    pub eos_ids: Vec<u32>,
    /// Every file read (hashed into the run manifest).
    pub files: Vec<PathBuf>,
}

impl ModelFiles {
    /// Opens a model source.
    pub fn open(source: &ModelSource) -> Result<Self> {
        Self::open_path(&source.resolve()?)
    }

    fn open_path(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(
                path,
                "no such file or folder (expected a Hugging Face model folder with config.json, or a .gguf file)",
            ));
        }
        if path.is_file() {
            if GgufFile::is_gguf_path(path) {
                return Self::open_gguf(path);
            }
            return Err(Error::Unsupported(format!(
                "{}: single-file models must be GGUF files (.gguf); otherwise give a Hugging Face \
                 folder (config.json + model.safetensors + tokenizer.json)",
                path.display()
            )));
        }
        let config_path = path.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::model(
                &config_path,
                format!(
                    "invalid JSON at line {}, column {}: {e}",
                    e.line(),
                    e.column()
                ),
            )
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
        let eos_ids = eos_ids(&config);
        let tok_path = path.join("tokenizer.json");
        let tokenizer = if tok_path.exists() {
            Some(Tokenizer::from_file(&tok_path)?.with_eos_ids(eos_ids.clone()))
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
            eos_ids,
            files,
        })
    }

    /// Opens a GGUF file: its `general.architecture` picks the registered architecture, whose
    /// translation gives the HF config and tensor names; the tokenizer is rebuilt from the
    /// metadata.
    fn open_gguf(path: &Path) -> Result<Self> {
        let file = GgufFile::open(path)?;
        let arch = file.architecture()?;
        let from_gguf = registry::find_gguf_translation(arch)
            .map_err(|e| Error::model(path, format!("metadata `general.architecture`: {e}")))?;
        let translation = from_gguf(&file)?;
        let mut config = translation.config;
        // Token ids are the tokenizer's facts, not the architecture's: fill them in when the
        // translation left them out.
        if let Some(obj) = config.as_object_mut() {
            for (key, meta) in [
                ("bos_token_id", "tokenizer.ggml.bos_token_id"),
                ("eos_token_id", "tokenizer.ggml.eos_token_id"),
                ("pad_token_id", "tokenizer.ggml.padding_token_id"),
            ] {
                if let (false, Some(id)) = (obj.contains_key(key), file.opt_usize(meta)?) {
                    obj.insert(key.into(), id.into());
                }
            }
        }
        let eos_ids = eos_ids(&config);
        let tokenizer = build_tokenizer(&file)?.map(|t| t.with_eos_ids(eos_ids.clone()));
        let weights = GgufWeights::new(file, translation.tensors)?;
        Ok(Self {
            root: path.to_path_buf(),
            config_path: path.to_path_buf(),
            config,
            weights: Box::new(weights),
            tokenizer,
            eos_ids,
            files: vec![path.to_path_buf()],
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
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|v| vec![v as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_u64())
            .map(|v| v as u32)
            .collect(),
        _ => Vec::new(),
    }
}

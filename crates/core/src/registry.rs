//! The plugin registry. Architectures and analyses register themselves with `inventory`; the
//! `strata-plugins` facade links every built-in plugin so the lists are complete.

use std::path::PathBuf;

use burn::tensor::Device;

use crate::analysis::{Analysis, ParamDoc, ParamsInput};
use crate::error::{Error, Result};
use crate::gguf::{GgufFile, GgufTranslation};
use crate::model::LanguageModel;
use crate::source::{ModelFiles, ModelSource};
use crate::tokenizer::Tokenizer;

/// An architecture family.
pub struct ArchitectureRegistration {
    /// Registry id (`llama`).
    pub id: &'static str,
    /// One line for `strata list`.
    pub description: &'static str,
    /// The HF `model_type`s it loads.
    pub model_types: &'static [&'static str],
    /// The GGUF `general.architecture`s it loads (empty: none).
    pub gguf_architectures: &'static [&'static str],
    /// Reads a GGUF file of one of `gguf_architectures` into an HF config and tensor names;
    /// `load` then builds the model from them as from an HF checkpoint.
    pub from_gguf: Option<fn(&GgufFile) -> Result<GgufTranslation>>,
    /// Builds the model on `device`; `name` is the user's name for it.
    pub load: fn(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>>,
}

/// An analysis.
pub struct AnalysisRegistration {
    /// Registry id, the `kind` in experiment files (`next-token-law`).
    pub id: &'static str,
    /// One line for `strata list`.
    pub description: &'static str,
    /// Its parameters, for `strata list`.
    pub parameters: &'static [ParamDoc],
    /// Validates parameters and builds the analysis.
    pub build: fn(ParamsInput<'_>) -> Result<Box<dyn Analysis>>,
}

inventory::collect!(ArchitectureRegistration);
inventory::collect!(AnalysisRegistration);

/// Every registered architecture, sorted by id.
pub fn architectures() -> Vec<&'static ArchitectureRegistration> {
    let mut v: Vec<_> = inventory::iter::<ArchitectureRegistration>
        .into_iter()
        .collect();
    v.sort_by_key(|r| r.id);
    v
}

/// Every registered analysis, sorted by id.
pub fn analyses() -> Vec<&'static AnalysisRegistration> {
    let mut v: Vec<_> = inventory::iter::<AnalysisRegistration>
        .into_iter()
        .collect();
    v.sort_by_key(|r| r.id);
    v
}

/// The analysis registered as `id`, or an error listing the known ones.
pub fn find_analysis(id: &str) -> Result<&'static AnalysisRegistration> {
    analyses().into_iter().find(|r| r.id == id).ok_or_else(|| {
        let known: Vec<_> = analyses().iter().map(|r| r.id).collect();
        Error::Unsupported(format!(
            "unknown analysis `{id}`: registered analyses are {}",
            known.join(", ")
        ))
    })
}

/// The architecture that loads `model_type`, or an error listing the supported ones.
pub fn find_architecture(model_type: &str) -> Result<&'static ArchitectureRegistration> {
    let all = architectures();
    all.iter()
        .find(|r| r.model_types.contains(&model_type))
        .copied()
        .ok_or_else(|| {
            let mut known: Vec<_> = all
                .iter()
                .flat_map(|r| r.model_types.iter().copied())
                .collect();
            known.sort_unstable();
            Error::Unsupported(format!(
                "unsupported architecture `{model_type}`: supported model types are {}",
                known.join(", ")
            ))
        })
}

/// The GGUF translation of the architecture that loads files of `general.architecture = arch`,
/// or an error listing the supported GGUF architectures.
pub fn find_gguf_translation(arch: &str) -> Result<fn(&GgufFile) -> Result<GgufTranslation>> {
    let all = architectures();
    let translations = || {
        all.iter()
            .filter_map(|r| r.from_gguf.map(|f| (r.gguf_architectures, f)))
    };
    if let Some((_, from_gguf)) = translations().find(|(archs, _)| archs.contains(&arch)) {
        return Ok(from_gguf);
    }
    let mut known: Vec<&str> = translations()
        .flat_map(|(archs, _)| archs.iter().copied())
        .collect();
    known.sort_unstable();
    Err(Error::Unsupported(format!(
        "unsupported GGUF architecture `{arch}`: supported GGUF architectures are {}",
        if known.is_empty() {
            "none in this build".to_string()
        } else {
            known.join(", ")
        }
    )))
}

/// A model ready for analyses: the network, its tokenizer and where it came from.
pub struct LoadedModel {
    /// The user's name for it.
    pub id: String,
    pub model: Box<dyn LanguageModel>,
    pub tokenizer: Option<Tokenizer>,
    /// Source as given.
    pub source: ModelSource,
    /// End-of-sequence ids from the model's config.
    pub eos_ids: Vec<u32>,
    /// Files read while loading (config, weights, tokenizer).
    pub files: Vec<PathBuf>,
}

impl LoadedModel {
    /// Replaces the tokenizer with the `tokenizer.json` at `path` (for checkpoints that ship
    /// none, or to compare tokenizers); the file joins [`LoadedModel::files`].
    pub fn set_tokenizer(&mut self, path: &std::path::Path) -> Result<()> {
        self.tokenizer = Some(Tokenizer::from_file(path)?.with_eos_ids(self.eos_ids.clone()));
        self.files.push(path.to_path_buf());
        Ok(())
    }

    /// The tokenizer, or an error saying the model folder has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "model `{}` ({}) has no tokenizer (expected tokenizer.json beside config.json)",
                self.id, self.source
            ))
        })
    }
}

/// Opens `source`, picks its architecture from the registry and loads it onto `device`.
pub fn load_model(id: &str, source: &ModelSource, device: &Device) -> Result<LoadedModel> {
    load_model_files(id, source, ModelFiles::open(source)?, device)
}

/// Loads a model from `source`'s already opened `files` (when the caller needed the file list
/// first, e.g. to hash it).
pub fn load_model_files(
    id: &str,
    source: &ModelSource,
    files: ModelFiles,
    device: &Device,
) -> Result<LoadedModel> {
    let model_type = files.model_type()?;
    let arch = find_architecture(model_type).map_err(|e| match e {
        Error::Unsupported(msg) => {
            Error::model(&files.config_path, format!("field `model_type`: {msg}"))
        }
        other => other,
    })?;
    let model = (arch.load)(&files, id, device)?;
    Ok(LoadedModel {
        id: id.to_string(),
        model,
        tokenizer: files.tokenizer.clone(),
        source: source.clone(),
        eos_ids: files.eos_ids.clone(),
        files: files.files.clone(),
    })
}

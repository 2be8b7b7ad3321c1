//! The analysis plugin interface.

use std::path::PathBuf;

use burn::tensor::Device;
use rand_chacha::ChaCha8Rng;
use serde::de::{DeserializeOwned, IntoDeserializer};
use toml::Spanned;
use toml::de::DeTable;

use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::registry::LoadedModel;
use crate::report::Report;

/// An analysis, built from its validated parameters.
pub trait Analysis: Send {
    /// Runs the analysis.
    fn run(&self, ctx: &mut Context<'_>) -> Result<Report>;
}

/// What an analysis gets to work with.
pub struct Context<'a> {
    /// The models the experiment's `models = [...]` names, in that order.
    pub models: Vec<&'a LoadedModel>,
    /// The data set the experiment's `data = "..."` names.
    pub data: Option<&'a Dataset>,
    /// The device every model lives on.
    pub device: &'a Device,
    /// Seeded from the run seed and the analysis' position: reproducible run to run.
    pub rng: ChaCha8Rng,
    /// Progress reporting (bars in the CLI, nothing in tests).
    pub progress: &'a dyn Progress,
    /// A directory private to this analysis for caches and intermediate files.
    pub scratch: PathBuf,
}

impl Context<'_> {
    /// The data set, or an error saying the analysis needs one.
    pub fn require_data(&self, analysis: &str) -> Result<&Dataset> {
        self.data
            .ok_or_else(|| Error::analysis(analysis, "needs a data set: add `data = \"<id>\"`"))
    }

    /// The models, or an error saying the analysis needs at least one.
    pub fn require_models(&self, analysis: &str) -> Result<&[&LoadedModel]> {
        if self.models.is_empty() {
            return Err(Error::analysis(
                analysis,
                "needs at least one model: add `models = [\"<id>\"]`",
            ));
        }
        Ok(&self.models)
    }
}

/// Documentation of one analysis parameter (printed by `strata list`).
#[derive(Debug, Clone, Copy)]
pub struct ParamDoc {
    pub name: &'static str,
    pub ty: &'static str,
    pub default: &'static str,
    pub doc: &'static str,
}

/// An analysis' parameter table from an experiment file (or a string), keeping the positions of
/// every value so errors point at `file:line:col`.
pub struct ParamsInput<'a> {
    table: Spanned<DeTable<'a>>,
    file: String,
    source: &'a str,
}

impl<'a> ParamsInput<'a> {
    /// A parameter table that lives inside `source` (the whole experiment file at `file`).
    pub fn new(table: Spanned<DeTable<'a>>, file: impl Into<String>, source: &'a str) -> Self {
        Self {
            table,
            file: file.into(),
            source,
        }
    }

    /// Parses a stand-alone TOML snippet (tests, programmatic use).
    pub fn from_str(source: &'a str) -> Result<Self> {
        let table = DeTable::parse(source).map_err(|e| toml_error("<params>", source, &e))?;
        Ok(Self::new(table, "<params>", source))
    }

    /// Deserialises the parameters. Unknown keys and wrong types are errors with a location.
    pub fn parse<T: DeserializeOwned>(self) -> Result<T> {
        let Self {
            table,
            file,
            source,
        } = self;
        T::deserialize(table.into_deserializer()).map_err(|e| toml_error(&file, source, &e))
    }
}

/// Converts a TOML error to an [`Error::Experiment`] with `file:line:col`.
pub fn toml_error(file: &str, source: &str, e: &toml::de::Error) -> Error {
    let (line, col) = e
        .span()
        .map(|s| line_col(source, s.start))
        .unwrap_or((1, 1));
    Error::Experiment {
        location: format!("{file}:{line}:{col}"),
        message: e.message().trim().to_string(),
        hint: None,
    }
}

/// 1-based line and column (in characters) of byte `offset` in `source`.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

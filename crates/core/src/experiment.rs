//! The experiment file: TOML naming the run, models, data sets and analyses, checked as a whole
//! into an [`Experiment`] before anything heavy happens.
//!
//! ```toml
//! [run]
//! name = "ntl-smollm2"      # required; letters, digits, `-`, `_`, `.`
//! backend = "flex"          # flex | ndarray | wgpu (default flex)
//! seed = 0                  # default 0
//! out = "runs"              # default "runs"; results go to <out>/<name>/
//!
//! [[model]]
//! id = "smollm2"
//! source = "models/smollm2"  # a Hugging Face folder or a .gguf file, or instead:
//! # hub = "org/name"         # a model in the local Hugging Face cache (offline)
//! tokenizer = "tok.json"     # optional: a tokenizer.json replacing the source's own
//!
//! [[data]]
//! id = "wiki"
//! kind = "text"              # text | icl-classification | qa | multiple-choice
//! path = "data/wiki.jsonl"
//! field = "text"             # default "text"
//! max_tokens = 256           # optional, per text
//! limit_tokens = 20000       # optional, in total
//!
//! [[analysis]]
//! kind = "next-token-law"    # a registered analysis
//! models = ["smollm2"]       # default []
//! data = "wiki"              # optional
//! # every other key is the analysis' own parameter
//! ```
//!
//! Relative paths (`out`, `source`, `path`) are relative to the experiment file's folder. Every
//! error is an [`Error::Experiment`] at `file:line:col` with a hint where one helps.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{IgnoredAny, IntoDeserializer};
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::analysis::{Analysis, ParamsInput, located_error, suggestion_hint, toml_error};
use crate::backend::Backend;
use crate::data::{DataKind, Dataset};
use crate::error::{Error, Result};
use crate::manifest::sha256_hex;
use crate::output::is_file_name_safe;
use crate::registry;
use crate::source::{ModelFiles, ModelSource};

/// A validated experiment: every reference resolved, every file present, every analysis built.
#[derive(Debug)]
pub struct Experiment {
    /// The experiment file, as given.
    pub path: PathBuf,
    /// Its text, verbatim.
    pub text: String,
    /// SHA-256 of `text` (lower-case hex).
    pub sha256: String,
    pub run: RunSettings,
    pub models: Vec<ModelSpec>,
    pub data: Vec<DataSpec>,
    pub analyses: Vec<AnalysisSpec>,
}

/// The `[run]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    /// File-name safe; results go to `<out_dir>/<name>/`.
    pub name: String,
    pub backend: Backend,
    pub seed: u64,
    /// `out`, resolved against the experiment file's folder.
    pub out_dir: PathBuf,
}

/// A `[[model]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The name analyses and reports use.
    pub id: String,
    /// `source` resolved against the experiment file's folder, or `hub`.
    pub source: ModelSource,
    /// A `tokenizer.json` replacing the source's own (for checkpoints that ship none).
    pub tokenizer: Option<PathBuf>,
}

/// A `[[data]]` table.
#[derive(Debug, Clone, PartialEq)]
pub struct DataSpec {
    pub id: String,
    pub kind: DataKind,
    /// Resolved against the experiment file's folder.
    pub path: PathBuf,
    /// The field holding the text or input (default `text`).
    pub field: String,
    /// Per-text token cap.
    pub max_tokens: Option<usize>,
    /// Total token budget.
    pub limit_tokens: Option<usize>,
}

/// An `[[analysis]]` table, built.
pub struct AnalysisSpec {
    /// 1-based position among the experiment's analyses.
    pub index: usize,
    /// The registered analysis id.
    pub kind: String,
    /// The model ids it uses, in order.
    pub models: Vec<String>,
    /// The data set id it uses.
    pub data: Option<String>,
    /// The analysis, built from its parameters.
    pub analysis: Box<dyn Analysis>,
    /// Its parameter table in a canonical form (keys sorted, values normalised): equal for equal
    /// parameters however they are written; hashed to decide whether a result is still valid.
    pub params: String,
}

impl fmt::Debug for AnalysisSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnalysisSpec")
            .field("index", &self.index)
            .field("kind", &self.kind)
            .field("models", &self.models)
            .field("data", &self.data)
            .field("params", &self.params)
            .finish_non_exhaustive()
    }
}

impl AnalysisSpec {
    /// Its output folder's name inside the run folder: `<index>-<kind>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.index, self.kind)
    }
}

impl DataSpec {
    /// Reads the data set's records.
    pub fn load(&self) -> Result<Dataset> {
        Ok(Dataset {
            id: self.id.clone(),
            kind: self.kind,
            path: self.path.clone(),
            field: self.field.clone(),
            max_tokens: self.max_tokens,
            limit_tokens: self.limit_tokens,
            records: Dataset::read_records(&self.path)?,
        })
    }
}

impl Experiment {
    /// Reads and validates the experiment file at `path` (no weights are loaded).
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Validates experiment `text` as if read from `path` (which locates errors and anchors
    /// relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        Parser {
            file: path.display().to_string(),
            base: path.parent().unwrap_or(Path::new("")).to_path_buf(),
            text,
        }
        .parse(path)
    }

    /// The experiment with its backend replaced (the command line's `--backend`).
    pub fn with_backend(mut self, backend: Backend) -> Self {
        self.run.backend = backend;
        self
    }

    /// One line for `strata validate`: the run, its backend, and what it will compute.
    pub fn describe(&self) -> String {
        let kinds: Vec<&str> = self.analyses.iter().map(|a| a.kind.as_str()).collect();
        let count =
            |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
        format!(
            "run `{}` on {}, seed {}: {}, {}, {} ({}); results in {}",
            self.run.name,
            self.run.backend,
            self.run.seed,
            count(self.models.len(), "model", "models"),
            count(self.data.len(), "data set", "data sets"),
            count(self.analyses.len(), "analysis", "analyses"),
            kinds.join(", "),
            self.run_dir().display()
        )
    }

    /// The run's output folder, `<out>/<name>`.
    pub fn run_dir(&self) -> PathBuf {
        self.run.out_dir.join(&self.run.name)
    }

    /// The model called `id`.
    pub fn model(&self, id: &str) -> Option<&ModelSpec> {
        self.models.iter().find(|m| m.id == id)
    }

    /// The data set called `id`.
    pub fn dataset(&self, id: &str) -> Option<&DataSpec> {
        self.data.iter().find(|d| d.id == id)
    }
}

/// The experiment file's top level, minus the analyses' own parameters (see `Parser::parse`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    run: RawRun,
    #[serde(default)]
    model: Vec<RawModel>,
    #[serde(default)]
    data: Vec<RawData>,
    /// Type-checked here; taken apart table by table from the parsed document.
    #[serde(default)]
    analysis: Vec<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRun {
    name: Spanned<String>,
    #[serde(default)]
    backend: Backend,
    #[serde(default)]
    seed: u64,
    #[serde(default = "default_out")]
    out: String,
}

fn default_out() -> String {
    "runs".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawModel {
    id: Spanned<String>,
    source: Option<Spanned<String>>,
    hub: Option<Spanned<String>>,
    tokenizer: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawData {
    id: Spanned<String>,
    kind: DataKind,
    path: Spanned<String>,
    #[serde(default = "default_field")]
    field: String,
    max_tokens: Option<Spanned<usize>>,
    limit_tokens: Option<Spanned<usize>>,
}

fn default_field() -> String {
    "text".into()
}

/// The keys of an `[[analysis]]` table that are Strata's, not the analysis'.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAnalysisHead {
    kind: Spanned<String>,
    #[serde(default)]
    models: Vec<Spanned<String>>,
    data: Option<Spanned<String>>,
}

const HEAD_KEYS: [&str; 3] = ["kind", "models", "data"];

struct Parser<'t> {
    file: String,
    base: PathBuf,
    text: &'t str,
}

impl<'t> Parser<'t> {
    fn error(&self, offset: usize, message: impl Into<String>, hint: Option<String>) -> Error {
        located_error(&self.file, self.text, offset, message, hint)
    }

    fn toml(&self, e: &toml::de::Error) -> Error {
        toml_error(&self.file, self.text, e)
    }

    fn parse(&self, path: &Path) -> Result<Experiment> {
        let doc = DeTable::parse(self.text).map_err(|e| self.toml(&e))?;
        let raw =
            RawFile::deserialize(doc.clone().into_deserializer()).map_err(|e| self.toml(&e))?;
        let run = self.run(raw.run)?;
        let models = self.models(raw.model)?;
        let data = self.data(raw.data)?;
        if raw.analysis.is_empty() {
            return Err(self.error(
                self.text.len(),
                "no [[analysis]] table: the experiment has nothing to run",
                Some(format!(
                    "add one, e.g. `[[analysis]]` with `kind = \"...\"`; {}",
                    registered_kinds()
                )),
            ));
        }
        let Some(DeValue::Array(tables)) =
            doc.into_inner().remove("analysis").map(Spanned::into_inner)
        else {
            // `RawFile` already rejected anything that is not an array.
            return Err(self.error(
                0,
                "`analysis` must be an array of tables ([[analysis]])",
                None,
            ));
        };
        let analyses = tables
            .into_iter()
            .enumerate()
            .map(|(i, table)| self.analysis(i + 1, table, &models, &data))
            .collect::<Result<Vec<_>>>()?;
        Ok(Experiment {
            path: path.to_path_buf(),
            text: self.text.to_string(),
            sha256: sha256_hex(self.text.as_bytes()),
            run,
            models,
            data,
            analyses,
        })
    }

    fn run(&self, raw: RawRun) -> Result<RunSettings> {
        if !is_file_name_safe(raw.name.get_ref()) {
            return Err(self.error(
                raw.name.span().start,
                format!("run name `{}` is not file-name safe", raw.name.get_ref()),
                Some(
                    "use letters, digits, `-`, `_` and `.` (not first); it names the output folder"
                        .into(),
                ),
            ));
        }
        Ok(RunSettings {
            name: raw.name.into_inner(),
            backend: raw.backend,
            seed: raw.seed,
            out_dir: self.base.join(raw.out),
        })
    }

    /// Rejects an empty id and an id defined twice.
    fn check_id(
        &self,
        what: &str,
        id: &Spanned<String>,
        earlier: &[&Spanned<String>],
    ) -> Result<()> {
        if id.get_ref().is_empty() {
            return Err(self.error(id.span().start, format!("{what} id is empty"), None));
        }
        if let Some(first) = earlier.iter().find(|e| e.get_ref() == id.get_ref()) {
            let (line, _) = crate::analysis::line_col(self.text, first.span().start);
            return Err(self.error(
                id.span().start,
                format!(
                    "duplicate {what} id `{}` (first defined on line {line})",
                    id.get_ref()
                ),
                Some(format!("every [[{what}]] needs its own id")),
            ));
        }
        Ok(())
    }

    fn models(&self, raw: Vec<RawModel>) -> Result<Vec<ModelSpec>> {
        let ids: Vec<&Spanned<String>> = raw.iter().map(|m| &m.id).collect();
        for (i, id) in ids.iter().enumerate() {
            self.check_id("model", id, &ids[..i])?;
        }
        raw.iter().map(|m| self.model(m)).collect()
    }

    /// Resolves and opens a model source (config and file list only; no weights are read) and
    /// checks that its architecture is registered.
    fn model(&self, raw: &RawModel) -> Result<ModelSpec> {
        let id = raw.id.get_ref();
        let (at, source) = match (&raw.source, &raw.hub) {
            (Some(path), None) => {
                let resolved = self.base.join(path.get_ref());
                if !resolved.exists() {
                    return Err(self.error(
                        path.span().start,
                        format!(
                            "model `{id}`: no such file or folder `{}`",
                            resolved.display()
                        ),
                        Some(format!(
                            "paths are relative to the experiment file's folder ({}); the real \
                             checkpoints are downloaded by `shared/fixtures/fetch-models.sh`",
                            display_dir(&self.base)
                        )),
                    ));
                }
                (path.span().start, ModelSource::Path(resolved))
            }
            (None, Some(hub)) => (hub.span().start, ModelSource::Hub(hub.get_ref().clone())),
            (source, _) => {
                let at = source
                    .as_ref()
                    .map_or(raw.id.span().start, |s| s.span().start);
                return Err(self.error(
                    at,
                    format!("model `{id}`: give exactly one of `source` and `hub`"),
                    Some(
                        "`source = \"path\"` names a Hugging Face folder or a .gguf file; \
                         `hub = \"org/name\"` a model in the local Hugging Face cache"
                            .into(),
                    ),
                ));
            }
        };
        let tokenizer = match &raw.tokenizer {
            Some(t) => Some(self.existing_file(&format!("model `{id}`"), t)?),
            None => None,
        };
        let files = ModelFiles::open(&source)
            .map_err(|e| self.error(at, format!("model `{id}`: {e}"), None))?;
        let model_type = files
            .model_type()
            .map_err(|e| self.error(at, format!("model `{id}`: {e}"), None))?;
        if registry::find_architecture(model_type).is_err() {
            let mut types: Vec<&str> = registry::architectures()
                .iter()
                .flat_map(|a| a.model_types.iter().copied())
                .collect();
            types.sort_unstable();
            return Err(self.error(
                at,
                format!("model `{id}`: unsupported architecture `{model_type}` (config.json `model_type`)"),
                Some(suggestion_hint(model_type, &types, "model types")),
            ));
        }
        Ok(ModelSpec {
            id: id.clone(),
            source,
            tokenizer,
        })
    }

    /// `path` resolved against the experiment's folder, or an error if it is not a file.
    fn existing_file(&self, what: &str, path: &Spanned<String>) -> Result<PathBuf> {
        let resolved = self.base.join(path.get_ref());
        if resolved.is_file() {
            return Ok(resolved);
        }
        Err(self.error(
            path.span().start,
            format!("{what}: no such file `{}`", resolved.display()),
            Some(format!(
                "paths are relative to the experiment file's folder ({})",
                display_dir(&self.base)
            )),
        ))
    }

    fn data(&self, raw: Vec<RawData>) -> Result<Vec<DataSpec>> {
        let ids: Vec<&Spanned<String>> = raw.iter().map(|d| &d.id).collect();
        for (i, id) in ids.iter().enumerate() {
            self.check_id("data", id, &ids[..i])?;
        }
        raw.into_iter()
            .map(|d| {
                let path = self.existing_file(&format!("data `{}`", d.id.get_ref()), &d.path)?;
                for (key, value) in [
                    ("max_tokens", &d.max_tokens),
                    ("limit_tokens", &d.limit_tokens),
                ] {
                    if let Some(v) = value.as_ref().filter(|v| *v.get_ref() == 0) {
                        return Err(self.error(
                            v.span().start,
                            format!("`{key}` must be at least 1"),
                            None,
                        ));
                    }
                }
                Ok(DataSpec {
                    id: d.id.into_inner(),
                    kind: d.kind,
                    path,
                    field: d.field,
                    max_tokens: d.max_tokens.map(Spanned::into_inner),
                    limit_tokens: d.limit_tokens.map(Spanned::into_inner),
                })
            })
            .collect()
    }

    /// An analysis names a `[[model]]` or `[[data]]` id that no table defines.
    fn unknown_reference(&self, table: &str, given: &Spanned<String>, defined: &[&str]) -> Error {
        let hint = if defined.is_empty() {
            format!(
                "no [[{table}]] table is defined; add one with `id = \"{}\"`",
                given.get_ref()
            )
        } else {
            suggestion_hint(given.get_ref(), defined, &format!("{table} ids"))
        };
        self.error(
            given.span().start,
            format!("unknown {table} id `{}`", given.get_ref()),
            Some(hint),
        )
    }

    fn analysis(
        &self,
        index: usize,
        table: Spanned<DeValue<'t>>,
        models: &[ModelSpec],
        data: &[DataSpec],
    ) -> Result<AnalysisSpec> {
        let span = table.span();
        let DeValue::Table(mut params) = table.into_inner() else {
            return Err(self.error(
                span.start,
                "`analysis` must be an array of tables ([[analysis]])",
                None,
            ));
        };
        let mut head = DeTable::new();
        for key in HEAD_KEYS {
            if let Some((k, v)) = params.remove_entry(key) {
                head.insert(k, v);
            }
        }
        if !head.contains_key("kind") {
            return Err(self.error(
                span.start,
                "missing field `kind`",
                Some(format!(
                    "every [[analysis]] names its analysis with `kind = \"...\"`; {}",
                    registered_kinds()
                )),
            ));
        }
        let head =
            RawAnalysisHead::deserialize(Spanned::new(span.clone(), head).into_deserializer())
                .map_err(|e| self.toml(&e))?;
        let kind = head.kind.get_ref();
        let registration = registry::analyses()
            .into_iter()
            .find(|r| r.id == kind)
            .ok_or_else(|| {
                let ids: Vec<_> = registry::analyses().iter().map(|r| r.id).collect();
                self.error(
                    head.kind.span().start,
                    format!("unknown analysis kind `{kind}`"),
                    Some(suggestion_hint(kind, &ids, "analysis kinds")),
                )
            })?;
        let model_ids: Vec<&str> = models.iter().map(|m| m.id.as_str()).collect();
        for (i, m) in head.models.iter().enumerate() {
            if !model_ids.contains(&m.get_ref().as_str()) {
                return Err(self.unknown_reference("model", m, &model_ids));
            }
            if head.models[..i].iter().any(|e| e.get_ref() == m.get_ref()) {
                return Err(self.error(
                    m.span().start,
                    format!("model `{}` is listed twice", m.get_ref()),
                    None,
                ));
            }
        }
        if let Some(d) = &head.data {
            let data_ids: Vec<&str> = data.iter().map(|d| d.id.as_str()).collect();
            if !data_ids.contains(&d.get_ref().as_str()) {
                return Err(self.unknown_reference("data", d, &data_ids));
            }
        }
        let canonical = toml::Table::deserialize(
            Spanned::new(span.clone(), params.clone()).into_deserializer(),
        )
        .map_err(|e| self.toml(&e))?;
        let analysis = (registration.build)(ParamsInput::new(
            Spanned::new(span, params),
            self.file.clone(),
            self.text,
        ))?;
        Ok(AnalysisSpec {
            index,
            kind: kind.clone(),
            models: head.models.into_iter().map(Spanned::into_inner).collect(),
            data: head.data.map(Spanned::into_inner),
            analysis,
            params: canonical_table(&canonical),
        })
    }
}

/// "registered kinds: a, b" (or that none is registered).
fn registered_kinds() -> String {
    let kinds: Vec<&str> = registry::analyses().iter().map(|r| r.id).collect();
    if kinds.is_empty() {
        "no analysis is registered in this build".into()
    } else {
        format!("registered kinds: {}", kinds.join(", "))
    }
}

/// `dir` for messages (`.` for the current folder).
fn display_dir(dir: &Path) -> String {
    if dir.as_os_str().is_empty() {
        ".".into()
    } else {
        dir.display().to_string()
    }
}

/// A table as `{key=value,...}` with keys sorted at every level and values in TOML's
/// normalised form (integers in decimal, strings in basic quotes).
fn canonical_table(table: &toml::Table) -> String {
    let mut entries: Vec<_> = table.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let entries: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{}={}", toml::Value::String(k.clone()), canonical_value(v)))
        .collect();
    format!("{{{}}}", entries.join(","))
}

fn canonical_value(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) => canonical_table(t),
        toml::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(canonical_value).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::{Context, ParamDoc};
    use crate::registry::AnalysisRegistration;
    use crate::report::Report;

    /// A test-only analysis: reports `value` as the scalar `value`.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Constant {
        #[serde(default)]
        value: f64,
    }

    impl Analysis for Constant {
        fn run(&self, _ctx: &mut Context<'_>) -> Result<Report> {
            let mut report = Report::new("test-constant");
            report.scalar("value", self.value, None, "");
            Ok(report)
        }
    }

    fn build_constant(params: ParamsInput<'_>) -> Result<Box<dyn Analysis>> {
        Ok(Box::new(params.parse::<Constant>()?))
    }

    inventory::submit! {
        AnalysisRegistration {
            id: "test-constant",
            description: "test only: reports a constant",
            parameters: &[ParamDoc { name: "value", ty: "float", default: "0", doc: "the constant" }],
            build: build_constant,
        }
    }

    /// Writes `text` as `exp.toml` (and a one-record `wiki.jsonl`) into `dir` and loads it.
    pub(crate) fn parse_in(dir: &Path, text: &str) -> Result<Experiment> {
        std::fs::write(dir.join("wiki.jsonl"), "{\"text\": \"hello\"}\n").unwrap();
        std::fs::write(dir.join("exp.toml"), text).unwrap();
        Experiment::load(dir.join("exp.toml"))
    }

    const GOOD: &str = r#"
[run]
name = "demo"
seed = 7

[[data]]
id = "wiki"
kind = "text"
path = "wiki.jsonl"
max_tokens = 0x10

[[analysis]]
kind = "test-constant"
data = "wiki"
value = 2.5

[[analysis]]
kind = "test-constant"
"#;

    #[test]
    fn parses_a_valid_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let exp = parse_in(dir.path(), GOOD).unwrap();
        assert_eq!(
            exp.run,
            RunSettings {
                name: "demo".into(),
                backend: Backend::Flex,
                seed: 7,
                out_dir: dir.path().join("runs"),
            }
        );
        assert_eq!(exp.run_dir(), dir.path().join("runs/demo"));
        assert_eq!(exp.sha256, sha256_hex(GOOD.as_bytes()));
        assert_eq!(exp.text, GOOD);
        let data = exp.dataset("wiki").unwrap();
        assert_eq!(
            (data.field.as_str(), data.max_tokens, data.limit_tokens),
            ("text", Some(16), None)
        );
        assert_eq!(data.load().unwrap().records.len(), 1);
        let indices: Vec<_> = exp
            .analyses
            .iter()
            .map(|a| (a.index, a.data.as_deref()))
            .collect();
        assert_eq!(indices, [(1, Some("wiki")), (2, None)]);
        assert_eq!(exp.analyses[0].params, "{\"value\"=2.5}");
        assert_eq!(exp.analyses[1].params, "{}");
        assert_eq!(
            exp.describe(),
            format!(
                "run `demo` on flex, seed 7: 0 models, 1 data set, 2 analyses (test-constant, \
                 test-constant); results in {}/runs/demo",
                dir.path().display()
            )
        );
        assert_eq!(
            exp.with_backend(Backend::Ndarray).run.backend,
            Backend::Ndarray
        );
    }

    #[test]
    fn canonical_params_ignore_layout() {
        let a: toml::Table = toml::from_str("b = [1, 0x2]\na = { y = 'q', x = 1.0 }").unwrap();
        let b: toml::Table = toml::from_str("a.x = 1.0\na.y = \"q\"\nb = [1, 2]").unwrap();
        assert_eq!(canonical_table(&a), canonical_table(&b));
        assert_eq!(
            canonical_table(&a),
            "{\"a\"={\"x\"=1.0,\"y\"=\"q\"},\"b\"=[1,2]}"
        );
    }

    fn first_line(dir: &Path, text: &str) -> String {
        let err = parse_in(dir, text).unwrap_err().to_string();
        let prefix = format!("{}/", dir.display());
        err.replace(&prefix, "").lines().next().unwrap().to_string()
    }

    #[test]
    fn errors_are_located() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let cases = [
            (
                GOOD.replace("seed = 7", "sed = 7"),
                "exp.toml:4:1: unknown field `sed`",
            ),
            (
                GOOD.replace("seed = 7", "seed = \"7\""),
                "exp.toml:4:8: invalid type: string \"7\", expected u64",
            ),
            (
                GOOD.replace("value = 2.5", "valeu = 2.5"),
                "exp.toml:15:1: unknown field `valeu`",
            ),
            (
                GOOD.replace("name = \"demo\"", "name = \"a/b\""),
                "exp.toml:3:8: run name `a/b` is not file-name safe",
            ),
            (
                GOOD.replace("data = \"wiki\"", "data = \"wik\""),
                "exp.toml:14:8: unknown data id `wik`",
            ),
            (
                GOOD.replace("max_tokens = 0x10", "max_tokens = 0"),
                "exp.toml:10:14: `max_tokens` must be at least 1",
            ),
            (
                GOOD.replace("path = \"wiki.jsonl\"", "path = \"nope.jsonl\""),
                "exp.toml:9:8: data `wiki`: no such file `nope.jsonl`",
            ),
            (
                GOOD[..GOOD.find("[[analysis]]").unwrap()].to_string(),
                "exp.toml:12:1: no [[analysis]] table",
            ),
            (
                GOOD.replace("kind = \"text\"", "kind = \"txt\""),
                "exp.toml:8:8: unknown variant `txt`",
            ),
        ];
        for (text, expected) in cases {
            let line = first_line(d, &text);
            assert!(
                line.starts_with(expected),
                "\n  got: {line}\n want: {expected}"
            );
        }
    }

    #[test]
    fn unknown_kind_hint_lists_registered_kinds() {
        let dir = tempfile::tempdir().unwrap();
        let err = parse_in(
            dir.path(),
            &GOOD.replace(
                "kind = \"test-constant\"\ndata",
                "kind = \"test-constnt\"\ndata",
            ),
        )
        .unwrap_err();
        let Error::Experiment { message, hint, .. } = err else {
            panic!("{err}")
        };
        assert_eq!(message, "unknown analysis kind `test-constnt`");
        assert_eq!(
            hint.unwrap(),
            "did you mean `test-constant`? The valid analysis kinds are `test-constant`"
        );
    }
}

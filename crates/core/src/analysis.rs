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

    /// Names of the report scalars this analysis documents as possibly NaN or infinite (a
    /// correlation of a constant series, a ratio with a zero denominator). A run treats a
    /// non-finite value in any other scalar as a numerical failure. `*.name` covers the
    /// per-model scalars `<model>.name`.
    fn non_finite_scalars(&self) -> &[&str] {
        &[]
    }
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
    // Not `FromStr`: the parsed table borrows from `source`.
    #[allow(clippy::should_implement_trait)]
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
///
/// Unknown keys and unknown values (`unknown field`/`unknown variant`) get a hint listing the
/// valid ones, led by "did you mean" when one is within edit distance 2.
pub fn toml_error(file: &str, source: &str, e: &toml::de::Error) -> Error {
    let offset = e.span().map_or(0, |s| s.start);
    let message = e.message().trim();
    match unknown_name_hint(message) {
        Some((message, hint)) => located_error(file, source, offset, message, Some(hint)),
        None => located_error(file, source, offset, message, None),
    }
}

/// An [`Error::Experiment`] at byte `offset` of `source` (the text of `file`).
pub fn located_error(
    file: &str,
    source: &str,
    offset: usize,
    message: impl Into<String>,
    hint: Option<String>,
) -> Error {
    let (line, col) = line_col(source, offset);
    Error::Experiment {
        location: format!("{file}:{line}:{col}"),
        message: message.into(),
        hint,
    }
}

/// Splits serde's "unknown field `x`, expected one of `a`, `b`" (or "unknown variant …") into
/// the short message and a hint.
fn unknown_name_hint(message: &str) -> Option<(String, String)> {
    let (what, valid) = if message.starts_with("unknown field") {
        ("keys", "this table takes no keys")
    } else if message.starts_with("unknown variant") {
        ("values", "this value has no variants")
    } else {
        return None;
    };
    let (head, expected) = message.split_once(", ")?;
    let given = head.split('`').nth(1)?;
    let names: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    if names.is_empty() {
        return Some((head.to_string(), valid.to_string()));
    }
    Some((head.to_string(), suggestion_hint(given, &names, what)))
}

/// "did you mean `x`? The valid {what} are `a`, `b`" (the first part only when some name is
/// within edit distance 2 of `given`).
pub fn suggestion_hint(given: &str, valid: &[&str], what: &str) -> String {
    let list = if valid.is_empty() {
        format!("There are no valid {what}")
    } else {
        let names: Vec<String> = valid.iter().map(|v| format!("`{v}`")).collect();
        format!("The valid {what} are {}", names.join(", "))
    };
    match did_you_mean(given, valid.iter().copied()) {
        Some(best) => format!("did you mean `{best}`? {list}"),
        None => list,
    }
}

/// The candidate closest to `word` by edit distance, if it is within 2 edits.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|&(d, _)| d <= 2)
        .min_by_key(|&(d, _)| d)
        .map(|(_, c)| c)
}

/// Levenshtein distance in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

/// 1-based line and column (in characters) of byte `offset` in `source` (an offset past the
/// end or inside a character counts as the end or that character).
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(source.len());
    while !source.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &source[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_lines_and_characters() {
        let text = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 4), (1, 5));
        assert_eq!(line_col(text, 6), (2, 1));
        // `é` is two bytes but one column.
        assert_eq!(line_col(text, text.rfind('=').unwrap()), (2, 4));
        assert_eq!(line_col(text, 8), (2, 2), "inside `é`");
        assert_eq!(line_col(text, 10_000), (3, 1));
    }

    #[test]
    fn edit_distance_and_suggestions() {
        assert_eq!(edit_distance("sed", "seed"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(did_you_mean("sed", ["name", "seed", "out"]), Some("seed"));
        assert_eq!(did_you_mean("zzzz", ["name", "seed"]), None);
    }

    #[test]
    fn unknown_field_gets_a_hint() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct P {
            positions: String,
            layers: Option<usize>,
        }
        let err = ParamsInput::from_str("\npositon = \"last\"\n")
            .unwrap()
            .parse::<P>()
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "<params>:2:1: unknown field `positon`\n  hint: did you mean `positions`? \
             The valid keys are `positions`, `layers`"
        );
    }

    #[test]
    fn wrong_type_points_at_the_value() {
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct P {
            layers: usize,
        }
        let err = ParamsInput::from_str("layers = \"three\"")
            .unwrap()
            .parse::<P>()
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("<params>:1:10: invalid type: string"),
            "{err}"
        );
    }
}

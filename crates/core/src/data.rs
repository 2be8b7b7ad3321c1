//! Data sets: JSONL, CSV/TSV and plain text, with a field mapping from the experiment file.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// What a data set holds (decides which analyses can use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataKind {
    /// Natural text, one text per record.
    Text,
    /// In-context-learning classification (input, label).
    IclClassification,
    /// Question answering with gold answers.
    Qa,
    /// Multiple choice (question, choices, answer).
    MultipleChoice,
}

/// A loaded data set: records as JSON objects (CSV rows and text lines become objects too).
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The experiment's id for it.
    pub id: String,
    pub kind: DataKind,
    pub path: PathBuf,
    /// The field holding the text (`text` kind) or the input.
    pub field: String,
    /// Per-text token cap (`text` kind).
    pub max_tokens: Option<usize>,
    /// Total token budget: reading stops after the text that reaches it.
    pub limit_tokens: Option<usize>,
    pub records: Vec<Map<String, Value>>,
}

impl Dataset {
    /// Reads `path` by its extension: `.jsonl`/`.json` (one object per line), `.csv`, `.tsv`,
    /// anything else as plain text (one record per non-empty line, field `text`).
    pub fn read_records(path: &Path) -> Result<Vec<Map<String, Value>>> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        let records = match ext {
            "jsonl" | "json" => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, line)| match serde_json::from_str::<Value>(line) {
                    Ok(Value::Object(m)) => Ok(m),
                    Ok(_) => Err(Error::data(
                        path,
                        format!("line {}: expected a JSON object", i + 1),
                    )),
                    Err(e) => Err(Error::data(
                        path,
                        format!("line {}: invalid JSON: {e}", i + 1),
                    )),
                })
                .collect::<Result<Vec<_>>>()?,
            "csv" | "tsv" => {
                let sep = if ext == "csv" { ',' } else { '\t' };
                read_delimited(path, &text, sep)?
            }
            _ => text
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| {
                    let mut m = Map::new();
                    m.insert("text".into(), Value::String(l.to_string()));
                    m
                })
                .collect(),
        };
        if records.is_empty() {
            return Err(Error::data(path, "the data set is empty"));
        }
        Ok(records)
    }

    /// The `field` of every record as text, or an error naming the first record without it.
    pub fn texts(&self) -> Result<Vec<&str>> {
        self.records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.get(&self.field).and_then(Value::as_str).ok_or_else(|| {
                    Error::data(
                        &self.path,
                        format!(
                            "record {}: field `{}` is missing or not a string",
                            i + 1,
                            self.field
                        ),
                    )
                })
            })
            .collect()
    }

    /// Token sequences of a `text` data set: each text tokenised alone with the tokenizer's
    /// default special tokens, cut to its first `max_tokens` ids; stops after the text that
    /// brings the total to `limit_tokens`. Texts that tokenise to nothing are skipped.
    pub fn token_sequences(&self, tokenizer: &Tokenizer) -> Result<Vec<Vec<u32>>> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for text in self.texts()? {
            if self.limit_tokens.is_some_and(|limit| total >= limit) {
                break;
            }
            let mut ids = tokenizer.encode(text, true)?;
            if let Some(max) = self.max_tokens {
                ids.truncate(max);
            }
            if ids.is_empty() {
                continue;
            }
            total += ids.len();
            out.push(ids);
        }
        if out.is_empty() {
            return Err(Error::data(&self.path, "no text produced any tokens"));
        }
        Ok(out)
    }
}

/// Minimal RFC 4180 reader: a header row, quoted fields with `""` escapes and embedded newlines.
fn read_delimited(path: &Path, text: &str, sep: char) -> Result<Vec<Map<String, Value>>> {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') if field.is_empty() => quoted = true,
            (false, c) if c == sep => row.push(std::mem::take(&mut field)),
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, '\r') => {}
            (false, c) => field.push(c),
        }
    }
    if quoted {
        return Err(Error::data(path, "unterminated quoted field"));
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    let mut rows = rows
        .into_iter()
        .filter(|r| !(r.len() == 1 && r[0].is_empty()));
    let header = rows
        .next()
        .ok_or_else(|| Error::data(path, "the file has no header row"))?;
    rows.enumerate()
        .map(|(i, r)| {
            if r.len() != header.len() {
                return Err(Error::data(
                    path,
                    format!(
                        "row {}: {} fields, but the header has {}",
                        i + 2,
                        r.len(),
                        header.len()
                    ),
                ));
            }
            Ok(header
                .iter()
                .cloned()
                .zip(r.into_iter().map(Value::String))
                .collect())
        })
        .collect()
}

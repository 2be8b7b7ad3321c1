//! Reports are data, not text: named scalars, tables with typed columns and units, figures as data
//! (rendered by [`crate::render`]), and a short human summary.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::output::is_file_name_safe;

/// What an analysis returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Report {
    /// The analysis kind that produced it.
    pub analysis: String,
    /// A short paragraph for people.
    pub summary: String,
    /// Named numbers.
    pub scalars: Vec<Scalar>,
    /// Tables (one CSV each).
    pub tables: Vec<Table>,
    /// Figures (one SVG each).
    pub figures: Vec<Figure>,
}

/// A named number with an optional unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    pub name: String,
    pub value: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// A table: equal-length columns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Table {
    /// File-name-safe name (`per_layer` → `per_layer.csv`).
    pub name: String,
    pub columns: Vec<Column>,
}

/// One column of a table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    pub values: Values,
}

/// Column values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "lowercase")]
pub enum Values {
    Float(Vec<f64>),
    Int(Vec<i64>),
    Text(Vec<String>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Text(v) => v.len(),
        }
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A figure as data: series on shared axes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// File-name-safe name (`log_pr` → `log_pr.svg`).
    pub name: String,
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

/// One series of a figure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    pub label: String,
    pub style: SeriesStyle,
    pub x: Vec<f64>,
    pub y: Vec<f64>,
}

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeriesStyle {
    Line,
    Points,
    LinePoints,
}

impl Report {
    /// An empty report of `analysis`.
    pub fn new(analysis: impl Into<String>) -> Self {
        Self {
            analysis: analysis.into(),
            ..Self::default()
        }
    }

    /// Adds a scalar.
    pub fn scalar(&mut self, name: &str, value: f64, unit: Option<&str>, description: &str) {
        self.scalars.push(Scalar {
            name: name.into(),
            value,
            unit: unit.map(Into::into),
            description: description.into(),
        });
    }

    /// The scalar called `name`.
    pub fn get_scalar(&self, name: &str) -> Option<f64> {
        self.scalars
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }

    /// The table called `name`.
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// Checks that the report can be rendered faithfully: unique scalar names; tables and figures
    /// with unique, file-name-safe names; tables with at least one column, unique column names
    /// and equal column lengths; series with as many `x` as `y` values.
    pub fn validate(&self) -> Result<()> {
        let fail = |message: String| Err(Error::analysis(&self.analysis, message));
        if let Some(dup) = first_duplicate(self.scalars.iter().map(|s| s.name.as_str())) {
            return fail(format!("report has two scalars named `{dup}`"));
        }
        for (what, names) in [
            (
                "table",
                self.tables
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>(),
            ),
            (
                "figure",
                self.figures.iter().map(|f| f.name.as_str()).collect(),
            ),
        ] {
            if let Some(bad) = names.iter().find(|n| !is_file_name_safe(n)) {
                return fail(format!(
                    "{what} name `{bad}` is not file-name safe (use letters, digits, `-`, `_`, `.`)"
                ));
            }
            if let Some(dup) = first_duplicate(names.iter().copied()) {
                return fail(format!("report has two {what}s named `{dup}`"));
            }
        }
        for table in &self.tables {
            if table.columns.is_empty() {
                return fail(format!("table `{}` has no columns", table.name));
            }
            if let Some(dup) = first_duplicate(table.columns.iter().map(|c| c.name.as_str())) {
                return fail(format!(
                    "table `{}` has two columns named `{dup}`",
                    table.name
                ));
            }
            let rows = table.n_rows();
            if let Some(c) = table.columns.iter().find(|c| c.values.len() != rows) {
                return fail(format!(
                    "table `{}`: column `{}` has {} values, but column `{}` has {rows}",
                    table.name,
                    c.name,
                    c.values.len(),
                    table.columns[0].name
                ));
            }
        }
        for figure in &self.figures {
            if let Some(s) = figure.series.iter().find(|s| s.x.len() != s.y.len()) {
                return fail(format!(
                    "figure `{}`: series `{}` has {} x values but {} y values",
                    figure.name,
                    s.label,
                    s.x.len(),
                    s.y.len()
                ));
            }
        }
        Ok(())
    }
}

/// The first name that occurs twice.
fn first_duplicate<'a>(names: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut seen = std::collections::BTreeSet::new();
    names.into_iter().find(|n| !seen.insert(*n))
}

impl Table {
    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Number of rows (the first column's length).
    pub fn n_rows(&self) -> usize {
        self.columns.first().map_or(0, |c| c.values.len())
    }
}

impl Column {
    /// A float column.
    pub fn float(name: &str, unit: Option<&str>, values: Vec<f64>) -> Self {
        Self {
            name: name.into(),
            unit: unit.map(Into::into),
            values: Values::Float(values),
        }
    }

    /// An integer column.
    pub fn int(name: &str, values: Vec<i64>) -> Self {
        Self {
            name: name.into(),
            unit: None,
            values: Values::Int(values),
        }
    }

    /// A text column.
    pub fn text(name: &str, values: Vec<String>) -> Self {
        Self {
            name: name.into(),
            unit: None,
            values: Values::Text(values),
        }
    }
}

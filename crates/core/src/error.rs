//! Typed errors for every library crate. The CLI maps [`Error::is_input_error`] to exit code 2.

use std::path::PathBuf;

/// Result alias used across Strata's library crates.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Strata, with enough context to act on it.
///
/// Variants that describe *bad input* (a file, a field, a value the user gave) say which file and
/// field, and what was expected; [`Error::is_input_error`] tells them apart from runtime failures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// An experiment file is invalid. `location` is `file:line:col`.
    #[error("{location}: {message}{}", hint.as_ref().map(|h| format!("\n  hint: {h}")).unwrap_or_default())]
    Experiment {
        location: String,
        message: String,
        hint: Option<String>,
    },
    /// A model folder or file is malformed: a missing tensor, a wrong shape, a bad config field.
    #[error("{path}: {message}")]
    Model { path: PathBuf, message: String },
    /// A data set is malformed or empty.
    #[error("{path}: {message}")]
    Data { path: PathBuf, message: String },
    /// An architecture, analysis, backend, capture site or feature this build does not support.
    #[error("{0}")]
    Unsupported(String),
    /// A request that does not fit the model (a layer past the last one, a prompt longer than the
    /// context, a capture this architecture cannot provide).
    #[error("{0}")]
    InvalidRequest(String),
    /// Tokenizer failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A computation produced NaN or infinite values, or failed on the device.
    #[error("numerical failure: {0}")]
    Numeric(String),
    /// An analysis failed for a reason of its own.
    #[error("analysis `{analysis}`: {message}")]
    Analysis { analysis: String, message: String },
    /// An error inside one step of a larger job (which analysis of a run, which model), with that
    /// step named. Input-ness is the inner error's.
    #[error("{context}: {inner}")]
    Context { context: String, inner: Box<Error> },
}

impl Error {
    /// True when the error is the user's input (exit code 2) rather than a runtime failure (1).
    pub fn is_input_error(&self) -> bool {
        match self {
            Error::Experiment { .. }
            | Error::Model { .. }
            | Error::Data { .. }
            | Error::Unsupported(_)
            | Error::InvalidRequest(_) => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::NotFound
                    | std::io::ErrorKind::PermissionDenied
                    | std::io::ErrorKind::InvalidData
            ),
            Error::Tokenizer(_) | Error::Numeric(_) | Error::Analysis { .. } => false,
            Error::Context { inner, .. } => inner.is_input_error(),
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A malformed-model error for `path`.
    pub fn model(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Model {
            path: path.into(),
            message: message.into(),
        }
    }

    /// A malformed-data error for `path`.
    pub fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// Wraps the error with the step it happened in (`analysis 2 \`lid\``).
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            inner: Box::new(self),
        }
    }

    /// An analysis-specific failure.
    pub fn analysis(analysis: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Analysis {
            analysis: analysis.into(),
            message: message.into(),
        }
    }
}

//! The run manifest (`<out>/<name>/manifest.json`): everything needed to say what produced a
//! run's results — the experiment file verbatim, Strata's version and commit, backend and device,
//! the SHA-256 of every model and data file read, the seed, times, and each analysis' outcome.

use std::io::Read;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::backend::Backend;
use crate::data::DataKind;
use crate::error::{Error, Result};

/// Strata's version (the `strata-core` crate version).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit Strata was built from (`git rev-parse HEAD` at build time, or the
/// `STRATA_GIT_COMMIT` environment variable when set at build time), `unknown` without git.
pub const GIT_COMMIT: &str = env!("STRATA_GIT_COMMIT");

/// What a run did, written as `manifest.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Manifest {
    /// Strata's version.
    pub strata_version: String,
    /// The commit Strata was built from.
    pub git_commit: String,
    /// The experiment file.
    pub experiment: ExperimentRecord,
    /// The run's name (`[run] name`).
    pub name: String,
    pub backend: Backend,
    /// The burn device, as burn describes it.
    pub device: String,
    pub seed: u64,
    /// RFC 3339 UTC time the run started.
    pub started_at: String,
    /// RFC 3339 UTC time the run ended (successfully or not).
    pub finished_at: String,
    /// The models the analyses use, with the files they are loaded from.
    pub models: Vec<ModelRecord>,
    /// The data sets the analyses use.
    pub data: Vec<DataRecord>,
    /// Every analysis of the experiment, in file order.
    pub analyses: Vec<AnalysisRecord>,
}

/// The experiment file of a run.
#[derive(Debug, Clone, Serialize)]
pub struct ExperimentRecord {
    /// As given on the command line.
    pub path: String,
    /// SHA-256 of `text`.
    pub sha256: String,
    /// The file verbatim.
    pub text: String,
}

/// A model and the files it is loaded from.
#[derive(Debug, Clone, Serialize)]
pub struct ModelRecord {
    pub id: String,
    /// The source as resolved (relative to the experiment file's folder).
    pub source: String,
    pub files: Vec<FileRecord>,
}

/// A data set.
#[derive(Debug, Clone, Serialize)]
pub struct DataRecord {
    pub id: String,
    pub kind: DataKind,
    pub file: FileRecord,
}

/// A file and its content hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileRecord {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

impl FileRecord {
    /// Hashes the file at `path` (streaming; files of any size).
    pub fn hash(path: &Path) -> Result<Self> {
        let (bytes, sha256) = hash_file(path)?;
        Ok(Self {
            path: path.display().to_string(),
            bytes,
            sha256,
        })
    }
}

/// Lower-case hex SHA-256 of the file at `path` (streaming; files of any size).
pub fn sha256_file(path: &Path) -> Result<String> {
    Ok(hash_file(path)?.1)
}

/// Size and SHA-256 of a file, read in 1 MiB chunks.
fn hash_file(path: &Path) -> Result<(u64, String)> {
    let io = |e| Error::io(path, e);
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    Ok((bytes, hex(&hasher.finalize())))
}

/// One analysis in the manifest.
#[derive(Debug, Clone, Serialize)]
pub struct AnalysisRecord {
    /// 1-based position in the experiment file.
    pub index: usize,
    pub kind: String,
    /// Its output folder, relative to the run folder.
    pub dir: String,
    /// Its parameter table in canonical form.
    pub params: String,
    /// SHA-256 of everything its result depends on (see `run`).
    pub inputs_hash: String,
    /// Written inline: `"status": "completed", "seconds": 1.5`.
    #[serde(flatten)]
    pub status: AnalysisStatus,
}

/// What happened to an analysis in a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum AnalysisStatus {
    /// Ran to completion in this run.
    Completed {
        /// Wall-clock seconds it took (running and rendering).
        seconds: f64,
    },
    /// Complete from an earlier run with the same inputs; not run again.
    Skipped,
    /// Failed in this run; the run stopped here.
    Failed {
        /// The error.
        error: String,
    },
    /// Not reached because an earlier analysis failed.
    NotRun,
}

impl std::fmt::Display for AnalysisStatus {
    /// `completed in 1.2 s`, `skipped (complete and unchanged)`, `failed`, `not run`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AnalysisStatus::Completed { seconds } => write!(f, "completed in {seconds:.1} s"),
            AnalysisStatus::Skipped => f.write_str("skipped (complete and unchanged)"),
            AnalysisStatus::Failed { .. } => f.write_str("failed"),
            AnalysisStatus::NotRun => f.write_str("not run"),
        }
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

fn hex(digest: &[u8]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The current UTC time in RFC 3339 (`2026-01-31T12:00:00.123456Z`).
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data = vec![7u8; (1 << 20) + 13];
        std::fs::write(&path, &data).unwrap();
        let rec = FileRecord::hash(&path).unwrap();
        assert_eq!(rec.bytes, data.len() as u64);
        assert_eq!(rec.sha256, sha256_hex(&data));
        assert_eq!(sha256_file(&path).unwrap(), rec.sha256);
        assert!(FileRecord::hash(&dir.path().join("missing")).is_err());
    }

    #[test]
    fn build_info_and_times() {
        assert!(!GIT_COMMIT.is_empty());
        assert!(!VERSION.is_empty());
        let now = now_rfc3339();
        assert!(
            now.len() >= 20 && now.as_bytes()[10] == b'T' && now.ends_with('Z'),
            "{now}"
        );
    }
}

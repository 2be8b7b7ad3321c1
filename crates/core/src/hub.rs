//! Hugging Face hub ids (`org/name`) resolved from the local Hugging Face cache, offline: Strata
//! never downloads. The cache layout is `hf-hub`'s (and `huggingface_hub`'s):
//! `<cache>/models--org--name/refs/<revision>` holds a commit hash whose files lie under
//! `<cache>/models--org--name/snapshots/<commit>/`.
//!
//! The cache folder is `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub` — the order
//! `huggingface_hub` uses.

use std::path::{Path, PathBuf};

use hf_hub::{Cache, Repo, RepoType};

use crate::error::{Error, Result};
use crate::gguf::GgufFile;

/// A parsed hub reference: `org/name`, optionally `@revision` (a branch, tag or commit), and
/// optionally a file inside the repository (`org/name/model.Q4_K_M.gguf`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `org/name`.
    pub repo: String,
    /// Branch, tag or commit; `main` when not given.
    pub revision: String,
    /// A path inside the repository, when the id names one file.
    pub file: Option<String>,
}

impl HubId {
    /// Parses `org/name[@revision][/path/in/repo]`; `None` when `s` does not look like a hub id.
    pub fn parse(s: &str) -> Option<Self> {
        let (org, rest) = s.split_once('/')?;
        let (name_rev, file) = match rest.split_once('/') {
            Some((n, f)) => (n, Some(f)),
            None => (rest, None),
        };
        let (name, revision) = match name_rev.split_once('@') {
            Some((n, r)) => (n, Some(r)),
            None => (name_rev, None),
        };
        let word = |w: &str| {
            !w.is_empty()
                && !w.starts_with(['.', '-'])
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        };
        let path_ok =
            |f: &str| !f.is_empty() && f.split('/').all(|p| !p.is_empty() && p != "." && p != "..");
        // `models/x.gguf` is a mistyped path far more often than a repository named `x.gguf`.
        let file_like = [".gguf", ".safetensors", ".json", ".bin"]
            .iter()
            .any(|ext| name.ends_with(ext));
        if !word(org)
            || !word(name)
            || file_like
            || revision.is_some_and(|r| !word(r))
            || file.is_some_and(|f| !path_ok(f))
        {
            return None;
        }
        Some(Self {
            repo: format!("{org}/{name}"),
            revision: revision.unwrap_or("main").to_string(),
            file: file.map(str::to_string),
        })
    }
}

impl std::fmt::Display for HubId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.repo)?;
        if self.revision != "main" {
            write!(f, "@{}", self.revision)?;
        }
        if let Some(file) = &self.file {
            write!(f, "/{file}")?;
        }
        Ok(())
    }
}

/// The Hugging Face hub cache folder this process uses (see the module docs), or `None` when
/// no variable names one and there is no home folder.
pub fn cache_dir() -> Option<PathBuf> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    var("HF_HUB_CACHE")
        .or_else(|| var("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("huggingface").join("hub")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("huggingface").join("hub")))
}

/// Resolves `id` in the default cache ([`cache_dir`]).
pub fn resolve(id: &HubId) -> Result<PathBuf> {
    let dir = cache_dir().ok_or_else(|| {
        Error::InvalidRequest(format!(
            "hub id `{id}`: no Hugging Face cache folder (set HF_HUB_CACHE or HF_HOME)"
        ))
    })?;
    resolve_in(&dir, id)
}

/// Resolves `id` in the cache at `cache`: the snapshot folder when it is a Hugging Face model
/// folder (`config.json`), the one `.gguf` file it holds otherwise, or the file `id` names.
pub fn resolve_in(cache: &Path, id: &HubId) -> Result<PathBuf> {
    let repo = Repo::with_revision(id.repo.clone(), RepoType::Model, id.revision.clone());
    let folder = cache.join(repo.folder_name());
    let cached = Cache::new(cache.to_path_buf()).repo(repo);
    let not_cached = |what: String| {
        Error::model(
            cache,
            format!(
                "model `{id}` is not in the Hugging Face cache ({what}); Strata never downloads: fetch \
                 it with `huggingface-cli download {}` or point HF_HUB_CACHE / HF_HOME at a cache \
                 that holds it",
                id.repo
            ),
        )
    };
    if !folder.is_dir() {
        return Err(not_cached(format!("no folder {}", folder.display())));
    }
    // A branch or tag names a commit in refs/; a commit hash names its snapshot directly.
    let ref_path = folder.join("refs").join(&id.revision);
    let commit = match std::fs::read_to_string(&ref_path) {
        Ok(text) => text.trim().to_string(),
        Err(_) => id.revision.clone(),
    };
    let snapshot = cached.pointer_path(&commit);
    if commit.is_empty() || !snapshot.is_dir() {
        return Err(not_cached(format!(
            "no snapshot for revision `{}` ({} → {})",
            id.revision,
            ref_path.display(),
            snapshot.display()
        )));
    }
    if let Some(file) = &id.file {
        let path = snapshot.join(file);
        return if path.exists() {
            Ok(path)
        } else {
            Err(not_cached(format!(
                "no file `{file}` in {}",
                snapshot.display()
            )))
        };
    }
    if snapshot.join("config.json").is_file() {
        return Ok(snapshot);
    }
    let mut ggufs: Vec<PathBuf> = std::fs::read_dir(&snapshot)
        .map_err(|e| Error::io(&snapshot, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| GgufFile::is_gguf_path(p))
        .collect();
    ggufs.sort();
    match ggufs.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::model(
            &snapshot,
            format!("model `{id}`: the cached snapshot holds neither config.json nor a .gguf file"),
        )),
        many => Err(Error::InvalidRequest(format!(
            "model `{id}`: the cached snapshot holds {} GGUF files; name one as `{}/<file>`: {}",
            many.len(),
            id.repo,
            many.iter()
                .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_hub_ids() {
        let id = HubId::parse("HuggingFaceTB/SmolLM2-135M-Instruct").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str(), id.file.as_deref()),
            ("HuggingFaceTB/SmolLM2-135M-Instruct", "main", None)
        );
        let id = HubId::parse("org/name@v1.0/sub/model.gguf").unwrap();
        assert_eq!(
            (id.repo.as_str(), id.revision.as_str(), id.file.as_deref()),
            ("org/name", "v1.0", Some("sub/model.gguf"))
        );
        assert_eq!(id.to_string(), "org/name@v1.0/sub/model.gguf");
        for bad in [
            "name",
            "/abs/path",
            "./org/name",
            "org/",
            "org//x",
            "../x/y",
            "org/name/../x",
            "a b/c",
            "models/x.gguf",
        ] {
            assert_eq!(HubId::parse(bad), None, "{bad}");
        }
    }
}

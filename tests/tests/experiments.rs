//! Experiment files, end to end: every file in `tests/experiments/bad/` fails validation with the
//! error its `.expected` sibling describes, and a good experiment runs, resumes and re-runs.
//!
//! `.expected` format: the first line is the error's exact first line (`file:line:col: message`,
//! paths relative to `tests/experiments/`); every further non-empty line must occur somewhere in
//! the rest of the error (the hint).

use std::path::{Path, PathBuf};

use strata_core::experiment::Experiment;
use strata_core::progress::Silent;
use strata_core::run::{RunOptions, run_experiment};
use strata_core::{AnalysisStatus, Backend};
use strata_plugins as _;

fn experiments_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("experiments")
}

/// The error of loading `path`, with the experiments folder's prefix removed from paths.
fn load_error(path: &Path) -> Result<String, String> {
    match Experiment::load(path) {
        Ok(_) => Err("loaded without an error".into()),
        Err(e) if !e.is_input_error() => Err(format!("not an input error: {e}")),
        Err(e) => Ok(e
            .to_string()
            .replace(&format!("{}/", experiments_dir().display()), "")),
    }
}

#[test]
fn bad_experiments_fail_with_the_expected_errors() {
    let bad = experiments_dir().join("bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 5,
        "too few bad experiments in {}",
        bad.display()
    );
    let mut failures = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy();
        let error = match load_error(path) {
            Ok(error) => error,
            Err(problem) => {
                failures.push(format!("{name}: {problem}"));
                continue;
            }
        };
        let expected_path = path.with_extension("expected");
        let Ok(expected) = std::fs::read_to_string(&expected_path) else {
            failures.push(format!(
                "{name}: no {}; the error is:\n{error}",
                expected_path.display()
            ));
            continue;
        };
        let mut want = expected.lines();
        let first = want.next().unwrap_or_default();
        if error.lines().next() != Some(first) {
            failures.push(format!("{name}:\n   got: {error}\n  want: {first}"));
        }
        for line in want.filter(|l| !l.trim().is_empty()) {
            if !error.contains(line) {
                failures.push(format!(
                    "{name}:\n   got: {error}\n  want it to contain: {line}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// A good experiment on the tiny Llama fixture (with the byte-level test tokenizer): it runs,
/// a second run skips both analyses, `force` runs them again with the same result.
#[test]
fn good_experiment_runs_resumes_and_reruns() {
    let dir = tempfile::tempdir().unwrap();
    let model = strata_tests::tiny_dir("llama");
    let tokenizer = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/byte-tokenizer.json");
    std::fs::write(
        dir.path().join("texts.jsonl"),
        "{\"text\": \"The quick brown fox\"}\n{\"text\": \"jumps over the lazy dog\"}\n",
    )
    .unwrap();
    let text = format!(
        "[run]\nname = \"tiny\"\nseed = 1\n\n\
         [[model]]\nid = \"tiny\"\nsource = {model:?}\ntokenizer = {tokenizer:?}\n\n\
         [[data]]\nid = \"texts\"\nkind = \"text\"\npath = \"texts.jsonl\"\nmax_tokens = 8\n\n\
         [[analysis]]\nkind = \"residual-norms\"\nmodels = [\"tiny\"]\ndata = \"texts\"\n\n\
         [[analysis]]\nkind = \"residual-norms\"\nmodels = [\"tiny\"]\ndata = \"texts\"\npositions = \"last\"\n",
        model = model.display().to_string(),
        tokenizer = tokenizer.display().to_string(),
    );
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, &text).unwrap();
    let exp = Experiment::load(&path).unwrap();
    assert_eq!(exp.run.backend, Backend::Flex);
    let run = |force: bool| {
        run_experiment(
            &exp,
            &RunOptions {
                force,
                progress: &Silent,
            },
        )
        .unwrap()
    };

    let first = run(false);
    let out = dir.path().join("runs/tiny");
    assert_eq!(first.dir, out);
    for a in &first.manifest.analyses {
        assert!(
            matches!(a.status, AnalysisStatus::Completed { .. }),
            "{a:?}"
        );
    }
    for file in [
        "manifest.json",
        "index.md",
        "1-residual-norms/report.json",
        "1-residual-norms/index.md",
        "1-residual-norms/complete.json",
        "2-residual-norms/report.json",
    ] {
        assert!(out.join(file).is_file(), "{file}");
    }
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(manifest["experiment"]["text"], text.as_str());
    assert_eq!(manifest["backend"], "flex");
    let files = manifest["models"][0]["files"].as_array().unwrap();
    assert!(
        files
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("model.safetensors"))
    );
    assert!(
        files
            .iter()
            .any(|f| f["path"].as_str().unwrap().ends_with("byte-tokenizer.json"))
    );
    assert!(
        files
            .iter()
            .all(|f| f["sha256"].as_str().unwrap().len() == 64)
    );
    let report = std::fs::read_to_string(out.join("1-residual-norms/report.json")).unwrap();

    let second = run(false);
    assert!(
        second
            .manifest
            .analyses
            .iter()
            .all(|a| a.status == AnalysisStatus::Skipped)
    );

    let third = run(true);
    assert!(
        third
            .manifest
            .analyses
            .iter()
            .all(|a| matches!(a.status, AnalysisStatus::Completed { .. }))
    );
    assert_eq!(
        std::fs::read_to_string(out.join("1-residual-norms/report.json")).unwrap(),
        report
    );
}

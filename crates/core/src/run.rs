//! Running an experiment: every analysis in file order, each into its own folder, resumable.
//!
//! Layout of `<out>/<name>/`:
//!
//! ```text
//! manifest.json            what ran, on what, with which files (see `manifest`)
//! index.md                 one line per analysis, linking its index.md
//! <index>-<kind>/          per analysis (index 1-based, in file order)
//!     report.json, *.csv, *.svg, index.md
//!     complete.json        written last: the analysis finished with these inputs
//!     scratch/             the analysis' own cache (kept across runs)
//! ```
//!
//! An analysis is skipped when its `complete.json` records the same *inputs hash* — SHA-256 over
//! its kind, index, canonical parameters, the ids and file hashes of its models, its data set's
//! settings and file hash, the seed and the backend — and every file it lists still exists. A
//! killed run therefore resumes at the first incomplete analysis; `force` re-runs everything.
//! Models are loaded on first use, so a fully complete re-run loads none (their files are only
//! opened and hashed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::analysis::Context;
use crate::backend::Backend;
use crate::data::Dataset;
use crate::error::{Error, Result};
use crate::experiment::{AnalysisSpec, Experiment, ModelSpec};
use crate::manifest::{
    AnalysisRecord, AnalysisStatus, DataRecord, ExperimentRecord, FileRecord, GIT_COMMIT, Manifest,
    ModelRecord, VERSION, now_rfc3339, sha256_hex,
};
use crate::output::write_atomic;
use crate::progress::Progress;
use crate::registry::{LoadedModel, load_model_files};
use crate::render::{md_cell, render_report};
use crate::report::Report;
use crate::source::ModelFiles;

/// How to run.
pub struct RunOptions<'a> {
    /// Re-run analyses even when their outputs are complete and their inputs unchanged.
    pub force: bool,
    /// Progress reporting.
    pub progress: &'a dyn Progress,
}

/// What a successful run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// `<out>/<name>`.
    pub dir: PathBuf,
    /// The manifest written to `<dir>/manifest.json` (every analysis' status is in it).
    pub manifest: Manifest,
}

impl std::fmt::Display for RunSummary {
    /// One line per analysis with its status, then where the results are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for a in &self.manifest.analyses {
            writeln!(f, "{:>3}. {:<24} {}", a.index, a.kind, a.status)?;
        }
        write!(f, "results: {}", self.dir.join("index.md").display())
    }
}

/// `complete.json`: an analysis finished with these inputs and wrote these files.
#[derive(Debug, Serialize, Deserialize)]
struct Completion {
    inputs_hash: String,
    kind: String,
    index: usize,
    completed_at: String,
    seconds: f64,
    /// Files of the analysis folder it wrote, by name.
    files: Vec<String>,
}

const COMPLETE: &str = "complete.json";

/// Runs `exp`: see the module documentation. On failure the manifest and the run's index still
/// record what completed and which analysis failed, and the error names that analysis.
pub fn run_experiment(exp: &Experiment, options: &RunOptions<'_>) -> Result<RunSummary> {
    let started_at = now_rfc3339();
    let dir = exp.run_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let mut runner = Runner::new(exp, options)?;
    let mut records: Vec<AnalysisRecord> = exp
        .analyses
        .iter()
        .map(|a| AnalysisRecord {
            index: a.index,
            kind: a.kind.clone(),
            dir: a.dir_name(),
            params: a.params.clone(),
            inputs_hash: runner.inputs_hash(a),
            status: AnalysisStatus::NotRun,
        })
        .collect();
    let mut summaries = vec![String::new(); records.len()];
    let task = options
        .progress
        .task(&format!("run {}", exp.run.name), Some(records.len() as u64));
    let mut failure = None;
    for (i, spec) in exp.analyses.iter().enumerate() {
        let record = &mut records[i];
        match runner.analysis(spec, &dir.join(&record.dir), &record.inputs_hash) {
            Ok((status, summary)) => {
                record.status = status;
                summaries[i] = summary;
            }
            Err(e) => {
                let e = e.context(format!("analysis {} `{}`", spec.index, spec.kind));
                record.status = AnalysisStatus::Failed {
                    error: e.to_string(),
                };
                summaries[i] = e.to_string();
                failure = Some(e);
                break;
            }
        }
        task.inc(1);
    }
    task.finish();
    let manifest = Manifest {
        strata_version: VERSION.into(),
        git_commit: GIT_COMMIT.into(),
        experiment: ExperimentRecord {
            path: exp.path.display().to_string(),
            sha256: exp.sha256.clone(),
            text: exp.text.clone(),
        },
        name: exp.run.name.clone(),
        backend: exp.run.backend,
        device: format!("{:?}", runner.device),
        seed: exp.run.seed,
        started_at,
        finished_at: now_rfc3339(),
        models: runner
            .model_inputs
            .values()
            .map(|m| m.record.clone())
            .collect(),
        data: runner.data_inputs.values().cloned().collect(),
        analyses: records,
    };
    let json = serde_json::to_string_pretty(&manifest).expect("the manifest is plain data");
    write_atomic(&dir.join("manifest.json"), format!("{json}\n").as_bytes())?;
    write_atomic(
        &dir.join("index.md"),
        run_markdown(&manifest, &summaries).as_bytes(),
    )?;
    match failure {
        Some(e) => Err(e),
        None => Ok(RunSummary { dir, manifest }),
    }
}

/// A model's files, opened (not loaded) and hashed.
struct ModelInput<'a> {
    spec: &'a ModelSpec,
    /// Taken when the model is loaded.
    files: Option<ModelFiles>,
    record: ModelRecord,
}

/// The state of one run: inputs hashed up front, models and data sets loaded on first use.
struct Runner<'a> {
    exp: &'a Experiment,
    options: &'a RunOptions<'a>,
    device: Device,
    model_inputs: BTreeMap<String, ModelInput<'a>>,
    data_inputs: BTreeMap<String, DataRecord>,
    models: BTreeMap<String, LoadedModel>,
    data: BTreeMap<String, Dataset>,
}

impl<'a> Runner<'a> {
    /// Opens and hashes every model and data file an analysis uses.
    fn new(exp: &'a Experiment, options: &'a RunOptions<'a>) -> Result<Self> {
        let used_models: std::collections::BTreeSet<&str> = exp
            .analyses
            .iter()
            .flat_map(|a| a.models.iter().map(String::as_str))
            .collect();
        let used_data: std::collections::BTreeSet<&str> = exp
            .analyses
            .iter()
            .filter_map(|a| a.data.as_deref())
            .collect();
        let mut model_inputs = BTreeMap::new();
        for spec in exp
            .models
            .iter()
            .filter(|m| used_models.contains(m.id.as_str()))
        {
            let files = ModelFiles::open(&spec.source)
                .map_err(|e| e.context(format!("model `{}`", spec.id)))?;
            let paths: Vec<&PathBuf> = files.files.iter().chain(&spec.tokenizer).collect();
            let task = options.progress.task(
                &format!("hashing model `{}`", spec.id),
                Some(paths.len() as u64),
            );
            let hashed = paths
                .into_iter()
                .map(|p| {
                    let record = FileRecord::hash(p);
                    task.inc(1);
                    record
                })
                .collect::<Result<Vec<_>>>()?;
            task.finish();
            let record = ModelRecord {
                id: spec.id.clone(),
                source: spec.source.to_string(),
                files: hashed,
            };
            let input = ModelInput {
                spec,
                files: Some(files),
                record,
            };
            model_inputs.insert(spec.id.clone(), input);
        }
        let data_inputs = exp
            .data
            .iter()
            .filter(|d| used_data.contains(d.id.as_str()))
            .map(|d| {
                let record = DataRecord {
                    id: d.id.clone(),
                    kind: d.kind,
                    file: FileRecord::hash(&d.path)?,
                };
                Ok((d.id.clone(), record))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            exp,
            options,
            device: exp.run.backend.device(),
            model_inputs,
            data_inputs,
            models: BTreeMap::new(),
            data: BTreeMap::new(),
        })
    }

    /// SHA-256 of everything `spec`'s result depends on.
    fn inputs_hash(&self, spec: &AnalysisSpec) -> String {
        #[derive(Serialize)]
        struct Inputs<'s> {
            kind: &'s str,
            index: usize,
            params: &'s str,
            models: Vec<(&'s str, Vec<&'s str>)>,
            data: Option<DataInputs<'s>>,
            seed: u64,
            backend: Backend,
        }
        /// Not the path: moving a file does not change a result.
        #[derive(Serialize)]
        struct DataInputs<'s> {
            id: &'s str,
            kind: crate::data::DataKind,
            field: &'s str,
            max_tokens: Option<usize>,
            limit_tokens: Option<usize>,
            sha256: &'s str,
        }
        let inputs = Inputs {
            kind: &spec.kind,
            index: spec.index,
            params: &spec.params,
            models: spec
                .models
                .iter()
                .map(|id| {
                    let files = &self.model_inputs[id].record.files;
                    (
                        id.as_str(),
                        files.iter().map(|f| f.sha256.as_str()).collect(),
                    )
                })
                .collect(),
            data: spec.data.as_ref().map(|id| {
                let d = self.exp.dataset(id).expect("validated data id");
                DataInputs {
                    id,
                    kind: d.kind,
                    field: &d.field,
                    max_tokens: d.max_tokens,
                    limit_tokens: d.limit_tokens,
                    sha256: &self.data_inputs[id].file.sha256,
                }
            }),
            seed: self.exp.run.seed,
            backend: self.exp.run.backend,
        };
        sha256_hex(
            serde_json::to_string(&inputs)
                .expect("plain data")
                .as_bytes(),
        )
    }

    /// Runs one analysis into `dir` unless it is complete with `inputs_hash`; returns its status
    /// and summary.
    fn analysis(
        &mut self,
        spec: &AnalysisSpec,
        dir: &Path,
        inputs_hash: &str,
    ) -> Result<(AnalysisStatus, String)> {
        if !self.options.force
            && let Some(summary) = completed_summary(dir, inputs_hash)
        {
            return Ok((AnalysisStatus::Skipped, summary));
        }
        let start = Instant::now();
        clear_outputs(dir)?;
        let scratch = dir.join("scratch");
        std::fs::create_dir_all(&scratch).map_err(|e| Error::io(&scratch, e))?;
        self.load_inputs(spec)?;
        let mut rng = ChaCha8Rng::seed_from_u64(self.exp.run.seed);
        rng.set_stream(spec.index as u64);
        let mut ctx = Context {
            models: spec.models.iter().map(|id| &self.models[id]).collect(),
            data: spec.data.as_ref().map(|id| &self.data[id]),
            device: &self.device,
            rng,
            progress: self.options.progress,
            scratch,
        };
        let mut report = spec.analysis.run(&mut ctx)?;
        if report.analysis.is_empty() {
            report.analysis = spec.kind.clone();
        }
        check_finite(&report, spec.analysis.non_finite_scalars())?;
        let files = render_report(&report, dir)?;
        let seconds = start.elapsed().as_secs_f64();
        let completion = Completion {
            inputs_hash: inputs_hash.into(),
            kind: spec.kind.clone(),
            index: spec.index,
            completed_at: now_rfc3339(),
            seconds,
            files: files
                .iter()
                .filter_map(|p| p.file_name()?.to_str().map(String::from))
                .collect(),
        };
        let json = serde_json::to_string_pretty(&completion).expect("plain data");
        write_atomic(&dir.join(COMPLETE), format!("{json}\n").as_bytes())?;
        Ok((AnalysisStatus::Completed { seconds }, report.summary))
    }

    /// Loads the models and data set `spec` uses that are not loaded yet.
    fn load_inputs(&mut self, spec: &AnalysisSpec) -> Result<()> {
        for id in &spec.models {
            if self.models.contains_key(id) {
                continue;
            }
            let input = self.model_inputs.get_mut(id).expect("validated model id");
            let files = input.files.take().expect("a model is loaded once");
            let task = self
                .options
                .progress
                .task(&format!("loading model `{id}`"), None);
            let mut model = load_model_files(id, &input.spec.source, files, &self.device)?;
            if let Some(tokenizer) = &input.spec.tokenizer {
                model.set_tokenizer(tokenizer)?;
            }
            task.finish();
            self.models.insert(id.clone(), model);
        }
        if let Some(id) = &spec.data
            && !self.data.contains_key(id)
        {
            let dataset = self.exp.dataset(id).expect("validated data id").load()?;
            self.data.insert(id.clone(), dataset);
        }
        Ok(())
    }
}

/// The summary of the analysis in `dir` if it completed with `inputs_hash` and its files are all
/// still there.
fn completed_summary(dir: &Path, inputs_hash: &str) -> Option<String> {
    let text = std::fs::read_to_string(dir.join(COMPLETE)).ok()?;
    let done: Completion = serde_json::from_str(&text).ok()?;
    if done.inputs_hash != inputs_hash || !done.files.iter().all(|f| dir.join(f).is_file()) {
        return None;
    }
    let report = std::fs::read_to_string(dir.join("report.json")).ok()?;
    let report: serde_json::Value = serde_json::from_str(&report).ok()?;
    Some(report["summary"].as_str().unwrap_or_default().to_string())
}

/// Prepares `dir` for a fresh result: removes `complete.json` first, then every other file at
/// its top level (stale tables and figures); sub-folders (`scratch/`) are kept.
fn clear_outputs(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let complete = dir.join(COMPLETE);
    if complete.exists() {
        std::fs::remove_file(&complete).map_err(|e| Error::io(&complete, e))?;
    }
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        if path.is_file() {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}

/// A NaN or infinite scalar is a numerical failure unless the analysis documents it.
fn check_finite(report: &Report, allowed: &[&str]) -> Result<()> {
    match report
        .scalars
        .iter()
        .find(|s| !s.value.is_finite() && !allowed.iter().any(|a| scalar_matches(a, &s.name)))
    {
        Some(s) => Err(Error::Numeric(format!(
            "analysis `{}` reported scalar `{}` = {:?}",
            report.analysis, s.name, s.value
        ))),
        None => Ok(()),
    }
}

/// Whether scalar `name` is covered by `pattern`: the exact name, or `*.suffix` for the
/// per-model scalars `<model>.suffix`.
fn scalar_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .rsplit_once('.')
            .is_some_and(|(_, last)| last == suffix),
        None => pattern == name,
    }
}

/// The run's `index.md`.
fn run_markdown(manifest: &Manifest, summaries: &[String]) -> String {
    let mut md = format!("# {}\n\n", manifest.name);
    let _ = writeln!(
        md,
        "Experiment `{}` (SHA-256 `{}`), backend `{}` on `{}`, seed {}; Strata {} ({}).\n",
        manifest.experiment.path,
        &manifest.experiment.sha256[..12],
        manifest.backend,
        manifest.device,
        manifest.seed,
        manifest.strata_version,
        manifest.git_commit
    );
    let _ = writeln!(
        md,
        "Started {}, finished {}. Full record: [manifest.json](manifest.json)\n",
        manifest.started_at, manifest.finished_at
    );
    md.push_str("| # | analysis | status | summary |\n| ---: | --- | --- | --- |\n");
    for (a, summary) in manifest.analyses.iter().zip(summaries) {
        let link = match a.status {
            AnalysisStatus::Completed { .. } | AnalysisStatus::Skipped => {
                format!("[{}]({}/index.md)", a.kind, a.dir)
            }
            _ => a.kind.clone(),
        };
        let _ = writeln!(
            md,
            "| {} | {link} | {} | {} |",
            a.index,
            a.status,
            md_cell(summary)
        );
    }
    md
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use rand::Rng;

    use super::*;
    use crate::analysis::Analysis;
    use crate::experiment::RunSettings;
    use crate::progress::Silent;
    use crate::render::report_json;
    use crate::report::{Column, Table};

    /// Counts its runs; reports a random draw (to check seeding), a table, optionally a NaN or
    /// an error.
    struct Fake {
        runs: Arc<AtomicUsize>,
        fail: bool,
        nan: bool,
    }

    impl Analysis for Fake {
        fn run(&self, ctx: &mut Context<'_>) -> Result<Report> {
            self.runs.fetch_add(1, Ordering::SeqCst);
            assert!(ctx.scratch.is_dir());
            if self.fail {
                return Err(Error::analysis("fake", "asked to fail"));
            }
            let mut r = Report::new("fake");
            r.summary = "a | fake".into();
            r.scalar("draw", ctx.rng.random::<f64>(), None, "");
            r.scalar("maybe", if self.nan { f64::NAN } else { 1.0 }, None, "");
            r.tables.push(Table {
                name: "t".into(),
                columns: vec![Column::int("i", vec![1, 2])],
            });
            Ok(r)
        }
    }

    struct Setup {
        _dir: tempfile::TempDir,
        exp: Experiment,
        runs: Vec<Arc<AtomicUsize>>,
    }

    fn setup(n: usize) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let runs: Vec<_> = (0..n).map(|_| Arc::new(AtomicUsize::new(0))).collect();
        let analyses = runs
            .iter()
            .enumerate()
            .map(|(i, counter)| AnalysisSpec {
                index: i + 1,
                kind: "fake".into(),
                models: vec![],
                data: None,
                analysis: Box::new(Fake {
                    runs: counter.clone(),
                    fail: false,
                    nan: false,
                }),
                params: "{}".into(),
            })
            .collect();
        let exp = Experiment {
            path: dir.path().join("exp.toml"),
            text: "# fake".into(),
            sha256: sha256_hex(b"# fake"),
            run: RunSettings {
                name: "demo".into(),
                backend: Backend::Flex,
                seed: 3,
                out_dir: dir.path().join("runs"),
            },
            models: vec![],
            data: vec![],
            analyses,
        };
        Setup {
            _dir: dir,
            exp,
            runs,
        }
    }

    fn written_report(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("report.json")).unwrap()
    }

    fn run(exp: &Experiment, force: bool) -> Result<RunSummary> {
        run_experiment(
            exp,
            &RunOptions {
                force,
                progress: &Silent,
            },
        )
    }

    fn counts(s: &Setup) -> Vec<usize> {
        s.runs.iter().map(|r| r.load(Ordering::SeqCst)).collect()
    }

    /// The statuses, with times blanked.
    fn statuses(summary: &RunSummary) -> Vec<String> {
        summary
            .manifest
            .analyses
            .iter()
            .map(|a| match a.status {
                AnalysisStatus::Completed { .. } => "completed".into(),
                ref other => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn runs_renders_and_skips_complete_analyses() {
        let s = setup(2);
        let summary = run(&s.exp, false).unwrap();
        assert_eq!(statuses(&summary), ["completed", "completed"]);
        let run_dir = s.exp.run_dir();
        for name in [
            "manifest.json",
            "index.md",
            "1-fake/report.json",
            "1-fake/t.csv",
            "1-fake/index.md",
            "1-fake/complete.json",
            "2-fake/complete.json",
        ] {
            assert!(run_dir.join(name).is_file(), "{name}");
        }
        let first = written_report(&run_dir.join("1-fake"));

        let summary = run(&s.exp, false).unwrap();
        assert_eq!(counts(&s), [1, 1]);
        assert_eq!(statuses(&summary), ["skipped (complete and unchanged)"; 2]);
        let index = std::fs::read_to_string(run_dir.join("index.md")).unwrap();
        assert!(
            index.contains(
                "| 1 | [fake](1-fake/index.md) | skipped (complete and unchanged) | a \\| fake |"
            ),
            "{index}"
        );

        run(&s.exp, true).unwrap();
        assert_eq!(counts(&s), [2, 2]);
        assert_eq!(
            written_report(&run_dir.join("1-fake")),
            first,
            "same seed, same result"
        );
    }

    #[test]
    fn analyses_get_distinct_reproducible_streams() {
        let s = setup(2);
        run(&s.exp, false).unwrap();
        let draw = |i: usize| {
            let v: serde_json::Value =
                serde_json::from_str(&written_report(&s.exp.run_dir().join(format!("{i}-fake"))))
                    .unwrap();
            v["scalars"][0]["value"].as_f64().unwrap()
        };
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn a_failure_keeps_finished_work_and_resumes_there() {
        let mut s = setup(3);
        let fail = |s: &mut Setup, on: bool| {
            s.exp.analyses[1].analysis = Box::new(Fake {
                runs: s.runs[1].clone(),
                fail: on,
                nan: false,
            });
        };
        fail(&mut s, true);
        let err = run(&s.exp, false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "analysis 2 `fake`: analysis `fake`: asked to fail"
        );
        assert!(!err.is_input_error());
        let manifest: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(s.exp.run_dir().join("manifest.json")).unwrap(),
        )
        .unwrap();
        let status: Vec<_> = manifest["analyses"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["status"].as_str().unwrap())
            .collect();
        assert_eq!(status, ["completed", "failed", "not-run"]);
        assert_eq!(counts(&s), [1, 1, 0]);

        fail(&mut s, false);
        let summary = run(&s.exp, false).unwrap();
        assert_eq!(counts(&s), [1, 2, 1]);
        assert_eq!(
            statuses(&summary),
            ["skipped (complete and unchanged)", "completed", "completed"]
        );
    }

    #[test]
    fn changed_inputs_or_missing_outputs_rerun() {
        let mut s = setup(1);
        run(&s.exp, false).unwrap();
        std::fs::remove_file(s.exp.run_dir().join("1-fake/t.csv")).unwrap();
        run(&s.exp, false).unwrap();
        assert_eq!(counts(&s), [2]);
        s.exp.analyses[0].params = "{\"x\"=1}".into();
        run(&s.exp, false).unwrap();
        assert_eq!(counts(&s), [3]);
        s.exp.run.seed = 4;
        run(&s.exp, false).unwrap();
        assert_eq!(counts(&s), [4]);
        run(&s.exp, false).unwrap();
        assert_eq!(counts(&s), [4]);
    }

    #[test]
    fn stale_outputs_are_removed_before_a_rerun() {
        let s = setup(1);
        let dir = s.exp.run_dir().join("1-fake");
        std::fs::create_dir_all(dir.join("scratch")).unwrap();
        std::fs::write(dir.join("old.csv"), "stale").unwrap();
        std::fs::write(dir.join("scratch/cache.bin"), "kept").unwrap();
        run(&s.exp, false).unwrap();
        assert!(!dir.join("old.csv").exists());
        assert!(dir.join("scratch/cache.bin").exists());
    }

    #[test]
    fn undocumented_nan_scalars_fail() {
        let mut s = setup(1);
        s.exp.analyses[0].analysis = Box::new(Fake {
            runs: s.runs[0].clone(),
            fail: false,
            nan: true,
        });
        let err = run(&s.exp, false).unwrap_err().to_string();
        assert_eq!(
            err,
            "analysis 1 `fake`: numerical failure: analysis `fake` reported scalar `maybe` = NaN"
        );
        assert!(!s.exp.run_dir().join("1-fake/complete.json").exists());
    }

    #[test]
    fn experiments_from_files_run() {
        let dir = tempfile::tempdir().unwrap();
        let exp = crate::experiment::tests::parse_in(
            dir.path(),
            "[run]\nname = \"x\"\n[[data]]\nid = \"w\"\nkind = \"text\"\npath = \"wiki.jsonl\"\n\
             [[analysis]]\nkind = \"test-constant\"\ndata = \"w\"\nvalue = 4.0\n",
        )
        .unwrap();
        let summary = run(&exp, false).unwrap();
        assert_eq!(summary.dir, dir.path().join("runs/x"));
        assert_eq!(summary.manifest.data.len(), 1);
        assert_eq!(
            summary.manifest.data[0].file.sha256,
            sha256_hex(b"{\"text\": \"hello\"}\n")
        );
        let report: Report =
            serde_json::from_str(&written_report(&summary.dir.join("1-test-constant"))).unwrap();
        assert_eq!(report.get_scalar("value"), Some(4.0));
        assert_eq!(
            report_json(&report).unwrap(),
            written_report(&summary.dir.join("1-test-constant"))
        );
    }
}

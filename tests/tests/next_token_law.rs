//! The `next-token-law` analysis end to end on the tiny Llama fixture: against scikit-learn on
//! the same hidden states (`tests/assets/next-token-law/`, made by the script there), and every
//! option combination through the experiment runner down to the report files.

use strata_plugins as _;

use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use strata_core::data::{DataKind, Dataset};
use strata_core::progress::Silent;
use strata_core::report::Values;
use strata_core::{AnalysisStatus, Backend, Context, Experiment, ParamsInput, Report, RunOptions};

fn assets() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets")
}

fn tiny_llama() -> strata_core::LoadedModel {
    let mut loaded = strata_tests::parity::load("llama", Backend::Flex);
    loaded
        .set_tokenizer(&assets().join("byte-tokenizer.json"))
        .unwrap();
    loaded
}

fn texts() -> Dataset {
    let path = assets().join("next-token-law/texts.txt");
    Dataset {
        id: "texts".into(),
        kind: DataKind::Text,
        field: "text".into(),
        max_tokens: None,
        limit_tokens: None,
        records: Dataset::read_records(&path).unwrap(),
        path,
    }
}

/// Runs `next-token-law` with the parameter table `params` on one model.
fn try_run(
    model: &strata_core::LoadedModel,
    data: &Dataset,
    params: &str,
) -> strata_core::Result<Report> {
    let analysis = (strata_core::registry::find_analysis("next-token-law")?.build)(
        ParamsInput::from_str(params)?,
    )?;
    let scratch = tempfile::tempdir().unwrap();
    let device = Backend::Flex.device();
    let mut ctx = Context {
        models: vec![model],
        data: Some(data),
        device: &device,
        rng: ChaCha8Rng::seed_from_u64(0),
        progress: &Silent,
        scratch: scratch.path().to_path_buf(),
    };
    analysis.run(&mut ctx)
}

fn run(model: &strata_core::LoadedModel, data: &Dataset, params: &str) -> Report {
    try_run(model, data, params).unwrap_or_else(|e| panic!("`{params}`: {e}"))
}

fn floats<'a>(report: &'a Report, column: &str) -> &'a [f64] {
    match &report.table("pr").unwrap().column(column).unwrap().values {
        Values::Float(v) => v,
        other => panic!("`{column}` is not a float column: {other:?}"),
    }
}

fn scalar(report: &Report, name: &str) -> f64 {
    report
        .scalars
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no scalar `{name}`"))
        .value
}

fn close(what: &str, got: f64, want: f64, rtol: f64) {
    assert!(
        (got - want).abs() <= rtol * want.abs().max(1e-12),
        "{what}: {got} vs scikit-learn {want} (|Δ| {:.2e})",
        (got - want).abs()
    );
}

#[test]
fn matches_scikit_learn_on_the_same_hidden_states() {
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(assets().join("next-token-law/expected.json")).unwrap(),
    )
    .unwrap();
    let model = tiny_llama();
    let data = texts();
    let cases = [
        ("fresh-norm/next", ""),
        ("standardize/next", "normalize = \"standardize\""),
        ("none/next", "normalize = \"none\""),
        ("fresh-norm/previous", "token = \"previous\""),
        ("fresh-norm/current", "token = \"current\""),
        ("fresh-norm/next-next", "token = \"next-next\""),
        ("fresh-norm/next/onehot", "target = \"onehot\""),
        ("fresh-norm/next/blocks", "layer_indexing = \"blocks\""),
    ];
    for (name, params) in cases {
        let want = &expected["cases"][name];
        // Batched (right-padded) runs must give the same numbers as one text at a time.
        for batch in ["", "\nbatch_size = 5"] {
            let report = run(&model, &data, &format!("{params}{batch}"));
            let what = format!("{name}{}", batch.replace('\n', " "));
            assert_eq!(
                scalar(&report, "tiny.n_tokens"),
                want["n"].as_f64().unwrap(),
                "{what}: examples"
            );
            let pr = floats(&report, "pr");
            let want_pr: Vec<f64> = want["pr"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            assert_eq!(pr.len(), want_pr.len());
            // Strata's float32 forward vs the same float32 states read back: only the f64
            // solves differ (eigen pseudo-inverse vs LAPACK gelsd).
            for (k, (g, w)) in pr.iter().zip(&want_pr).enumerate() {
                close(&format!("{what}: PR_{k}"), *g, *w, 1e-6);
            }
            for key in ["slope", "intercept", "pearson_r", "pearson_p"] {
                close(
                    &format!("{what}: {key}"),
                    scalar(&report, &format!("tiny.{key}")),
                    want[key].as_f64().unwrap(),
                    1e-5,
                );
            }
            let rho = scalar(&report, "tiny.rho");
            close(
                &format!("{what}: rho"),
                rho,
                10f64.powf(want["slope"].as_f64().unwrap()),
                1e-5,
            );
            close(
                &format!("{what}: pr_ratio"),
                scalar(&report, "tiny.pr_ratio"),
                want_pr[3] / want_pr[1],
                1e-6,
            );
        }
    }
}

#[test]
fn too_little_text_and_encoders_are_clear_errors() {
    let model = tiny_llama();
    let data = texts();
    let err = try_run(&model, &data, "limit_tokens = 30")
        .unwrap_err()
        .to_string();
    assert!(err.contains("examples for 64 features"), "{err}");

    let bad = (strata_core::registry::find_analysis("next-token-law")
        .unwrap()
        .build)(ParamsInput::from_str("token = \"after\"").unwrap());
    let err = bad.err().unwrap().to_string();
    assert!(
        err.contains("<params>:1:9") && err.contains("next-next"),
        "{err}"
    );
}

/// Every combination of normalize × target × token × layer_indexing runs through the
/// experiment runner and writes `report.json`, `pr.csv`, `log10_pr.svg` and `index.md`.
#[test]
fn every_option_combination_runs_and_writes_the_report_files() {
    let dir = tempfile::tempdir().unwrap();
    let model = strata_tests::tiny_dir("llama");
    let tokenizer = assets().join("byte-tokenizer.json");
    let data = strata_tests::workspace_root().join("data/wikitext103_test.articles.jsonl");
    let mut text = format!(
        "[run]\nname = \"ntl\"\nseed = 3\n\n\
         [[model]]\nid = \"tiny\"\nsource = {model:?}\ntokenizer = {tokenizer:?}\n\n\
         [[data]]\nid = \"wiki\"\nkind = \"text\"\npath = {data:?}\nfield = \"text\"\n\
         max_tokens = 48\nlimit_tokens = 400\n",
        model = model.display().to_string(),
        tokenizer = tokenizer.display().to_string(),
        data = data.display().to_string(),
    );
    let mut n = 0;
    for normalize in ["fresh-norm", "standardize", "none"] {
        for target in ["token-id", "onehot"] {
            for token in ["previous", "current", "next", "next-next"] {
                for indexing in ["hf-compatible", "blocks"] {
                    text.push_str(&format!(
                        "\n[[analysis]]\nkind = \"next-token-law\"\nmodels = [\"tiny\"]\n\
                         data = \"wiki\"\nnormalize = \"{normalize}\"\ntarget = \"{target}\"\n\
                         token = \"{token}\"\nlayer_indexing = \"{indexing}\"\nbatch_size = 4\n"
                    ));
                    n += 1;
                }
            }
        }
    }
    assert_eq!(n, 48);
    let path = dir.path().join("exp.toml");
    std::fs::write(&path, &text).unwrap();
    let exp = Experiment::load(&path).unwrap();
    let summary = strata_core::run_experiment(
        &exp,
        &RunOptions {
            force: false,
            progress: &Silent,
        },
    )
    .unwrap();
    assert_eq!(summary.manifest.analyses.len(), 48);
    for a in &summary.manifest.analyses {
        assert!(
            matches!(a.status, AnalysisStatus::Completed { .. }),
            "{a:?}"
        );
        let folder = summary.dir.join(format!("{}-next-token-law", a.index));
        for file in ["report.json", "pr.csv", "log10_pr.svg", "index.md"] {
            assert!(
                folder.join(file).is_file(),
                "{}",
                folder.join(file).display()
            );
        }
        let report: Report =
            serde_json::from_str(&std::fs::read_to_string(folder.join("report.json")).unwrap())
                .unwrap();
        let pr = floats(&report, "pr");
        assert_eq!(pr.len(), 4, "entries 0..=L");
        assert!(pr.iter().all(|v| (0.0..=1.0).contains(v)), "{pr:?}");
        let csv = std::fs::read_to_string(folder.join("pr.csv")).unwrap();
        assert!(
            csv.starts_with("model,layer,site,in_fit,pr,log10_pr,rank"),
            "{csv}"
        );
    }
    check_csv_is_the_table(&summary.dir.join("1-next-token-law"));
}

/// The CSV holds the report's numbers (the table, not a re-computation).
fn check_csv_is_the_table(folder: &Path) {
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(folder.join("report.json")).unwrap())
            .unwrap();
    let csv = std::fs::read_to_string(folder.join("pr.csv")).unwrap();
    let pr_col: Vec<f64> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(4).unwrap().parse().unwrap())
        .collect();
    for (a, b) in pr_col.iter().zip(floats(&report, "pr")) {
        assert!((a - b).abs() <= 1e-12 * b.abs(), "{a} vs {b}");
    }
}

fn load_with_bytes(arch: &str) -> strata_core::LoadedModel {
    let mut loaded = strata_tests::parity::load(arch, Backend::Flex);
    loaded
        .set_tokenizer(&assets().join("byte-tokenizer.json"))
        .unwrap();
    loaded
}

fn sites(report: &Report) -> Vec<String> {
    match &report.table("pr").unwrap().column("site").unwrap().values {
        Values::Text(v) => v.clone(),
        other => panic!("`site` is not a text column: {other:?}"),
    }
}

/// The law runs on every decoder family; `hf-compatible` reproduces HF's hidden-states list
/// (Mamba and RWKV have no embedding entry) and `blocks` is `[embed, block 1..L]` everywhere.
#[test]
fn runs_on_every_decoder_family_with_its_hidden_states_layout() {
    let data = texts();
    let pre_norm = ["embed", "resid_post.0", "resid_post.1", "final_norm"];
    let recurrent = ["resid_post.0", "resid_post.1", "resid_post.2", "final_norm"];
    let blocks = ["embed", "resid_post.0", "resid_post.1", "resid_post.2"];
    for (arch, hf) in [
        ("gpt2", pre_norm),
        ("gpt_neox", pre_norm),
        ("gemma3", pre_norm),
        ("mamba", recurrent),
        ("rwkv", recurrent),
    ] {
        let model = load_with_bytes(arch);
        for (params, want) in [("", hf), ("layer_indexing = \"blocks\"", blocks)] {
            let report = run(&model, &data, params);
            assert_eq!(sites(&report), want, "{arch} {params}");
            let pr = floats(&report, "pr");
            assert!(pr.iter().all(|v| *v > 0.0 && *v <= 1.0), "{arch}: {pr:?}");
            assert!(scalar(&report, "tiny.pearson_r").abs() <= 1.0);
        }
    }
    let bert = load_with_bytes("bert");
    let err = try_run(&bert, &data, "").unwrap_err().to_string();
    assert!(err.contains("bidirectional encoder"), "{err}");
}

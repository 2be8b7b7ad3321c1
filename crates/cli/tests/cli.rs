//! End-to-end runs of the `strata` binary.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn strata(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_strata"))
        .args(args)
        .env("XDG_RUNTIME_DIR", std::env::temp_dir())
        .output()
        .expect("the strata binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn tiny(arch: &str) -> PathBuf {
    strata_tests::tiny_dir(arch)
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn byte_tokenizer() -> String {
    repo()
        .join("tests/assets/byte-tokenizer.json")
        .display()
        .to_string()
}

#[test]
fn list_prints_registered_plugins_sorted() {
    let out = strata(&["list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let arch = text.find("Architectures:").unwrap();
    let analyses = text.find("Analyses:").unwrap();
    assert!(text[arch..analyses].contains("llama"));
    assert!(text[analyses..].contains("residual-norms"));
    assert!(text.contains("positions"), "parameters are listed:\n{text}");
}

/// `strata capture` writes every layer's `resid_post`, equal to the fixture's hidden states.
#[test]
fn capture_writes_every_layer_equal_to_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("acts.safetensors");
    let expected = strata_tests::read_safetensors(&tiny("llama").join("expected.safetensors"));
    let rows: Vec<String> = expected["input_ids"]
        .i64_rows()
        .iter()
        .map(|r| r.iter().map(i64::to_string).collect::<Vec<_>>().join(","))
        .collect();
    let model = tiny("llama");
    let out = strata(&[
        "capture",
        model.to_str().unwrap(),
        "--ids",
        &rows[0],
        "--ids",
        &rows[1],
        "--capture",
        "embed,resid_post,final_norm",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = strata_tests::read_safetensors(&out_file);
    let pairs = [
        ("embed", "hidden_states.0"),
        ("resid_post.0", "hidden_states.1"),
        ("resid_post.1", "hidden_states.2"),
        ("resid_post.2", "pre_final_norm"),
        ("final_norm", "hidden_states.3"),
    ];
    for (site, reference) in pairs {
        let g = &got[site];
        let e = &expected[reference];
        assert_eq!(g.shape, e.shape, "{site}");
        strata_tests::assert_close(site, g.f32(), e.f32(), &e.shape, 1e-4, 1e-4);
    }
    assert_eq!(got["lengths"].i64(), [12, 12]);
}

#[test]
fn generate_prints_only_the_continuation() {
    let model = tiny("llama");
    let args = [
        "generate",
        model.to_str().unwrap(),
        "--tokenizer",
        &byte_tokenizer(),
        "--prompt",
        "Hello",
        "--max-new-tokens",
        "6",
    ];
    let greedy = strata(&args);
    assert!(greedy.status.success(), "{}", stderr(&greedy));
    assert_eq!(
        stdout(&greedy),
        stdout(&strata(&args)),
        "greedy is deterministic"
    );
    let mut sampled = args.to_vec();
    sampled.extend(["--temperature", "0.8", "--seed", "5"]);
    let a = strata(&sampled);
    assert!(a.status.success(), "{}", stderr(&a));
    assert_eq!(
        stdout(&a),
        stdout(&strata(&sampled)),
        "seeded sampling is reproducible"
    );
}

#[test]
fn inspect_shows_the_architecture_and_file_hashes() {
    let model = tiny("qwen2");
    let out = strata(&["inspect", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("llama (model_type qwen2)"), "{text}");
    assert!(text.contains("sha256"), "{text}");
}

#[test]
fn a_missing_model_is_exit_code_2() {
    let out = strata(&["inspect", "/nonexistent/model"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("/nonexistent/model"));
}

/// Every bad experiment file fails validation and running with exit code 2, an error that names
/// the file, line and column, and nothing written.
#[test]
fn bad_experiments_exit_2_with_a_location_and_write_nothing() {
    let bad = repo().join("tests/experiments/bad");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 5, "at least five bad experiment files");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for cmd in ["validate", "run"] {
            let out = strata(
                &[cmd, file.to_str().unwrap(), "--quiet"][..if cmd == "run" { 3 } else { 2 }],
            );
            assert_eq!(out.status.code(), Some(2), "{cmd} {name}: {}", stderr(&out));
            let err = stderr(&out);
            let located = err.lines().any(|l| {
                l.split_once(&name).is_some_and(|(_, rest)| {
                    let mut parts = rest.trim_start_matches(':').split(':');
                    parts.next().is_some_and(|p| p.parse::<usize>().is_ok())
                        && parts.next().is_some_and(|p| p.parse::<usize>().is_ok())
                })
            });
            assert!(located, "{cmd} {name}: no file:line:col in\n{err}");
        }
        assert!(
            !bad.join("runs").exists(),
            "{name}: a failed run wrote output"
        );
    }
}

/// The real SmolLM2-135M GGUF, fetched by `../shared/fixtures/fetch-models.sh` (a failure in CI
/// when missing, a skip with the command to run locally).
fn smollm2() -> Option<PathBuf> {
    strata_tests::require_model("smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf")
}

#[test]
fn generate_on_smollm2_answers_paris() {
    let Some(model) = smollm2() else { return };
    let out = strata(&[
        "generate",
        model.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
        "--max-new-tokens",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(" Paris"), "greedy continuation: {text:?}");
}

/// `strata capture` on the GGUF: the last-position hidden states of every HF entry equal the
/// fixture's `hidden_states_last.0` (relative tolerance of the fixtures README).
#[test]
fn capture_on_smollm2_equals_the_fixture() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("acts.safetensors");
    let out = strata(&[
        "capture",
        model.to_str().unwrap(),
        "--prompt",
        "The capital of France is",
        "--capture",
        "embed,resid_post,final_norm",
        "--positions",
        "last",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let got = strata_tests::read_safetensors(&out_file);
    let expected = strata_tests::read_safetensors(
        &strata_tests::real_dir("smollm2-135m-instruct-q4_1").join("expected.safetensors"),
    );
    let rows = &expected["hidden_states_last.0"];
    let (entries, d) = (rows.shape[0], rows.shape[1]);
    for (i, want) in rows.f32().chunks(d).enumerate() {
        let site = match i {
            0 => "embed".to_string(),
            i if i == entries - 1 => "final_norm".to_string(),
            i => format!("resid_post.{}", i - 1),
        };
        let g = &got[&site];
        assert_eq!(g.shape, [1, 1, d], "{site}");
        let scale = want.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
        strata_tests::assert_close(&site, g.f32(), want, &[d], 1e-4 * scale + 1e-4, 0.0);
    }
}

#[test]
fn bench_reports_one_json_object_for_both_workloads() {
    let model = tiny("llama");
    let model = model.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut args = vec!["bench", model, "--json", "--warmup", "0", "--runs", "2"];
        args.extend_from_slice(extra);
        let out = strata(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str::<serde_json::Value>(stdout(&out).trim()).unwrap()
    };
    let forward = run(&["--batch", "2", "--seq", "8"]);
    assert_eq!(forward["mode"], "forward");
    assert_eq!(forward["backend"], "flex");
    assert_eq!(
        (forward["batch"].as_u64(), forward["seq"].as_u64()),
        (Some(2), Some(8))
    );
    // embed, 3 × resid_post, final_norm, logits.
    assert_eq!(forward["captures"], 6);
    assert_eq!(forward["tokens"], 16);
    let (median, tps) = (
        forward["median_s"].as_f64().unwrap(),
        forward["tokens_per_s"].as_f64().unwrap(),
    );
    assert!(
        median > 0.0 && (tps * median - 16.0).abs() < 1e-6,
        "{forward}"
    );
    assert!(forward["min_s"].as_f64() <= Some(median) && Some(median) <= forward["max_s"].as_f64());
    assert!(
        forward["peak_rss_mb"].as_f64().is_some_and(|mb| mb > 0.0),
        "{forward}"
    );

    let generate = run(&["--batch", "3", "--seq", "4", "--generate", "5"]);
    assert_eq!(generate["mode"], "generate");
    assert_eq!(
        (generate["new_tokens"].as_u64(), generate["tokens"].as_u64()),
        (Some(5), Some(15))
    );

    let bad = strata(&["bench", model, "--seq", "100000"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("context"), "{}", stderr(&bad));
}

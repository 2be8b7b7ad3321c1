//! Hub ids resolved offline from a Hugging Face cache laid out in a temporary folder.
//!
//! One test only: it sets `HF_HUB_CACHE` / `HF_HOME`, which are process-wide, so nothing may run
//! beside it in this binary.

use strata_plugins as _;

use std::path::Path;

use strata_core::{Backend, CapturePlan, ModelFiles, ModelSource, Positions, Site, TokenBatch};
use strata_tests::{read_safetensors, tiny_dir};

/// `<cache>/models--<org>--<name>/{refs/main, snapshots/<commit>/<files>}`, files linked from
/// `from` (as `huggingface_hub` links snapshot files to blobs).
fn cache_repo(cache: &Path, repo: &str, commit: &str, files: &[(&str, &Path)]) {
    let folder = cache.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs/main"), commit).unwrap();
    let snapshot = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snapshot).unwrap();
    for (name, target) in files {
        std::os::unix::fs::symlink(target, snapshot.join(name)).unwrap();
    }
}

fn set_env(key: &str, value: Option<&Path>) {
    // SAFETY: this test binary runs a single test, so no other thread reads the environment.
    unsafe {
        match value {
            Some(v) => std::env::set_var(key, v),
            None => std::env::remove_var(key),
        }
    }
}

#[test]
fn hub_ids_resolve_from_the_local_cache_only() {
    let tmp = tempfile::tempdir().unwrap();
    let cache = tmp.path().join("hub");
    let tiny = tiny_dir("llama");
    cache_repo(
        &cache,
        "strata-test/tiny-llama",
        "0123456789abcdef0123456789abcdef01234567",
        &[
            ("config.json", &tiny.join("config.json")),
            ("model.safetensors", &tiny.join("model.safetensors")),
        ],
    );
    set_env("HF_HOME", None);
    set_env("HF_HUB_CACHE", Some(&cache));

    // `org/name` that is not a local path is a hub id; it loads like the folder it resolves to.
    let source = ModelSource::parse("strata-test/tiny-llama");
    assert_eq!(source, ModelSource::Hub("strata-test/tiny-llama".into()));
    let device = Backend::Flex.device();
    let loaded = strata_plugins::load_model("tiny", &source, &device).unwrap();
    let expected = read_safetensors(&tiny.join("expected.safetensors"));
    let ids: Vec<u32> = expected["input_ids"].i64()[..12]
        .iter()
        .map(|&v| v as u32)
        .collect();
    let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
    let logits = loaded
        .model
        .forward(&TokenBatch::single(ids).unwrap(), &plan)
        .unwrap();
    let logits = logits.get(Site::Logits).unwrap().to_vec().unwrap();
    let want = &expected["logits"].f32()[11 * 512..12 * 512];
    strata_tests::assert_close("hub tiny llama logits", &logits, want, &[512], 1e-4, 1e-4);
    assert!(
        loaded.files.iter().all(|f| f.starts_with(&cache)),
        "{:?}",
        loaded.files
    );

    // A revision (commit) and a file inside the snapshot.
    let by_commit =
        ModelSource::Hub("strata-test/tiny-llama@0123456789abcdef0123456789abcdef01234567".into());
    assert!(by_commit.resolve().unwrap().join("config.json").is_file());
    let one_file = ModelSource::Hub("strata-test/tiny-llama/config.json".into());
    assert!(one_file.resolve().unwrap().ends_with("config.json"));

    // Not cached: an error naming the id and the cache searched, never a download.
    let missing = ModelSource::parse("strata-test/not-there");
    let err = match ModelFiles::open(&missing) {
        Ok(_) => panic!("an uncached hub id resolved"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(
        msg.contains("strata-test/not-there") && msg.contains(&cache.display().to_string()),
        "{msg}"
    );
    assert!(err.is_input_error());
    let bad_revision = ModelSource::Hub("strata-test/tiny-llama@v9".into());
    assert!(
        bad_revision
            .resolve()
            .unwrap_err()
            .to_string()
            .contains("revision `v9`")
    );

    // HF_HOME/hub is the fallback when HF_HUB_CACHE is unset.
    set_env("HF_HUB_CACHE", None);
    set_env("HF_HOME", Some(tmp.path()));
    assert_eq!(
        source.resolve().unwrap(),
        cache.join(
            "models--strata-test--tiny-llama/snapshots/0123456789abcdef0123456789abcdef01234567"
        )
    );

    // `hub = "org/name"` in an experiment file validates and runs from the same cache.
    let exp_dir = tmp.path().join("exp");
    std::fs::create_dir_all(&exp_dir).unwrap();
    std::fs::write(
        exp_dir.join("texts.jsonl"),
        "{\"text\": \"The quick brown fox\"}\n",
    )
    .unwrap();
    let tokenizer =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/byte-tokenizer.json");
    let text = format!(
        "[run]\nname = \"hub\"\n\n[[model]]\nid = \"tiny\"\nhub = \"strata-test/tiny-llama\"\n\
         tokenizer = {tokenizer:?}\n\n[[data]]\nid = \"texts\"\nkind = \"text\"\n\
         path = \"texts.jsonl\"\n\n[[analysis]]\nkind = \"residual-norms\"\nmodels = [\"tiny\"]\n\
         data = \"texts\"\n",
        tokenizer = tokenizer.display().to_string()
    );
    std::fs::write(exp_dir.join("exp.toml"), &text).unwrap();
    let exp = strata_core::Experiment::load(exp_dir.join("exp.toml")).unwrap();
    assert_eq!(
        exp.models[0].source,
        ModelSource::Hub("strata-test/tiny-llama".into())
    );
    let summary = strata_core::run_experiment(
        &exp,
        &strata_core::RunOptions {
            force: false,
            progress: &strata_core::Silent,
        },
    )
    .unwrap();
    assert!(matches!(
        summary.manifest.analyses[0].status,
        strata_core::AnalysisStatus::Completed { .. }
    ));
    std::fs::write(
        exp_dir.join("missing.toml"),
        text.replace("strata-test/tiny-llama", "strata-test/not-there"),
    )
    .unwrap();
    let err = match strata_core::Experiment::load(exp_dir.join("missing.toml")) {
        Ok(exp) => strata_core::run_experiment(
            &exp,
            &strata_core::RunOptions {
                force: false,
                progress: &strata_core::Silent,
            },
        )
        .unwrap_err(),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains("strata-test/not-there"), "{msg}");
    assert!(err.is_input_error(), "{msg}");

    // An existing path always wins over the hub reading of the same text.
    let local = ModelSource::parse(tiny.to_str().unwrap());
    assert_eq!(local, ModelSource::Path(tiny.clone()));
}

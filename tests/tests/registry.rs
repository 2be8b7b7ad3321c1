//! The plugin registry is complete, and the template plugin computes what it documents.

use std::path::PathBuf;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::SeedableRng;
use strata_core::data::{DataKind, Dataset};
use strata_core::progress::Silent;
use strata_core::{
    Backend, CapturePlan, Context, ModelSource, ParamsInput, Positions, Site, TokenBatch,
};

/// Every built-in plugin, sorted. Dropping a plugin crate from the facade fails this test.
#[test]
fn registry_lists_exactly_the_built_in_plugins() {
    let (architectures, analyses) = strata_plugins::registry();
    assert_eq!(
        architectures,
        [
            "bert", "gemma3", "gpt-neox", "gpt2", "llama", "mamba", "rwkv"
        ]
    );
    assert_eq!(analyses, ["next-token-law", "residual-norms"]);
}

#[test]
fn unknown_model_type_lists_the_supported_ones() {
    let err = strata_core::registry::find_architecture("gpt-j")
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(
        msg.contains("gpt-j") && msg.contains("llama") && msg.contains("qwen2"),
        "{msg}"
    );
    assert!(err.is_input_error());
}

fn tiny_llama() -> strata_core::LoadedModel {
    let dir = strata_tests::tiny_dir("llama");
    let mut loaded =
        strata_core::registry::load_model("tiny", &ModelSource::Path(dir), &Backend::Flex.device())
            .unwrap();
    loaded.set_tokenizer(&byte_tokenizer()).unwrap();
    loaded
}

fn byte_tokenizer() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("assets/byte-tokenizer.json")
}

fn texts_dataset(texts: &[&str]) -> Dataset {
    Dataset {
        id: "texts".into(),
        kind: DataKind::Text,
        path: PathBuf::from("<memory>"),
        field: "text".into(),
        max_tokens: Some(20),
        limit_tokens: None,
        records: texts
            .iter()
            .map(|t| {
                let mut m = serde_json::Map::new();
                m.insert("text".into(), serde_json::Value::String(t.to_string()));
                m
            })
            .collect(),
    }
}

/// Mean L2 norms per depth, recomputed independently: each text alone (no padding), every
/// position read back to the host and normed there in f64.
fn reference_norms(model: &strata_core::LoadedModel, data: &Dataset, last_only: bool) -> Vec<f64> {
    let info = model.model.info();
    let sites: Vec<Site> = std::iter::once(Site::Embed)
        .chain((0..info.n_layers).map(Site::ResidPost))
        .collect();
    let mut sums = vec![0.0; sites.len()];
    let mut count = 0usize;
    for ids in data.token_sequences(model.tokenizer().unwrap()).unwrap() {
        let n = ids.len();
        let mut plan = CapturePlan::new();
        sites.iter().for_each(|&s| plan.add(s, Positions::All));
        let caps = model
            .model
            .forward(&TokenBatch::single(ids).unwrap(), &plan)
            .unwrap();
        let range = if last_only { n - 1..n } else { 0..n };
        count += range.len();
        for (i, &site) in sites.iter().enumerate() {
            let v = caps.get(site).unwrap().to_vec().unwrap();
            let d = v.len() / n;
            for p in range.clone() {
                sums[i] += v[p * d..(p + 1) * d]
                    .iter()
                    .map(|&x| (x as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
            }
        }
    }
    sums.into_iter().map(|s| s / count as f64).collect()
}

#[test]
fn template_plugin_matches_an_independent_computation() {
    let model = tiny_llama();
    // Different lengths, so batches are padded and the plugin must skip the pads.
    let data = texts_dataset(&[
        "The quick brown fox",
        "jumps",
        "over the lazy dog, twice over and again",
    ]);
    let device = Backend::Flex.device();
    for (positions, last_only) in [("all", false), ("last", true)] {
        let reg = strata_core::registry::find_analysis("residual-norms").unwrap();
        let src = format!("positions = \"{positions}\"\nbatch_size = 2");
        let analysis = (reg.build)(ParamsInput::from_str(&src).unwrap()).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let mut ctx = Context {
            models: vec![&model],
            data: Some(&data),
            device: &device,
            rng: ChaCha8Rng::seed_from_u64(0),
            progress: &Silent,
            scratch: scratch.path().to_path_buf(),
        };
        let report = analysis.run(&mut ctx).unwrap();
        let table = report.table("norms").unwrap();
        let strata_core::report::Values::Float(got) = &table.column("mean_norm").unwrap().values
        else {
            panic!("mean_norm is not a float column");
        };
        let expected = reference_norms(&model, &data, last_only);
        assert_eq!(got.len(), expected.len());
        for (g, e) in got.iter().zip(&expected) {
            assert!((g - e).abs() <= 1e-4 * e.abs(), "{positions}: {g} vs {e}");
        }
        assert_eq!(report.figures[0].series[0].y.len(), 4);
    }
}

#[test]
fn template_plugin_rejects_unknown_and_mistyped_parameters() {
    let reg = strata_core::registry::find_analysis("residual-norms").unwrap();
    let err = (reg.build)(ParamsInput::from_str("postions = \"all\"").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("<params>:1:1") && err.contains("positions"),
        "{err}"
    );
    let err = (reg.build)(ParamsInput::from_str("batch_size = \"eight\"").unwrap())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("<params>:1:14"), "{err}");
}

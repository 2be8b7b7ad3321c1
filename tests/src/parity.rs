//! The fixture-parity harness every architecture's conformance test uses: load a tiny fixture
//! model, run one forward with every canonical capture, and compare each site with the HF tensor
//! it reproduces (chosen by the model's [`HiddenStatesLayout`]); compare incremental decoding
//! with full forwards.

use strata_core::generate::argmax;
use strata_core::{
    Backend, CapturePlan, Captures, Finish, GenerateOptions, HiddenStatesLayout, LanguageModel,
    LoadedModel, ModelInfo, ModelSource, PadSide, Positions, Site, TokenBatch, generate,
};

use crate::{Stored, assert_close, backends, read_safetensors, tiny_dir};

/// HF's suggested tolerance for tiny outputs: `1e-4 + 1e-4·|b|`.
pub const ATOL: f64 = 1e-4;
pub const RTOL: f64 = 1e-4;
/// Attention probabilities: `1e-5` absolute.
pub const ATOL_ATTN: f64 = 1e-5;

/// Loads `tiny/<arch>` on `backend` (panics with the error: this is a test helper).
pub fn load(arch: &str, backend: Backend) -> LoadedModel {
    strata_core::registry::load_model(
        "tiny",
        &ModelSource::Path(tiny_dir(arch)),
        &backend.device(),
    )
    .unwrap_or_else(|e| panic!("loading tiny/{arch} on {backend}: {e}"))
}

/// Whether `backend` is among the backends this test run covers (says so when it is not).
pub fn enabled(backend: Backend) -> bool {
    let on = backends().contains(&backend);
    if !on {
        eprintln!("{backend}: skipped (not in STRATA_TEST_BACKENDS)");
    }
    on
}

/// Every site the fixtures hold for a model like `info`, at every position: the embedding, every
/// block output, the final norm, layer-0 attention (attention models), logits (LMs).
pub fn full_plan(info: &ModelInfo) -> CapturePlan {
    let mut plan = CapturePlan::new().with(Site::Embed, Positions::All);
    if info.hidden_states != HiddenStatesLayout::EmbedThenAllBlocks {
        plan.add(Site::FinalNorm, Positions::All);
    }
    if info.has_attention {
        plan.add(Site::AttnPattern(0), Positions::All);
    }
    if info.has_lm_head {
        plan.add(Site::Logits, Positions::All);
    }
    for l in 0..info.n_layers {
        plan.add(Site::ResidPost(l), Positions::All);
    }
    plan
}

/// The captured values of `site`, flattened.
pub fn values(captures: &Captures, site: Site) -> Vec<f32> {
    captures
        .get(site)
        .unwrap_or_else(|| panic!("`{site}` was not captured"))
        .to_vec()
        .unwrap()
}

/// The fixture tensor each canonical site reproduces, for HF's `hidden_states` layout `layout`
/// of a model with `n_layers` blocks (`shared/fixtures/README.md`, "What HF's `hidden_states`
/// contain").
pub fn fixture_sites(layout: HiddenStatesLayout, n_layers: usize, lm: bool) -> Vec<(String, Site)> {
    let l = n_layers;
    let mut pairs = vec![
        ("embeddings".to_string(), Site::Embed),
        ("pre_final_norm".to_string(), Site::ResidPost(l - 1)),
    ];
    match layout {
        HiddenStatesLayout::EmbedThenBlocks => {
            pairs.push(("hidden_states.0".into(), Site::Embed));
            pairs.extend((1..l).map(|i| (format!("hidden_states.{i}"), Site::ResidPost(i - 1))));
            pairs.push((format!("hidden_states.{l}"), Site::FinalNorm));
        }
        HiddenStatesLayout::EmbedThenAllBlocks => {
            pairs.push(("hidden_states.0".into(), Site::Embed));
            pairs.extend((1..=l).map(|i| (format!("hidden_states.{i}"), Site::ResidPost(i - 1))));
        }
        HiddenStatesLayout::BlocksOnly => {
            pairs.extend((0..l).map(|i| (format!("hidden_states.{i}"), Site::ResidPost(i))));
            pairs.push((format!("hidden_states.{l}"), Site::FinalNorm));
        }
    }
    if lm {
        pairs.push(("logits".to_string(), Site::Logits));
    }
    pairs
}

/// Rows of token ids from an `I64` fixture tensor.
pub fn id_rows(ids: &Stored) -> Vec<Vec<u32>> {
    ids.i64_rows()
        .into_iter()
        .map(|row| row.into_iter().map(|id| id as u32).collect())
        .collect()
}

/// What [`check_tiny`] measured, for the family's own further checks.
pub struct TinyCheck {
    pub loaded: LoadedModel,
    pub batch: TokenBatch,
    pub captures: Captures,
    pub expected: std::collections::BTreeMap<String, crate::Stored>,
    /// Largest |Δ| over hidden states, logits (and the final norm).
    pub worst: f64,
    /// Largest |Δ| of `attentions.0` (0 for attention-free models).
    pub attn: f64,
}

/// Fixture parity of `tiny/<arch>` on `backend`: the parameter count of `manifest.json`, every
/// hidden state by the model's layout, `embeddings`, `pre_final_norm`, logits (LMs) and
/// `attentions.0` (attention models), at every position. Returns `None` when the backend is not
/// covered by this run.
pub fn check_tiny(arch: &str, backend: Backend) -> Option<TinyCheck> {
    if !enabled(backend) {
        return None;
    }
    let dir = tiny_dir(arch);
    let expected = read_safetensors(&dir.join("expected.safetensors"));
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let loaded = load(arch, backend);
    let info = loaded.model.info().clone();
    assert_eq!(
        Some(info.model_type.as_str()),
        config["model_type"].as_str()
    );
    assert_eq!(
        Some(info.n_params),
        manifest["num_parameters"].as_u64(),
        "tiny/{arch}: parameter count"
    );
    let batch = TokenBatch::new(id_rows(&expected["input_ids"])).unwrap();
    let captures = loaded.model.forward(&batch, &full_plan(&info)).unwrap();
    let mut worst: f64 = 0.0;
    let mut sites = fixture_sites(info.hidden_states, info.n_layers, info.has_lm_head);
    if expected.contains_key("last_hidden_state") {
        // Encoders: HF's `last_hidden_state` is the last block's output.
        sites.push((
            "last_hidden_state".into(),
            Site::ResidPost(info.n_layers - 1),
        ));
    }
    for (name, site) in sites {
        let want = &expected[&name];
        let dev = assert_close(
            &format!("{arch}/{backend} {name} ({site})"),
            &values(&captures, site),
            want.f32(),
            &want.shape,
            ATOL,
            RTOL,
        );
        worst = worst.max(dev);
    }
    let attn = if info.has_attention {
        let want = &expected["attentions.0"];
        assert_close(
            &format!("{arch}/{backend} attentions.0"),
            &values(&captures, Site::AttnPattern(0)),
            want.f32(),
            &want.shape,
            ATOL_ATTN,
            0.0,
        )
    } else {
        0.0
    };
    eprintln!(
        "tiny/{arch} on {backend}: max |Δ| hidden states + logits {worst:.2e}, attentions.0 {attn:.2e}"
    );
    Some(TinyCheck {
        loaded,
        batch,
        captures,
        expected,
        worst,
        attn,
    })
}

/// Decodes `rows` (left-padded prompt of `prompt_lens[b]` tokens, then one token per row per
/// step) and compares every step's last-position logits with a full forward of each row's
/// prefix alone. Returns the largest deviation.
pub fn decode_matches_full(
    model: &dyn LanguageModel,
    rows: &[Vec<u32>],
    prompt_lens: &[usize],
    plan: &CapturePlan,
) -> f64 {
    let vocab = model.info().vocab_size;
    let steps = rows
        .iter()
        .zip(prompt_lens)
        .map(|(r, p)| r.len() - p)
        .min()
        .unwrap();
    let mut cache = model.new_cache();
    let mut worst: f64 = 0.0;
    for step in 0..=steps {
        let batch = if step == 0 {
            let prompts = rows
                .iter()
                .zip(prompt_lens)
                .map(|(r, &p)| r[..p].to_vec())
                .collect();
            TokenBatch::with_padding(prompts, PadSide::Left, 0).unwrap()
        } else {
            TokenBatch::new(
                rows.iter()
                    .zip(prompt_lens)
                    .map(|(r, &p)| vec![r[p + step - 1]])
                    .collect(),
            )
            .unwrap()
        };
        let got = values(
            &model.forward_cached(&batch, plan, &mut cache).unwrap(),
            Site::Logits,
        );
        for (b, (row, &p)) in rows.iter().zip(prompt_lens).enumerate() {
            let prefix = TokenBatch::single(row[..p + step].to_vec()).unwrap();
            let want = values(&model.forward(&prefix, plan).unwrap(), Site::Logits);
            let dev = assert_close(
                &format!("step {step}, row {b}"),
                &got[b * vocab..(b + 1) * vocab],
                &want,
                &[vocab],
                ATOL,
                RTOL,
            );
            worst = worst.max(dev);
        }
    }
    worst
}

/// Greedy continuation computed the slow way: a full forward over the whole prefix per token.
pub fn greedy_by_full_forwards(model: &dyn LanguageModel, prompt: &[u32], n: usize) -> Vec<u32> {
    let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
    let mut ids = prompt.to_vec();
    for _ in 0..n {
        let caps = model
            .forward(&TokenBatch::single(ids.clone()).unwrap(), &plan)
            .unwrap();
        ids.push(argmax(&values(&caps, Site::Logits)));
    }
    ids[prompt.len()..].to_vec()
}

/// Greedy generation of `n` tokens through the cache, for `prompts` batched (left-padded) and
/// for each prompt alone, equals [`greedy_by_full_forwards`]; `what` names the model in failures.
pub fn greedy_matches_full_forwards(
    what: &str,
    model: &dyn LanguageModel,
    prompts: &[Vec<u32>],
    n: usize,
) {
    let options = GenerateOptions {
        max_new_tokens: n,
        ..GenerateOptions::default()
    };
    let batched = generate(model, prompts, &options, None).unwrap();
    for (prompt, got) in prompts.iter().zip(&batched) {
        let expected = greedy_by_full_forwards(model, prompt, n);
        assert_eq!(got.tokens, expected, "{what}, prompt {prompt:?} (batched)");
        assert_eq!(got.finish, Finish::Length);
        let alone = generate(model, std::slice::from_ref(prompt), &options, None).unwrap();
        assert_eq!(
            alone[0].tokens, expected,
            "{what}, prompt {prompt:?} (alone)"
        );
    }
}

/// The tensors of a checkpoint as plain data: name → (shape, f32 values).
pub type TensorMap = std::collections::BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// A copy of `tiny/<arch>` (config and weights only) in a temp dir, with `edit` applied to its
/// tensors and `config` to its config.
pub fn modified_copy(
    arch: &str,
    edit: impl FnOnce(&mut TensorMap),
    config: impl FnOnce(&mut serde_json::Value),
) -> tempfile::TempDir {
    let src = tiny_dir(arch);
    let dir = tempfile::tempdir().unwrap();
    let mut tensors: TensorMap = read_safetensors(&src.join("model.safetensors"))
        .into_iter()
        .map(|(name, t)| (name, (t.shape.clone(), t.f32().to_vec())))
        .collect();
    edit(&mut tensors);
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(name, (shape, v))| {
            (
                name,
                shape,
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views = bytes.iter().map(|(name, shape, data)| {
        let view =
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data);
        (name.clone(), view.unwrap())
    });
    safetensors::serialize_to_file(
        views,
        None::<std::collections::HashMap<String, String>>,
        &dir.path().join("model.safetensors"),
    )
    .unwrap();
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config(&mut cfg);
    std::fs::write(dir.path().join("config.json"), cfg.to_string()).unwrap();
    dir
}

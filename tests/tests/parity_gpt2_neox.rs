//! GPT-2 and GPT-NeoX against Hugging Face `transformers` (`shared/fixtures/tiny/{gpt2,gpt_neox}`)
//! on every backend, incremental decoding and greedy generation through the KV cache, and the
//! config and checkpoint variants real checkpoints use (bare GPT-2 tensor names, old NeoX rotary
//! keys, sequential NeoX residual).
//!
//! Run with `cargo test -p strata-tests --test parity_gpt2_neox -- --nocapture` to see the
//! deviations; `STRATA_TEST_BACKENDS=flex` restricts the backends.

use strata_plugins as _;

use std::path::Path;

use strata_core::{
    AttentionBlock, Backend, CapturePlan, Captures, Intervention, LanguageModel, LoadedModel,
    ModelSource, Positions, Site, TokenBatch,
};
use strata_tests::assert_close;
use strata_tests::parity::{
    TinyCheck, check_tiny, decode_matches_full, enabled, full_plan, greedy_matches_full_forwards,
    id_rows, load, modified_copy, values,
};

/// Fixture parity of `tiny/<arch>` on `backend`, plus the branch captures: every block output
/// is its input plus `attn_out` plus `mlp_out` (both residual forms), and the head geometry.
fn parity(arch: &str, backend: Backend) {
    let Some(TinyCheck { loaded, batch, .. }) = check_tiny(arch, backend) else {
        return;
    };
    let model = loaded.model.as_ref();
    let info = model.info();
    assert_eq!((info.n_layers, info.d_model, info.vocab_size), (3, 64, 512));
    assert_eq!((info.n_heads, info.n_kv_heads, info.head_dim), (4, 4, 16));
    let worst = branches_sum_to_blocks(model, &batch);
    eprintln!(
        "{arch} on {backend}: max |resid_post - (resid_pre + attn_out + mlp_out)| {worst:.2e}"
    );
}

/// Checks `resid_post.l == resid_pre.l + attn_out.l + mlp_out.l` at every layer; returns the
/// largest deviation.
fn branches_sum_to_blocks(model: &dyn LanguageModel, batch: &TokenBatch) -> f64 {
    let n = model.info().n_layers;
    let mut plan = CapturePlan::new().with(Site::Embed, Positions::All);
    for l in 0..n {
        for site in [Site::AttnOut(l), Site::MlpOut(l), Site::ResidPost(l)] {
            plan.add(site, Positions::All);
        }
    }
    let caps = model.forward(batch, &plan).unwrap();
    let shape = caps.hidden(Site::Embed).unwrap().dims();
    let mut worst: f64 = 0.0;
    for l in 0..n {
        let input = values(
            &caps,
            if l == 0 {
                Site::Embed
            } else {
                Site::ResidPost(l - 1)
            },
        );
        let (attn, mlp) = (
            values(&caps, Site::AttnOut(l)),
            values(&caps, Site::MlpOut(l)),
        );
        let sum: Vec<f32> = (0..input.len())
            .map(|i| input[i] + attn[i] + mlp[i])
            .collect();
        worst = worst.max(assert_close(
            &format!("resid_post.{l} = resid_pre + attn_out + mlp_out"),
            &values(&caps, Site::ResidPost(l)),
            &sum,
            &shape,
            1e-5,
            1e-5,
        ));
    }
    worst
}

macro_rules! parity_tests {
    ($($name:ident: $arch:literal on $backend:ident;)*) => {$(
        #[test]
        fn $name() {
            parity($arch, Backend::$backend);
        }
    )*};
}

parity_tests! {
    gpt2_flex: "gpt2" on Flex;
    gpt2_ndarray: "gpt2" on Ndarray;
    gpt2_wgpu: "gpt2" on Wgpu;
    gpt_neox_flex: "gpt_neox" on Flex;
    gpt_neox_ndarray: "gpt_neox" on Ndarray;
    gpt_neox_wgpu: "gpt_neox" on Wgpu;
}

/// The fixture's input ids.
fn fixture_ids(arch: &str) -> Vec<Vec<u32>> {
    let expected =
        strata_tests::read_safetensors(&strata_tests::tiny_dir(arch).join("expected.safetensors"));
    id_rows(&expected["input_ids"])
}

/// Incremental decoding equals full forwards: one row, a left-padded batch of two lengths, and
/// the same batch under an attention-key mask given in absolute positions.
fn cached_equals_full(arch: &str, backend: Backend) {
    if !enabled(backend) {
        return;
    }
    let ids = fixture_ids(arch);
    let model = load(arch, backend).model;
    let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
    let single = decode_matches_full(model.as_ref(), &ids[..1], &[8], &plan);
    let rows = vec![ids[0].clone(), ids[1][..9].to_vec()];
    let batched = decode_matches_full(model.as_ref(), &rows, &[7, 4], &plan);
    let blocked = plan
        .clone()
        .intervene(Intervention::BlockAttention(AttentionBlock {
            blocked: (1..16).map(|q| (q, 1)).collect(),
            ..AttentionBlock::default()
        }));
    let masked = decode_matches_full(model.as_ref(), &rows, &[7, 4], &blocked);
    eprintln!(
        "{arch} decode on {backend}: max |Δ| single {single:.2e}, left-padded batch {batched:.2e}, with key mask {masked:.2e}"
    );
}

#[test]
fn gpt2_cached_equals_full_flex() {
    cached_equals_full("gpt2", Backend::Flex);
}

#[test]
fn gpt_neox_cached_equals_full_flex() {
    cached_equals_full("gpt_neox", Backend::Flex);
}

#[test]
fn cached_equals_full_wgpu() {
    cached_equals_full("gpt2", Backend::Wgpu);
    cached_equals_full("gpt_neox", Backend::Wgpu);
}

#[test]
fn greedy_through_the_cache_equals_argmax_of_full_forwards() {
    let prompts = vec![vec![431, 59, 66, 509, 108], vec![170, 322, 319]];
    for arch in ["gpt2", "gpt_neox"] {
        let model = load(arch, Backend::Flex);
        greedy_matches_full_forwards(arch, model.model.as_ref(), &prompts, 10);
    }
}

/// The key mask reaches the attention of both families: blocked probabilities are exactly 0
/// and the outputs change.
#[test]
fn attention_key_mask_blocks_keys() {
    for arch in ["gpt2", "gpt_neox"] {
        let model = load(arch, Backend::Flex).model;
        let batch = TokenBatch::new(fixture_ids(arch)).unwrap();
        let base = CapturePlan::new()
            .with(Site::AttnPattern(1), Positions::All)
            .with(Site::Logits, Positions::Last);
        let blocked = base
            .clone()
            .intervene(Intervention::BlockAttention(AttentionBlock {
                blocked: (1..12).map(|q| (q, 0)).collect(),
                ..AttentionBlock::default()
            }));
        let (free, masked) = (
            model.forward(&batch, &base).unwrap(),
            model.forward(&batch, &blocked).unwrap(),
        );
        let probs = values(&masked, Site::AttnPattern(1));
        // [2, 4, 12, 12]: key 0 of every query but the first.
        for (i, p) in probs.iter().enumerate() {
            let (q, k) = ((i / 12) % 12, i % 12);
            if k == 0 && q > 0 {
                assert_eq!(p.to_bits(), 0.0f32.to_bits(), "{arch}: q{q} k0 = {p}");
            }
        }
        assert_ne!(
            values(&free, Site::Logits),
            values(&masked, Site::Logits),
            "{arch}: the mask changed nothing"
        );
    }
}

fn load_dir(dir: &Path) -> LoadedModel {
    strata_plugins::load_model(
        "variant",
        &ModelSource::Path(dir.to_path_buf()),
        &Backend::Flex.device(),
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", dir.display()))
}

/// Every fixture site of `model` and of the reference fixture model, compared exactly.
fn same_numbers(what: &str, arch: &str, model: &dyn LanguageModel) {
    let reference = load(arch, Backend::Flex).model;
    let batch = TokenBatch::new(fixture_ids(arch)).unwrap();
    let plan = full_plan(reference.info());
    let (want, got): (Captures, Captures) = (
        reference.forward(&batch, &plan).unwrap(),
        model.forward(&batch, &plan).unwrap(),
    );
    assert_eq!(model.info().n_params, reference.info().n_params, "{what}");
    for (&site, _) in plan.sites() {
        assert_eq!(
            values(&got, site),
            values(&want, site),
            "{what}: `{site}` differs"
        );
    }
}

/// OpenAI's published GPT-2 checkpoints name tensors without `transformer.` (`h.0.attn.c_attn.weight`,
/// `wte.weight`); they load to the same numbers.
#[test]
fn gpt2_bare_tensor_names_load_to_the_same_numbers() {
    let dir = modified_copy(
        "gpt2",
        |t| {
            *t = std::mem::take(t)
                .into_iter()
                .map(|(name, v)| match name.strip_prefix("transformer.") {
                    Some(bare) => (bare.to_string(), v),
                    None => (name, v),
                })
                .collect();
            assert!(t.contains_key("h.0.attn.c_attn.weight") && t.contains_key("wte.weight"));
        },
        |_| {},
    );
    same_numbers("bare names", "gpt2", load_dir(dir.path()).model.as_ref());
}

/// An old-style NeoX config (top-level `rotary_pct`, `rotary_emb_base`; no `rope_parameters`)
/// loads to the same numbers; another `rotary_pct` gives other numbers, so the key is read.
#[test]
fn gpt_neox_old_rotary_keys_load_to_the_same_numbers() {
    let old_style = |pct: f64| {
        move |c: &mut serde_json::Value| {
            let obj = c.as_object_mut().unwrap();
            obj.remove("rope_parameters").unwrap();
            obj.insert("rotary_pct".into(), pct.into());
            obj.insert("rotary_emb_base".into(), 10000.into());
        }
    };
    let dir = modified_copy("gpt_neox", |_| {}, old_style(0.25));
    same_numbers(
        "old rotary keys",
        "gpt_neox",
        load_dir(dir.path()).model.as_ref(),
    );

    let dir = modified_copy("gpt_neox", |_| {}, old_style(0.5));
    let half = load_dir(dir.path()).model;
    let reference = load("gpt_neox", Backend::Flex).model;
    let batch = TokenBatch::new(fixture_ids("gpt_neox")).unwrap();
    let plan = CapturePlan::new().with(Site::Logits, Positions::All);
    assert_ne!(
        values(&half.forward(&batch, &plan).unwrap(), Site::Logits),
        values(&reference.forward(&batch, &plan).unwrap(), Site::Logits),
        "rotary_pct 0.5 must change the numbers"
    );
}

/// `use_parallel_residual = false`: attention reads the same input (layer-0 `attn_out`
/// unchanged), the MLP reads `x + attn_out` (layer-0 `mlp_out` changes), and every block output
/// is still input + both branches.
#[test]
fn gpt_neox_sequential_residual() {
    let dir = modified_copy(
        "gpt_neox",
        |_| {},
        |c| c["use_parallel_residual"] = false.into(),
    );
    let sequential = load_dir(dir.path()).model;
    let parallel = load("gpt_neox", Backend::Flex).model;
    let batch = TokenBatch::new(fixture_ids("gpt_neox")).unwrap();
    let plan = CapturePlan::new()
        .with(Site::AttnOut(0), Positions::All)
        .with(Site::MlpOut(0), Positions::All);
    let (s, p) = (
        sequential.forward(&batch, &plan).unwrap(),
        parallel.forward(&batch, &plan).unwrap(),
    );
    assert_eq!(values(&s, Site::AttnOut(0)), values(&p, Site::AttnOut(0)));
    assert_ne!(values(&s, Site::MlpOut(0)), values(&p, Site::MlpOut(0)));
    branches_sum_to_blocks(sequential.as_ref(), &batch);
}

/// Load-time errors name the file and the tensor or field.
#[test]
fn bad_checkpoints_are_model_errors_that_name_what_is_wrong() {
    let err_of = |dir: &Path| match strata_plugins::load_model(
        "broken",
        &ModelSource::Path(dir.to_path_buf()),
        &Backend::Flex.device(),
    ) {
        Ok(_) => panic!("loading {} should fail", dir.display()),
        Err(e) => e,
    };
    let dir = modified_copy("gpt2", |t| drop(t.remove("transformer.wte.weight")), |_| {});
    let msg = err_of(dir.path()).to_string();
    assert!(
        msg.contains("wte.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );

    let dir = modified_copy(
        "gpt2",
        |_| {},
        |c| c["activation_function"] = "swiglu".into(),
    );
    let msg = err_of(dir.path()).to_string();
    assert!(
        msg.contains("activation_function") && msg.contains("swiglu"),
        "{msg}"
    );

    let name = "gpt_neox.layers.1.attention.query_key_value.bias";
    let dir = modified_copy("gpt_neox", |t| drop(t.remove(name)), |_| {});
    let msg = err_of(dir.path()).to_string();
    assert!(msg.contains(name), "{msg}");

    let dir = modified_copy(
        "gpt_neox",
        |_| {},
        |c| c["rope_parameters"]["partial_rotary_factor"] = 0.1.into(),
    );
    let msg = err_of(dir.path()).to_string();
    assert!(
        msg.contains("rotary") && msg.contains("config.json"),
        "{msg}"
    );
}

//! Mamba-1 and RWKV-4 against Hugging Face `transformers` (`shared/fixtures/tiny/{mamba,rwkv}`) on
//! every backend; recurrent decoding against full forwards (left-padded batches, a 768-token
//! sequence), greedy generation through the recurrent state, padded batches, edits, RWKV's
//! `rescale_every`, and the requests these attention-free models must refuse.
//!
//! Run with `cargo test -p strata-tests --test parity_mamba_rwkv -- --nocapture` to see the
//! deviations; `STRATA_TEST_BACKENDS=flex` restricts the backends. The 768-token test runs on flex
//! only (a token-by-token decode of 768 steps is slow on lavapipe's wgpu).

use strata_plugins as _;

use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use strata_core::{
    AttentionBlock, Backend, CapturePlan, Edit, Error, HiddenStatesLayout, Intervention,
    ModelSource, PadSide, Positions, Site, TokenBatch,
};
use strata_tests::parity::{
    ATOL, RTOL, TinyCheck, check_tiny, decode_matches_full, enabled, greedy_matches_full_forwards,
    id_rows, load, modified_copy, values,
};
use strata_tests::{assert_close, backends, read_safetensors, tiny_dir};

/// The fixture's two 12-token rows.
fn fixture_rows(arch: &str) -> Vec<Vec<u32>> {
    id_rows(&read_safetensors(&tiny_dir(arch).join("expected.safetensors"))["input_ids"])
}

/// Fixture parity (every hidden state, logits; RWKV's time-mix output too), and the block
/// captures adding up: `resid_post.l = resid_pre.l + attn_out.l (+ mlp_out.l)`.
fn parity(arch: &str, backend: Backend) {
    let Some(TinyCheck {
        loaded,
        batch,
        expected,
        worst,
        ..
    }) = check_tiny(arch, backend)
    else {
        return;
    };
    let model = loaded.model.as_ref();
    let info = model.info();
    assert_eq!((info.n_layers, info.d_model, info.vocab_size), (3, 64, 512));
    assert_eq!(info.hidden_states, HiddenStatesLayout::BlocksOnly);
    assert!(!info.has_attention && info.causal && info.has_lm_head);

    let has_mlp = arch == "rwkv";
    let mut plan = CapturePlan::new().with(Site::Embed, Positions::All);
    for l in 0..info.n_layers {
        plan.add(Site::AttnOut(l), Positions::All);
        plan.add(Site::ResidPost(l), Positions::All);
        if has_mlp {
            plan.add(Site::MlpOut(l), Positions::All);
        }
    }
    let caps = model.forward(&batch, &plan).unwrap();
    let mut time_mix = 0.0;
    if arch == "rwkv" {
        let want = &expected["rwkv_time_mix_output.0"];
        time_mix = assert_close(
            &format!("rwkv/{backend} rwkv_time_mix_output.0 (attn_out.0)"),
            &values(&caps, Site::AttnOut(0)),
            want.f32(),
            &want.shape,
            ATOL,
            RTOL,
        );
    }
    let shape = caps.hidden(Site::Embed).unwrap().dims();
    for l in 1..info.n_layers {
        let (input, attn) = (
            values(&caps, Site::ResidPost(l - 1)),
            values(&caps, Site::AttnOut(l)),
        );
        let mlp = has_mlp.then(|| values(&caps, Site::MlpOut(l)));
        let sum: Vec<f32> = (0..input.len())
            .map(|i| input[i] + attn[i] + mlp.as_ref().map_or(0.0, |m| m[i]))
            .collect();
        assert_close(
            &format!("{arch}/{backend} resid_post.{l} = resid_pre + branches"),
            &values(&caps, Site::ResidPost(l)),
            &sum,
            &shape,
            1e-5,
            1e-5,
        );
    }
    eprintln!(
        "{arch} on {backend}: max |Δ| hidden states + logits {worst:.2e}, time-mix output {time_mix:.2e}"
    );
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
    mamba_flex: "mamba" on Flex;
    mamba_ndarray: "mamba" on Ndarray;
    mamba_wgpu: "mamba" on Wgpu;
    rwkv_flex: "rwkv" on Flex;
    rwkv_ndarray: "rwkv" on Ndarray;
    rwkv_wgpu: "rwkv" on Wgpu;
}

/// Decoding through the recurrent state, one token per step after a left-padded prompt batch of
/// two rows (5 and 3 tokens), equals full forwards of each row's prefix at every step.
#[test]
fn recurrent_decoding_equals_full_forwards() {
    let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
    for backend in backends() {
        for arch in ["mamba", "rwkv"] {
            let model = load(arch, backend).model;
            let rows = fixture_rows(arch);
            let worst = decode_matches_full(model.as_ref(), &rows, &[5, 3], &plan);
            let alone = decode_matches_full(model.as_ref(), &rows[1..], &[1], &plan);
            eprintln!(
                "{arch} on {backend}: decoding vs full forwards max |Δ| {:.2e}",
                worst.max(alone)
            );
        }
    }
}

#[test]
fn greedy_generation_through_the_state_equals_argmax_of_full_forwards() {
    for arch in ["mamba", "rwkv"] {
        let model = load(arch, Backend::Flex).model;
        let rows = fixture_rows(arch);
        let prompts = vec![rows[0][..5].to_vec(), rows[1][..3].to_vec()];
        greedy_matches_full_forwards(arch, model.as_ref(), &prompts, 10);
    }
}

/// Left- and right-padded batches give, at every real position, what each row gives alone.
#[test]
fn padded_batches_equal_unpadded_rows() {
    if !enabled(Backend::Flex) {
        return;
    }
    for arch in ["mamba", "rwkv"] {
        let model = load(arch, Backend::Flex).model;
        let rows = fixture_rows(arch);
        let rows = vec![rows[0].clone(), rows[1][..7].to_vec()];
        let plan = CapturePlan::new()
            .with(Site::ResidPost(1), Positions::All)
            .with(Site::Logits, Positions::All);
        for side in [PadSide::Left, PadSide::Right] {
            let batch = TokenBatch::with_padding(rows.clone(), side, 0).unwrap();
            let caps = model.forward(&batch, &plan).unwrap();
            for site in [Site::ResidPost(1), Site::Logits] {
                let padded = values(&caps, site);
                let width = caps.hidden(site).unwrap().dims()[2];
                for (b, row) in rows.iter().enumerate() {
                    let alone = model
                        .forward(&TokenBatch::single(row.clone()).unwrap(), &plan)
                        .unwrap();
                    let got: Vec<f32> = (0..row.len())
                        .flat_map(|p| {
                            let j = (b * batch.max_len() + batch.padded_index(b, p)) * width;
                            padded[j..j + width].to_vec()
                        })
                        .collect();
                    assert_close(
                        &format!("{arch} {side:?}-padded row {b} {site}"),
                        &got,
                        &values(&alone, site),
                        &[row.len(), width],
                        ATOL,
                        RTOL,
                    );
                }
            }
        }
    }
}

/// A sequence 64× the fixture's length runs through the full forward, and its last-position
/// logits equal those of decoding it (a 256-token prompt, then one token per step). Flex only.
#[test]
fn a_768_token_sequence_decodes_like_the_full_forward() {
    if !enabled(Backend::Flex) {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(768);
    let ids: Vec<u32> = (0..768).map(|_| 4 + rng.next_u32() % 508).collect();
    let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
    for arch in ["mamba", "rwkv"] {
        let model = load(arch, Backend::Flex).model;
        let full = values(
            &model
                .forward(&TokenBatch::single(ids.clone()).unwrap(), &plan)
                .unwrap(),
            Site::Logits,
        );
        assert!(
            full.iter().all(|v| v.is_finite()),
            "{arch}: non-finite logits"
        );
        let mut cache = model.new_cache();
        let prompt = TokenBatch::single(ids[..256].to_vec()).unwrap();
        let mut last = model.forward_cached(&prompt, &plan, &mut cache).unwrap();
        for &id in &ids[256..] {
            let step = TokenBatch::single(vec![id]).unwrap();
            last = model.forward_cached(&step, &plan, &mut cache).unwrap();
        }
        let dev = assert_close(
            &format!("{arch}: 768 tokens, decoded vs full forward (last position)"),
            &values(&last, Site::Logits),
            &full,
            &[full.len()],
            ATOL,
            RTOL,
        );
        eprintln!("{arch}: 768 tokens, decoded vs full forward max |Δ| {dev:.2e}");
    }
}

/// Zeroing a block's branches passes its input through; zeroing one position changes only that
/// position and later ones; replacing `resid_post.0` with another row's makes the rest of the
/// model compute that row.
#[test]
fn edits_at_capture_points_change_what_later_blocks_see() {
    if !enabled(Backend::Flex) {
        return;
    }
    for arch in ["mamba", "rwkv"] {
        let model = load(arch, Backend::Flex).model;
        let rows = fixture_rows(arch);
        let a = TokenBatch::single(rows[0].clone()).unwrap();
        let b = TokenBatch::single(rows[1].clone()).unwrap();
        let zero = |site| Intervention::Edit {
            site,
            positions: Positions::All,
            edit: Edit::Zero,
        };
        let mut plan = CapturePlan::new()
            .with(Site::ResidPost(0), Positions::All)
            .with(Site::ResidPost(1), Positions::All)
            .intervene(zero(Site::AttnOut(1)));
        if arch == "rwkv" {
            plan = plan.intervene(zero(Site::MlpOut(1)));
        }
        let caps = model.forward(&a, &plan).unwrap();
        assert_eq!(
            values(&caps, Site::ResidPost(1)),
            values(&caps, Site::ResidPost(0)),
            "{arch}: block 1 with its branches zeroed passes its input through"
        );

        let logits = CapturePlan::new().with(Site::Logits, Positions::All);
        let plain = values(&model.forward(&a, &logits).unwrap(), Site::Logits);
        let one = logits.clone().intervene(Intervention::Edit {
            site: Site::ResidPost(0),
            positions: Positions::Index(vec![4]),
            edit: Edit::Zero,
        });
        let edited = values(&model.forward(&a, &one).unwrap(), Site::Logits);
        let v = 512;
        assert_eq!(
            plain[..4 * v],
            edited[..4 * v],
            "{arch}: positions before the edit"
        );
        for p in 4..12 {
            assert_ne!(
                plain[p * v..(p + 1) * v],
                edited[p * v..(p + 1) * v],
                "{arch}: position {p} after the edit"
            );
        }

        let with_b = CapturePlan::new()
            .with(Site::ResidPost(0), Positions::All)
            .with(Site::Logits, Positions::All);
        let caps_b = model.forward(&b, &with_b).unwrap();
        let replace = logits.intervene(Intervention::Edit {
            site: Site::ResidPost(0),
            positions: Positions::All,
            edit: Edit::Replace(Box::new(caps_b.hidden(Site::ResidPost(0)).unwrap().clone())),
        });
        assert_close(
            &format!("{arch}: resid_post.0 replaced by another row's"),
            &values(&model.forward(&a, &replace).unwrap(), Site::Logits),
            &values(&caps_b, Site::Logits),
            &[12, v],
            1e-5,
            1e-5,
        );
    }
}

fn invalid_request(what: &str, result: strata_core::Result<strata_core::Captures>) -> String {
    match result {
        Err(e @ Error::InvalidRequest(_)) => e.to_string(),
        Err(e) => panic!("{what}: expected an invalid-request error, got {e}"),
        Ok(_) => panic!("{what}: expected an invalid-request error, got captures"),
    }
}

/// Attention patterns and attention-key masks do not exist on these models; asking for them
/// (full forward or decoding) is an invalid request, as are Mamba's missing MLP sublayer, a
/// right-padded prompt for decoding, and another model's cache.
#[test]
fn attention_requests_are_invalid_on_recurrent_models() {
    let mamba = load("mamba", Backend::Flex).model;
    let rwkv = load("rwkv", Backend::Flex).model;
    let batch = TokenBatch::single(vec![5, 6, 7]).unwrap();
    let pattern = CapturePlan::new().with(Site::AttnPattern(0), Positions::All);
    let mask = CapturePlan::new()
        .with(Site::Logits, Positions::Last)
        .intervene(Intervention::BlockAttention(AttentionBlock {
            blocked: vec![(2, 0)],
            ..AttentionBlock::default()
        }));
    for model in [&mamba, &rwkv] {
        let arch = model.info().architecture.clone();
        for (what, plan) in [("attn_pattern", &pattern), ("attention-key mask", &mask)] {
            let msg = invalid_request(what, model.forward(&batch, plan));
            assert!(msg.contains("attention") && msg.contains(&arch), "{msg}");
            let mut cache = model.new_cache();
            invalid_request(what, model.forward_cached(&batch, plan, &mut cache));
        }
        let logits = CapturePlan::new().with(Site::Logits, Positions::Last);
        let right = TokenBatch::new(vec![vec![5, 6, 7], vec![8]]).unwrap();
        let mut cache = model.new_cache();
        invalid_request(
            "right-padded prompt",
            model.forward_cached(&right, &logits, &mut cache),
        );
        let other = if arch == "mamba" { &rwkv } else { &mamba };
        let mut foreign = other.new_cache();
        invalid_request(
            "another model's cache",
            model.forward_cached(&batch, &logits, &mut foreign),
        );
    }
    let mlp = CapturePlan::new().with(Site::MlpOut(0), Positions::All);
    let msg = invalid_request("mamba mlp_out", mamba.forward(&batch, &mlp));
    assert!(msg.contains("MLP"), "{msg}");
}

/// `rescale_every = 1`: HF halves the hidden state after every block and divides block `l`'s
/// output weights by `2^l`; since every branch reads a LayerNorm of the residual, the rescaled
/// model computes the plain one's residual stream divided by `2^(l+1)` (up to the norms' eps)
/// and the same logits.
#[test]
fn rwkv_rescale_every_halves_the_residual_stream() {
    if !enabled(Backend::Flex) {
        return;
    }
    let plain = load("rwkv", Backend::Flex).model;
    let dir = modified_copy("rwkv", |_| {}, |cfg| cfg["rescale_every"] = 1.into());
    let rescaled = strata_core::registry::load_model(
        "tiny-rescaled",
        &ModelSource::Path(dir.path().to_path_buf()),
        &Backend::Flex.device(),
    )
    .unwrap()
    .model;
    let batch = TokenBatch::new(fixture_rows("rwkv")).unwrap();
    let mut plan = CapturePlan::new().with(Site::Logits, Positions::All);
    for l in 0..3 {
        plan.add(Site::ResidPost(l), Positions::All);
        plan.add(Site::AttnOut(l), Positions::All);
    }
    let (p, r) = (
        plain.forward(&batch, &plan).unwrap(),
        rescaled.forward(&batch, &plan).unwrap(),
    );
    for l in 0..3 {
        for (site, scale) in [
            (Site::ResidPost(l), 2f32.powi(l as i32 + 1)),
            (Site::AttnOut(l), 2f32.powi(l as i32)),
        ] {
            let got: Vec<f32> = values(&r, site).iter().map(|v| v * scale).collect();
            assert_close(
                &format!("rescaled {site} · {scale}"),
                &got,
                &values(&p, site),
                &[2, 12, 64],
                1e-2,
                1e-2,
            );
            if scale != 1.0 {
                assert_ne!(values(&r, site), values(&p, site), "{site} is rescaled");
            }
        }
    }
    assert_close(
        "rescaled logits",
        &values(&r, Site::Logits),
        &values(&p, Site::Logits),
        &[2, 12, 512],
        1e-2,
        1e-2,
    );
}

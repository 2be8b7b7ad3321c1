//! Fixture parity of the Gemma 3 and BERT crates against Hugging Face `transformers`
//! (`shared/fixtures/README.md` Part 1): every hidden state, layer-0 attention, logits (Gemma 3),
//! `last_hidden_state` and `pooler_output` (BERT) on flex, ndarray and wgpu; Gemma 3's sliding
//! window, branch captures, attention-key masks, incremental decoding past the window and greedy
//! generation; BERT's padding mask and the requests an encoder refuses; config variants and
//! load errors.
//!
//! `cargo test -p strata-tests --test parity_gemma3_bert -- --nocapture` prints the deviations;
//! `STRATA_TEST_BACKENDS=flex` restricts the backends.

use strata_plugins as _;

use strata_core::{
    AttentionBlock, Backend, CapturePlan, Error, Intervention, LanguageModel, Layers, ModelFiles,
    ModelSource, PadSide, Positions, Site, TokenBatch,
};
use strata_tests::parity::{
    ATOL, RTOL, TinyCheck, check_tiny, decode_matches_full, enabled, greedy_matches_full_forwards,
    id_rows, load, modified_copy, values,
};
use strata_tests::{assert_close, tiny_dir};

/// Gemma 3 fixture: `sliding_window`, and the batch shape of `expected.safetensors`.
const WINDOW: usize = 6;
const B: usize = 2;
const T: usize = 12;

/// `resid_post.l = resid_post.{l-1} + attn_out.l + mlp_out.l` (pre-norm residual stream): the
/// branch captures are exactly what joins the residual.
fn branches_sum_to_the_residual(check: &TinyCheck, backend: Backend) {
    let model = &check.loaded.model;
    let n = model.info().n_layers;
    let mut plan = CapturePlan::new().with(Site::Embed, Positions::All);
    for l in 0..n {
        for site in [Site::AttnOut(l), Site::MlpOut(l), Site::ResidPost(l)] {
            plan.add(site, Positions::All);
        }
    }
    let caps = model.forward(&check.batch, &plan).unwrap();
    let mut prev = values(&caps, Site::Embed);
    for l in 0..n {
        let (a, m) = (
            values(&caps, Site::AttnOut(l)),
            values(&caps, Site::MlpOut(l)),
        );
        let sum: Vec<f32> = prev
            .iter()
            .zip(&a)
            .zip(&m)
            .map(|((x, a), m)| x + a + m)
            .collect();
        let resid = values(&caps, Site::ResidPost(l));
        assert_close(
            &format!("gemma3/{backend} embed/resid_post + attn_out + mlp_out, layer {l}"),
            &sum,
            &resid,
            &[B, T, 64],
            1e-5,
            1e-5,
        );
        prev = resid;
    }
}

mod tiny {
    use super::*;

    fn gemma3(backend: Backend) {
        let Some(check) = check_tiny("gemma3", backend) else {
            return;
        };
        let info = check.loaded.model.info();
        assert_eq!(info.architecture, "gemma3");
        assert_eq!((info.n_layers, info.d_model, info.vocab_size), (3, 64, 512));
        assert_eq!((info.n_heads, info.n_kv_heads, info.head_dim), (4, 1, 32));
        assert!(info.causal && info.has_lm_head);

        // Layer 0 slides: query i sees keys i - 6 < j <= i, every other probability is exactly 0
        // (in HF's tensor too), and what is visible sums to 1.
        let ours = values(&check.captures, Site::AttnPattern(0));
        let theirs = check.expected["attentions.0"].f32();
        let mut hidden_by_window = 0;
        for bh in 0..B * 4 {
            for i in 0..T {
                let row = &ours[(bh * T + i) * T..(bh * T + i + 1) * T];
                for (j, &p) in row.iter().enumerate() {
                    let visible = j <= i && j + WINDOW > i;
                    if visible {
                        assert!(p > 0.0, "row {bh} query {i} key {j}: {p}");
                    } else {
                        assert_eq!(p.to_bits(), 0f32.to_bits(), "query {i} key {j}: {p}");
                        assert_eq!(theirs[(bh * T + i) * T + j], 0.0, "HF query {i} key {j}");
                        hidden_by_window += usize::from(j <= i);
                    }
                }
                let total: f32 = row.iter().sum();
                assert!((total - 1.0).abs() < 1e-5, "query {i}: sum {total}");
            }
        }
        // Queries 6..11 lose keys 0..=i-6: 1 + 2 + … + 6 = 21 pairs per row and head.
        assert_eq!(hidden_by_window, B * 4 * 21);

        branches_sum_to_the_residual(&check, backend);

        // A plan that needs only block 0 stops there and captures the same values.
        let early = CapturePlan::new().with(Site::ResidPost(0), Positions::Last);
        let shallow = check.loaded.model.forward(&check.batch, &early).unwrap();
        let deep = values(&check.captures, Site::ResidPost(0));
        let last: Vec<f32> = (0..B)
            .flat_map(|b| deep[(b * T + T - 1) * 64..(b * T + T) * 64].to_vec())
            .collect();
        assert_close(
            "resid_post.0 (early stop)",
            &values(&shallow, Site::ResidPost(0)),
            &last,
            &[B, 1, 64],
            // wgpu's autotuned kernels may differ between the two plans' shapes by float rounding.
            1e-5,
            1e-5,
        );
    }

    fn bert(backend: Backend) {
        let Some(check) = check_tiny("bert", backend) else {
            return;
        };
        let model = &check.loaded.model;
        let info = model.info();
        assert_eq!(info.architecture, "bert");
        assert_eq!((info.n_layers, info.d_model, info.head_dim), (3, 64, 16));
        assert!(!info.causal && !info.has_lm_head);
        // The fixture runs every token as type 0, which is what Strata does.
        assert!(
            check.expected["token_type_ids"]
                .i64()
                .iter()
                .all(|&t| t == 0)
        );

        // `final_norm` is the last block's output (BERT has no final norm).
        let plan = CapturePlan::new()
            .with(Site::FinalNorm, Positions::All)
            .with(Site::ResidPost(2), Positions::All);
        let caps = model.forward(&check.batch, &plan).unwrap();
        assert_eq!(
            values(&caps, Site::FinalNorm),
            values(&caps, Site::ResidPost(2))
        );

        // The pooler: `tanh(dense(h[:, 0]))`.
        let files = ModelFiles::open(&ModelSource::Path(tiny_dir("bert"))).unwrap();
        let bert = strata_model_bert::Bert::load(&files, "tiny", &backend.device()).unwrap();
        let caps = bert.forward(&check.batch, &plan).unwrap();
        let pooled = bert
            .pooler(caps.hidden(Site::ResidPost(2)).unwrap())
            .unwrap();
        let want = &check.expected["pooler_output"];
        let dev = assert_close(
            &format!("bert/{backend} pooler_output"),
            &pooled.try_into_vec_as::<f32>().unwrap(),
            want.f32(),
            &want.shape,
            ATOL,
            RTOL,
        );
        eprintln!("tiny/bert on {backend}: pooler_output max |Δ| {dev:.2e}");

        padded_rows_equal_rows_alone(model.as_ref(), &id_rows(&check.expected["input_ids"]));
    }

    /// Bidirectional attention hides padding keys: each row of a padded batch (either side)
    /// equals the row run alone, at its real positions.
    fn padded_rows_equal_rows_alone(model: &dyn LanguageModel, ids: &[Vec<u32>]) {
        let rows = vec![ids[0].clone(), ids[1][..7].to_vec()];
        let plan = CapturePlan::new()
            .with(Site::ResidPost(2), Positions::All)
            .with(Site::AttnPattern(0), Positions::Last);
        for side in [PadSide::Right, PadSide::Left] {
            let batch = TokenBatch::with_padding(rows.clone(), side, 0).unwrap();
            let caps = model.forward(&batch, &plan).unwrap();
            let got = values(&caps, Site::ResidPost(2));
            let probs = values(&caps, Site::AttnPattern(0));
            for (b, row) in rows.iter().enumerate() {
                let alone = values(
                    &model
                        .forward(&TokenBatch::single(row.clone()).unwrap(), &plan)
                        .unwrap(),
                    Site::ResidPost(2),
                );
                let start = batch.padded_index(b, 0);
                let len = row.len();
                assert_close(
                    &format!("bert {side:?}-padded row {b} vs alone"),
                    &got[(b * T + start) * 64..(b * T + start + len) * 64],
                    &alone,
                    &[len, 64],
                    1e-5,
                    1e-5,
                );
                // The last real query gives padding keys exactly 0.
                for h in 0..4 {
                    let p = &probs[(b * 4 + h) * T..(b * 4 + h + 1) * T];
                    for (j, &v) in p.iter().enumerate() {
                        if j < start || j >= start + len {
                            assert_eq!(v, 0.0, "{side:?} row {b} head {h} pad key {j}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn gemma3_flex() {
        gemma3(Backend::Flex);
    }

    #[test]
    fn gemma3_ndarray() {
        gemma3(Backend::Ndarray);
    }

    #[test]
    fn gemma3_wgpu() {
        gemma3(Backend::Wgpu);
    }

    #[test]
    fn bert_flex() {
        bert(Backend::Flex);
    }

    #[test]
    fn bert_ndarray() {
        bert(Backend::Ndarray);
    }

    #[test]
    fn bert_wgpu() {
        bert(Backend::Wgpu);
    }
}

mod decode {
    use super::*;

    /// The fixture's two rows of 12 ids.
    fn ids() -> Vec<Vec<u32>> {
        let expected =
            strata_tests::read_safetensors(&tiny_dir("gemma3").join("expected.safetensors"));
        id_rows(&expected["input_ids"])
    }

    /// Cached decoding equals full forwards well past the 6-token window (sliding layers must
    /// drop keys from the cache's view as it grows), batched and left-padded, with and without
    /// an attention-key mask in absolute positions.
    fn cached_equals_full(backend: Backend) {
        if !enabled(backend) {
            return;
        }
        let ids = ids();
        let model = load("gemma3", backend).model;
        let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
        let single = decode_matches_full(model.as_ref(), &ids[..1], &[3], &plan);
        // Prompts of 4 and 2 tokens, 8 steps: rows of 12 and 10 tokens.
        let rows = vec![ids[0].clone(), ids[1][..11].to_vec()];
        let batched = decode_matches_full(model.as_ref(), &rows, &[4, 2], &plan);
        let blocked = plan
            .clone()
            .intervene(Intervention::BlockAttention(AttentionBlock {
                blocked: (1..16).map(|q| (q, 1)).collect(),
                ..AttentionBlock::default()
            }));
        let masked = decode_matches_full(model.as_ref(), &rows, &[4, 2], &blocked);
        eprintln!(
            "gemma3 decode on {backend}: max |Δ| single {single:.2e}, left-padded batch \
             {batched:.2e}, with key mask {masked:.2e}"
        );
    }

    #[test]
    fn cached_equals_full_flex() {
        cached_equals_full(Backend::Flex);
    }

    #[test]
    fn cached_equals_full_wgpu() {
        cached_equals_full(Backend::Wgpu);
    }

    /// Greedy generation through the cache (15 tokens in all, past the window) equals the
    /// argmax of repeated full forwards, batched and alone.
    #[test]
    fn greedy_through_the_cache_equals_argmax_of_full_forwards() {
        let model = load("gemma3", Backend::Flex).model;
        let prompts = vec![vec![431, 59, 66, 509, 108], vec![170, 322, 319]];
        greedy_matches_full_forwards("gemma3", model.as_ref(), &prompts, 10);
    }

    /// An attention-key mask on the full layer (2), one head: exactly those probabilities are 0,
    /// the rest of each row renormalises; other heads are untouched.
    #[test]
    fn attention_key_mask_on_one_head() {
        let model = load("gemma3", Backend::Flex).model;
        let batch = TokenBatch::new(ids()).unwrap();
        let plan = CapturePlan::new().with(Site::AttnPattern(2), Positions::All);
        let base = values(&model.forward(&batch, &plan).unwrap(), Site::AttnPattern(2));
        let blocked_pairs = vec![(9, 0), (9, 4), (11, 11), (3, 2)];
        let masked_plan = plan
            .clone()
            .intervene(Intervention::BlockAttention(AttentionBlock {
                layers: Layers::Only(vec![2]),
                heads: Some(vec![1]),
                rows: None,
                blocked: blocked_pairs.clone(),
            }));
        let masked = values(
            &model.forward(&batch, &masked_plan).unwrap(),
            Site::AttnPattern(2),
        );
        for b in 0..B {
            for h in 0..4 {
                for i in 0..T {
                    let at = |j: usize| ((b * 4 + h) * T + i) * T + j;
                    let lost: Vec<usize> = (0..T)
                        .filter(|&j| h == 1 && blocked_pairs.contains(&(i, j)))
                        .collect();
                    let kept: f64 = (0..=i)
                        .filter(|j| !lost.contains(j))
                        .map(|j| base[at(j)] as f64)
                        .sum();
                    for j in 0..T {
                        if lost.contains(&j) {
                            assert_eq!(masked[at(j)].to_bits(), 0f32.to_bits());
                        } else {
                            let want = base[at(j)] as f64 / kept;
                            assert!(
                                (masked[at(j)] as f64 - want).abs() < 1e-6,
                                "b{b} h{h} q{i} k{j}: {} vs {want}",
                                masked[at(j)]
                            );
                        }
                    }
                }
            }
        }
    }
}

mod encoder {
    use super::*;

    /// BERT refuses what needs a language-model head or a decoding state, with typed input
    /// errors (never a panic).
    #[test]
    fn logits_and_generation_are_input_errors() {
        let model = load("bert", Backend::Flex).model;
        let batch = TokenBatch::single(vec![101, 7, 8, 102]).unwrap();
        let logits = CapturePlan::new().with(Site::Logits, Positions::Last);
        match model.forward(&batch, &logits) {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains("logits"), "{msg}"),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        let plan = CapturePlan::new().with(Site::ResidPost(0), Positions::Last);
        match model.forward_cached(&batch, &plan, &mut model.new_cache()) {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains("encoder"), "{msg}"),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
        let err = strata_core::generate(
            model.as_ref(),
            &[vec![101, 7]],
            &strata_core::GenerateOptions::default(),
            None,
        )
        .expect_err("an encoder cannot generate");
        assert!(err.is_input_error(), "{err}");
        // A sequence past `max_position_embeddings` (64) is refused before any lookup.
        let long = TokenBatch::single(vec![7; 65]).unwrap();
        match model.forward(&long, &plan) {
            Err(Error::InvalidRequest(msg)) => assert!(msg.contains("context length"), "{msg}"),
            other => panic!("expected InvalidRequest, got {other:?}"),
        }
    }
}

mod configs {
    use super::*;

    fn load_dir(dir: &std::path::Path) -> strata_core::Result<strata_core::LoadedModel> {
        strata_plugins::load_model(
            "variant",
            &ModelSource::Path(dir.to_path_buf()),
            &Backend::Flex.device(),
        )
    }

    fn logits(model: &dyn LanguageModel) -> Vec<f32> {
        let ids = vec![431, 59, 66, 509, 108, 492, 424, 449, 139, 173];
        let plan = CapturePlan::new().with(Site::Logits, Positions::All);
        values(
            &model
                .forward(&TokenBatch::single(ids).unwrap(), &plan)
                .unwrap(),
            Site::Logits,
        )
    }

    /// The pre-transformers-5 config form (`sliding_window_pattern`, top-level `rope_theta` for
    /// full layers, `rope_local_base_freq` for sliding ones, `hidden_act`) loads the same model.
    #[test]
    fn older_gemma3_config_form_loads_the_same_model() {
        let reference = logits(load("gemma3", Backend::Flex).model.as_ref());
        let dir = modified_copy(
            "gemma3",
            |_| {},
            |c| {
                let obj = c.as_object_mut().unwrap();
                for key in ["layer_types", "rope_parameters", "_sliding_window_pattern"] {
                    obj.remove(key);
                }
                obj.insert("sliding_window_pattern".into(), 3.into());
                obj.insert("rope_theta".into(), 1e6.into());
                obj.insert("rope_local_base_freq".into(), 1e4.into());
                obj.remove("hidden_activation");
                obj.insert("hidden_act".into(), "gelu_pytorch_tanh".into());
            },
        );
        let model = load_dir(dir.path()).unwrap().model;
        assert_eq!(logits(model.as_ref()), reference);
    }

    fn model_error(dir: &std::path::Path) -> Error {
        match load_dir(dir) {
            Ok(_) => panic!("loading {} should fail", dir.display()),
            Err(e) => {
                assert!(e.is_input_error(), "{e}");
                e
            }
        }
    }

    #[test]
    fn bad_gemma3_checkpoints_are_errors_naming_the_field_or_tensor() {
        let name = "model.layers.1.self_attn.q_norm.weight";
        let dir = modified_copy("gemma3", |t| drop(t.remove(name)), |_| {});
        let err = model_error(dir.path());
        assert!(
            matches!(err, Error::Model { .. }) && err.to_string().contains(name),
            "{err}"
        );

        let dir = modified_copy(
            "gemma3",
            |_| {},
            |c| c["layer_types"][1] = "chunked_attention".into(),
        );
        let err = model_error(dir.path());
        assert!(
            err.to_string().contains("layer_types") && err.to_string().contains("chunked"),
            "{err}"
        );

        let dir = modified_copy(
            "gemma3",
            |_| {},
            |c| c["final_logit_softcapping"] = 30.0.into(),
        );
        let err = model_error(dir.path());
        assert!(
            matches!(err, Error::Unsupported(_))
                && err.to_string().contains("final_logit_softcapping"),
            "{err}"
        );

        let dir = modified_copy(
            "gemma3",
            |_| {},
            |c| c["hidden_activation"] = "swiglu".into(),
        );
        let err = model_error(dir.path());
        assert!(err.to_string().contains("hidden_activation"), "{err}");
    }

    #[test]
    fn bad_bert_checkpoints_are_errors_naming_the_field_or_tensor() {
        let name = "encoder.layer.2.output.LayerNorm.bias";
        let dir = modified_copy("bert", |t| drop(t.remove(name)), |_| {});
        let err = model_error(dir.path());
        assert!(
            matches!(err, Error::Model { .. }) && err.to_string().contains(name),
            "{err}"
        );
        let dir = modified_copy(
            "bert",
            |_| {},
            |c| c["position_embedding_type"] = "relative_key".into(),
        );
        let err = model_error(dir.path());
        assert!(err.to_string().contains("position_embedding_type"), "{err}");
    }
}

//! Fixture parity of the model crates against Hugging Face `transformers` (see
//! `shared/fixtures/README.md` Part 1 and `EXTRA.md` Part 6), incremental decoding, and load-time
//! and request errors.
//!
//! Run with `cargo test -p strata-tests --test parity -- --nocapture` to see the deviations;
//! `STRATA_TEST_BACKENDS=flex,ndarray` restricts the backends.

use strata_plugins as _;

use strata_core::{
    Backend, CapturePlan, Captures, ModelSource, PadSide, Positions, Site, TokenBatch,
};
use strata_tests::parity::{
    ATOL, RTOL, check_tiny, decode_matches_full, enabled, full_plan, id_rows, load, values,
};
use strata_tests::{assert_close, read_safetensors, tiny_dir};

mod tiny {
    use super::*;

    fn parity(arch: &str, backend: Backend) {
        let Some(check) = check_tiny(arch, backend) else {
            return;
        };
        let model = &check.loaded.model;
        let info = model.info();
        assert_eq!((info.n_layers, info.d_model, info.vocab_size), (3, 64, 512));
        assert_eq!((info.n_heads, info.n_kv_heads, info.head_dim), (4, 2, 16));

        // A plan that needs only block 0 stops there and captures the same values (block 0's
        // pattern is asked for as in the full plan, so both run the same attention kernel).
        let early = CapturePlan::new()
            .with(Site::ResidPost(0), Positions::Last)
            .with(Site::AttnPattern(0), Positions::Last);
        let shallow = model.forward(&check.batch, &early).unwrap();
        let deep = values(&check.captures, Site::ResidPost(0));
        let d = info.d_model;
        let last: Vec<f32> = (0..2)
            .flat_map(|b| deep[(b * 12 + 11) * d..(b * 12 + 12) * d].to_vec())
            .collect();
        assert_close(
            "resid_post.0 (early stop)",
            &values(&shallow, Site::ResidPost(0)),
            &last,
            &[2, 1, d],
            1e-6,
            0.0,
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
        llama_flex: "llama" on Flex;
        llama_ndarray: "llama" on Ndarray;
        llama_wgpu: "llama" on Wgpu;
        qwen2_flex: "qwen2" on Flex;
        qwen2_ndarray: "qwen2" on Ndarray;
        qwen2_wgpu: "qwen2" on Wgpu;
    }
}

mod padded {
    use super::*;
    use strata_blocks::AttentionLayout;

    /// Compares `[b, 12, w]` values at the real positions of each row only.
    fn compare_real(
        what: &str,
        actual: &[f32],
        expected: &[f32],
        mask: &[Vec<i64>],
        width: usize,
    ) -> f64 {
        let pick = |v: &[f32]| -> Vec<f32> {
            let t = mask[0].len();
            mask.iter()
                .enumerate()
                .flat_map(|(b, row)| {
                    row.iter()
                        .enumerate()
                        .filter(|&(_, &m)| m == 1)
                        .flat_map(move |(j, _)| {
                            v[(b * t + j) * width..(b * t + j + 1) * width].to_vec()
                        })
                })
                .collect()
        };
        let (a, e) = (pick(actual), pick(expected));
        let n = a.len() / width;
        assert_close(what, &a, &e, &[n, width], ATOL, RTOL)
    }

    fn padded(file: &str, side: PadSide, backend: Backend) {
        if !enabled(backend) {
            return;
        }
        let fixture = read_safetensors(&tiny_dir("llama").join(file));
        let model = load("llama", backend).model;
        let mask = fixture["attention_mask"].i64_rows();
        let rows: Vec<Vec<u32>> = id_rows(&fixture["input_ids"])
            .into_iter()
            .zip(&mask)
            .map(|(ids, m)| {
                ids.into_iter()
                    .zip(m)
                    .filter(|&(_, &m)| m == 1)
                    .map(|(id, _)| id)
                    .collect()
            })
            .collect();
        let lengths: Vec<i64> = rows.iter().map(|r| r.len() as i64).collect();
        assert_eq!(lengths, fixture["lengths"].i64());
        let batch = TokenBatch::with_padding(rows.clone(), side, 0).unwrap();
        let positions: Vec<Vec<i64>> = AttentionLayout::for_batch(&batch)
            .position_ids()
            .iter()
            .map(|row| row.iter().map(|&p| p as i64).collect())
            .collect();
        assert_eq!(
            positions,
            fixture["position_ids"].i64_rows(),
            "position ids"
        );

        let n_layers = model.info().n_layers;
        let captures = model.forward(&batch, &full_plan(model.info())).unwrap();
        let mut pairs: Vec<(String, Site)> = (1..n_layers)
            .map(|i| (format!("hidden_states.{i}"), Site::ResidPost(i - 1)))
            .collect();
        pairs.push(("hidden_states.0".into(), Site::Embed));
        pairs.push((format!("hidden_states.{n_layers}"), Site::FinalNorm));
        pairs.push(("logits".into(), Site::Logits));
        let mut worst: f64 = 0.0;
        let mut worst_alone: f64 = 0.0;
        // Each row run alone, unpadded: its positions 0..len are the padded row's real slots.
        let alone: Vec<Captures> = rows
            .iter()
            .map(|r| {
                model
                    .forward(
                        &TokenBatch::single(r.clone()).unwrap(),
                        &full_plan(model.info()),
                    )
                    .unwrap()
            })
            .collect();
        for (name, site) in &pairs {
            let want = &fixture[name];
            let width = want.shape[2];
            let got = values(&captures, *site);
            worst = worst.max(compare_real(
                &format!("{file} {name}"),
                &got,
                want.f32(),
                &mask,
                width,
            ));
            for (b, single) in alone.iter().enumerate() {
                let len = rows[b].len();
                let start = batch.padded_index(b, 0);
                let t = batch.max_len();
                let padded_row = &got[(b * t + start) * width..(b * t + start + len) * width];
                let dev = assert_close(
                    &format!("{file} {name} row {b} vs alone"),
                    padded_row,
                    &values(single, *site),
                    &[len, width],
                    ATOL,
                    RTOL,
                );
                worst_alone = worst_alone.max(dev);
            }
        }
        eprintln!(
            "{file} on {backend}: max |Δ| vs HF {worst:.2e}, vs unpadded rows {worst_alone:.2e}"
        );
    }

    #[test]
    fn right_padded_flex() {
        padded("padded.safetensors", PadSide::Right, Backend::Flex);
    }

    #[test]
    fn left_padded_flex() {
        padded("padded_left.safetensors", PadSide::Left, Backend::Flex);
    }

    #[test]
    fn left_padded_wgpu() {
        padded("padded_left.safetensors", PadSide::Left, Backend::Wgpu);
    }
}

mod decode {
    use super::*;
    use strata_core::{AttentionBlock, Intervention};

    fn cached_equals_full(backend: Backend) {
        if !enabled(backend) {
            return;
        }
        let expected = read_safetensors(&tiny_dir("llama").join("expected.safetensors"));
        let ids = id_rows(&expected["input_ids"]);
        let model = load("llama", backend).model;
        let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
        let single = decode_matches_full(model.as_ref(), &ids[..1], &[8], &plan);
        // Two rows of different lengths, left-padded: prompts of 7 and 4 tokens, 5 steps.
        let rows = vec![ids[0].clone(), ids[1][..9].to_vec()];
        let batched = decode_matches_full(model.as_ref(), &rows, &[7, 4], &plan);
        // An attention-key mask in absolute positions (every query loses key 1) must land on the
        // same keys in the padded cache as in a full forward of each row.
        let blocked = plan
            .clone()
            .intervene(Intervention::BlockAttention(AttentionBlock {
                blocked: (1..16).map(|q| (q, 1)).collect(),
                ..AttentionBlock::default()
            }));
        let masked = decode_matches_full(model.as_ref(), &rows, &[7, 4], &blocked);
        eprintln!(
            "decode on {backend}: max |Δ| single {single:.2e}, left-padded batch {batched:.2e}, with key mask {masked:.2e}"
        );
    }

    #[test]
    fn cached_equals_full_flex() {
        cached_equals_full(Backend::Flex);
    }

    #[test]
    fn cached_equals_full_ndarray() {
        cached_equals_full(Backend::Ndarray);
    }

    #[test]
    fn cached_equals_full_wgpu() {
        cached_equals_full(Backend::Wgpu);
    }
}

/// Issue 7: on flex a forward pass over several rows runs as row groups side by side on the
/// threads (`strata_blocks::forward_in_row_groups`); it must keep what one pass over the whole
/// batch keeps (to 1e-6: gemm may order a smaller product's sums differently).
mod row_groups {
    use super::*;
    use strata_core::LanguageModel;

    /// Every capture of `batch` on a pool of `threads` threads.
    fn forward_on(threads: usize, model: &dyn LanguageModel, batch: &TokenBatch) -> Captures {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let mut plan = full_plan(model.info());
        plan.add(Site::ResidPost(0), Positions::Last);
        pool.install(|| model.forward(batch, &plan).unwrap())
    }

    fn issue_7_row_groups_keep_what_one_pass_keeps(arch: &str) {
        if !enabled(Backend::Flex) {
            return;
        }
        let model = load(arch, Backend::Flex).model;
        let row = |n: usize, first: u32| (first..first + n as u32).collect::<Vec<u32>>();
        // Rows 1 and 2 are the longest, one in each half; the padded slots are compared too.
        for side in [PadSide::Right, PadSide::Left] {
            let rows = vec![row(9, 3), row(12, 40), row(12, 90), row(5, 7)];
            let batch = TokenBatch::with_padding(rows, side, 0).unwrap();
            let one_pass = forward_on(1, model.as_ref(), &batch);
            let groups = forward_on(2, model.as_ref(), &batch);
            assert_eq!(groups.len(), one_pass.len());
            for (site, want) in one_pass.iter() {
                let got = groups.get(*site).expect("same sites");
                assert_eq!(got.dims(), want.dims(), "{arch} {side:?} {site}");
                let dims = want.dims();
                let width = dims[dims.len() - 1];
                let got = got.to_vec().unwrap();
                assert_close(
                    &format!("{arch} {side:?} {site} in row groups"),
                    &got,
                    &want.to_vec().unwrap(),
                    &[got.len() / width, width],
                    1e-6,
                    1e-6,
                );
            }
        }
    }

    #[test]
    fn issue_7_row_groups_llama() {
        issue_7_row_groups_keep_what_one_pass_keeps("llama");
    }

    #[test]
    fn issue_7_row_groups_gemma3() {
        issue_7_row_groups_keep_what_one_pass_keeps("gemma3");
    }

    #[test]
    fn issue_7_row_groups_mamba() {
        issue_7_row_groups_keep_what_one_pass_keeps("mamba");
    }
}

mod errors {
    use super::*;
    use std::path::Path;

    use strata_core::{DecodeCache, Error};

    /// A copy of `tiny/llama` with `edit` applied to its tensors and `config` to its config.
    fn modified_copy(
        edit: impl FnOnce(&mut strata_tests::parity::TensorMap),
        config: impl FnOnce(&mut serde_json::Value),
    ) -> tempfile::TempDir {
        strata_tests::parity::modified_copy("llama", edit, config)
    }

    fn load_err(dir: &Path) -> Error {
        match strata_plugins::load_model(
            "broken",
            &ModelSource::Path(dir.to_path_buf()),
            &Backend::Flex.device(),
        ) {
            Ok(_) => panic!("loading {} should fail", dir.display()),
            Err(e) => e,
        }
    }

    #[test]
    fn a_tensor_of_the_wrong_shape_names_file_and_tensor() {
        let name = "model.layers.1.self_attn.k_proj.weight";
        let dir = modified_copy(
            |t| {
                let (shape, v) = t.get_mut(name).unwrap();
                *shape = vec![16, 64];
                v.truncate(16 * 64);
            },
            |_| {},
        );
        match load_err(dir.path()) {
            Error::Model { path, message } => {
                assert_eq!(path, dir.path().join("model.safetensors"));
                assert!(
                    message.contains(name)
                        && message.contains("[16, 64]")
                        && message.contains("[32, 64]"),
                    "{message}"
                );
            }
            other => panic!("expected Error::Model, got {other:?}"),
        }
    }

    #[test]
    fn missing_tensors_and_bad_configs_are_model_errors() {
        let dir = modified_copy(|t| drop(t.remove("model.norm.weight")), |_| {});
        let err = load_err(dir.path());
        assert!(
            matches!(err, Error::Model { .. }) && err.to_string().contains("model.norm.weight"),
            "{err}"
        );

        let dir = modified_copy(
            |_| {},
            |c| drop(c.as_object_mut().unwrap().remove("hidden_size")),
        );
        let err = load_err(dir.path());
        assert!(
            matches!(err, Error::Model { .. }) && err.to_string().contains("hidden_size"),
            "{err}"
        );
        assert!(err.to_string().contains("config.json"), "{err}");

        let dir = modified_copy(|_| {}, |c| c["num_key_value_heads"] = 3.into());
        let err = load_err(dir.path());
        assert!(
            matches!(err, Error::Model { .. }) && err.to_string().contains("num_key_value_heads"),
            "{err}"
        );

        let dir = modified_copy(
            |_| {},
            |c| {
                c["rope_parameters"] =
                    serde_json::json!({"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})
            },
        );
        let err = load_err(dir.path());
        assert!(
            matches!(err, Error::Unsupported(_)) && err.to_string().contains("yarn"),
            "{err}"
        );
    }

    #[test]
    fn a_tied_checkpoint_without_lm_head_loads_and_counts_the_matrix_once() {
        let dir = modified_copy(
            |t| drop(t.remove("lm_head.weight")),
            |c| c["tie_word_embeddings"] = true.into(),
        );
        let model = strata_plugins::load_model(
            "tied",
            &ModelSource::Path(dir.path().to_path_buf()),
            &Backend::Flex.device(),
        )
        .unwrap()
        .model;
        assert_eq!(model.info().n_params, 176_576 - 512 * 64);
        let batch = TokenBatch::single(vec![5, 6, 7]).unwrap();
        let c = model
            .forward(
                &batch,
                &CapturePlan::new().with(Site::Logits, Positions::All),
            )
            .unwrap();
        assert_eq!(c.hidden(Site::Logits).unwrap().dims(), [1, 3, 512]);
    }

    #[test]
    fn bad_requests_are_invalid_request_errors() {
        let model = load("llama", Backend::Flex).model;
        let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
        let invalid = |r: strata_core::Result<Captures>, needle: &str| match r {
            Err(Error::InvalidRequest(msg)) => {
                assert!(msg.contains(needle), "`{msg}` should mention `{needle}`")
            }
            Err(other) => panic!("expected InvalidRequest, got {other:?}"),
            Ok(_) => panic!("expected an error mentioning `{needle}`"),
        };
        invalid(
            model.forward(&TokenBatch::single(vec![5, 512]).unwrap(), &plan),
            "512",
        );
        invalid(
            model.forward(&TokenBatch::single(vec![5; 65]).unwrap(), &plan),
            "context length",
        );
        invalid(
            model.forward(
                &TokenBatch::single(vec![5]).unwrap(),
                &CapturePlan::new().with(Site::ResidPost(3), Positions::All),
            ),
            "layer 3",
        );

        let right = TokenBatch::new(vec![vec![5, 6, 7], vec![5]]).unwrap();
        invalid(
            model.forward_cached(&right, &plan, &mut model.new_cache()),
            "left-padded",
        );
        invalid(
            model.forward_cached(&right, &plan, &mut DecodeCache::new(())),
            "new_cache",
        );
        let mut cache = model.new_cache();
        model
            .forward_cached(&TokenBatch::single(vec![5; 60]).unwrap(), &plan, &mut cache)
            .unwrap();
        let step = TokenBatch::single(vec![5; 5]).unwrap();
        invalid(
            model.forward_cached(&step, &plan, &mut cache),
            "context length",
        );
        // The failed step left the cache usable.
        model
            .forward_cached(&TokenBatch::single(vec![5]).unwrap(), &plan, &mut cache)
            .unwrap();
    }
}

//! Real checkpoints read from GGUF against Hugging Face `transformers` (`shared/fixtures/README.md`
//! Part 2, `EXTRA.md` Part 5): dequantisation bit for bit, tokenizers rebuilt from the metadata,
//! SmolLM2-135M (Q4_1), Qwen2.5-Coder-0.5B (Q4_K_M) and Gemma-3-270M (Q4_K_M) forward passes and
//! greedy continuations, all-MiniLM-L6-v2 (BERT, safetensors) hidden states, and damaged files.
//!
//! The models come from `../shared/fixtures/fetch-models.sh "$STRATA_MODELS"` (default
//! `~/.cache/strata/models`); without them a local run skips with a message and a CI run fails.
//! `cargo test -p strata-tests --test real_models -- --nocapture` prints the deviations.

use strata_plugins as _;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant;

use strata_core::gguf::{GgufFile, build_tokenizer};
use strata_core::{
    Backend, CapturePlan, GenerateOptions, LoadedModel, ModelFiles, ModelSource, Positions,
    Sampling, Site, TokenBatch,
};
use strata_tests::{Stored, assert_close, backends, read_safetensors, real_dir, require_model};

/// `logits_last`, `generated_logit`, `top5_logits`, `top20_logprobs`: `atol 1e-3` (+ `rtol 1e-4`
/// for logits, as the fixtures README suggests).
const ATOL_LOGITS: f64 = 1e-3;
const RTOL_LOGITS: f64 = 1e-4;
/// `hidden_states_last` rows: `max|a - b| <= 1e-4 · max|b_row| + 1e-4`.
const REL_HIDDEN: f64 = 1e-4;
/// Greedy continuations are 12 tokens long.
const NEW_TOKENS: usize = 12;

/// A real GGUF model: its fixture folder and its file under the models folder.
struct Real {
    fixture: &'static str,
    file: &'static str,
}

const SMOLLM2: Real = Real {
    fixture: "smollm2-135m-instruct-q4_1",
    file: "smollm2-135m-instruct-q4_1/SmolLM2-135M-Instruct.Q4_1.gguf",
};
const QWEN25: Real = Real {
    fixture: "qwen2.5-coder-0.5b-instruct-q4_k_m",
    file: "qwen2.5-coder-0.5b-instruct-q4_k_m/qwen.gguf",
};
const GEMMA3: Real = Real {
    fixture: "gemma3-270m-q4_k_m",
    file: "gemma3-270m-q4_k_m/gemma-3-270m-q4_k_m.gguf",
};

impl Real {
    fn fixture(&self, file: &str) -> BTreeMap<String, Stored> {
        read_safetensors(&real_dir(self.fixture).join(file))
    }

    /// The prompts of `tokens.json`.
    fn prompts(&self) -> Vec<String> {
        let path = real_dir(self.fixture).join("tokens.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        json["prompts"]
            .as_array()
            .expect("tokens.json: `prompts` is a list")
            .iter()
            .map(|p| p["prompt"].as_str().expect("a prompt").to_string())
            .collect()
    }

    fn load(&self, path: &Path, backend: Backend) -> LoadedModel {
        let start = Instant::now();
        let loaded = strata_plugins::load_model(
            self.fixture,
            &ModelSource::Path(path.to_path_buf()),
            &backend.device(),
        )
        .unwrap_or_else(|e| panic!("loading {} on {backend}: {e}", path.display()));
        eprintln!(
            "{}: loaded on {backend} in {:.1?}",
            self.fixture,
            start.elapsed()
        );
        loaded
    }
}

fn ids_u32(stored: &Stored) -> Vec<u32> {
    stored
        .i64()
        .iter()
        .map(|&v| u32::try_from(v).expect("a token id"))
        .collect()
}

/// Ids of the `k` largest values, largest first (ties by id).
fn top_k(values: &[f32], k: usize) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..values.len() as u32).collect();
    ids.sort_by(|&a, &b| {
        values[b as usize]
            .total_cmp(&values[a as usize])
            .then(a.cmp(&b))
    });
    ids.truncate(k);
    ids
}

// ---------------------------------------------------------------------------------------------
// Dequantisation

/// Every sample of `dequant.safetensors` (the first 2 rows of the first tensor of each ggml type,
/// by gguf-py) equals Strata's dequantisation bit for bit.
fn dequant_exact(real: &Real) {
    let Some(path) = require_model(real.file) else {
        return;
    };
    let file = GgufFile::open(&path).unwrap();
    let samples = real.fixture("dequant.safetensors");
    assert!(!samples.is_empty());
    for (key, stored) in &samples {
        let (type_name, tensor) = key.split_once('.').expect("keys are TYPE.tensor");
        let info = file
            .tensor(tensor)
            .unwrap_or_else(|| panic!("{key}: no tensor `{tensor}` in the file"));
        assert_eq!(info.ggml_type.name(), type_name, "{key}: ggml type");
        let (values, shape) = file.read_f32(tensor).unwrap();
        let row = *shape.last().unwrap();
        assert_eq!(
            stored.shape,
            vec![2, row],
            "{key}: sample shape vs GGUF row length"
        );
        let expected = stored.f32();
        let mismatches = values[..2 * row]
            .iter()
            .zip(expected)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(
            mismatches,
            0,
            "{key}: {mismatches} of {} values differ from gguf-py",
            2 * row
        );
        eprintln!("{}: {key} ({shape:?}) bit-exact", real.fixture);
    }
}

#[test]
fn dequant_smollm2() {
    dequant_exact(&SMOLLM2);
}

#[test]
fn dequant_qwen25() {
    dequant_exact(&QWEN25);
}

#[test]
fn dequant_gemma3() {
    dequant_exact(&GEMMA3);
}

// ---------------------------------------------------------------------------------------------
// Tokenizers

/// The ids of every `tokens.json` prompt, `encode(prompt, add_special = true)`, and decoding
/// back to the prompt; plus `extra` strings that must round-trip.
fn tokenizer_matches(real: &Real, extra: &[(&str, Option<&[u32]>)]) {
    let Some(path) = require_model(real.file) else {
        return;
    };
    let start = Instant::now();
    let file = GgufFile::open(&path).unwrap();
    let tok = build_tokenizer(&file)
        .unwrap()
        .expect("the file describes a tokenizer");
    eprintln!(
        "{}: tokenizer built in {:.1?}",
        real.fixture,
        start.elapsed()
    );
    let expected = real.fixture("expected.safetensors");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(real_dir(real.fixture).join("tokens.json")).unwrap(),
    )
    .unwrap();
    let bos_added = json["prompts"][0]["bos_added"].as_bool().unwrap();
    for (k, prompt) in real.prompts().iter().enumerate() {
        let ids = tok.encode(prompt, true).unwrap();
        assert_eq!(
            ids,
            ids_u32(&expected[&format!("input_ids.{k}")]),
            "{}: prompt {k}",
            real.fixture
        );
        let body = if bos_added { &ids[1..] } else { &ids[..] };
        assert_eq!(
            &tok.decode(body).unwrap(),
            prompt,
            "{}: prompt {k} does not round-trip",
            real.fixture
        );
        assert_eq!(
            tok.encode(prompt, false).unwrap(),
            body,
            "{}: prompt {k} without special tokens",
            real.fixture
        );
    }
    for (text, want) in extra {
        let ids = tok.encode(text, false).unwrap();
        if let Some(want) = want {
            assert_eq!(&ids, want, "{}: {text:?}", real.fixture);
        }
        assert_eq!(
            &tok.decode(&ids).unwrap(),
            text,
            "{}: {text:?} does not round-trip",
            real.fixture
        );
    }
}

/// Text every tokenizer must round-trip: digits, spacing, newlines, accents, CJK, emoji.
const ROUND_TRIP: &str =
    "Année 2024: 3.14159 — naïve café!\n\n\tIndented  two  spaces 東京 🚀 done.";

#[test]
fn tokenizer_smollm2() {
    tokenizer_matches(
        &SMOLLM2,
        &[
            // `smollm` isolates digits; control tokens are matched in the text (HF chat ids).
            ("2024", Some(&[34, 32, 34, 36])),
            (
                "<|im_start|>user\nWhat is 2+2?<|im_end|>\n",
                Some(&[1, 4093, 198, 1780, 314, 216, 34, 27, 34, 47, 2, 198]),
            ),
            (ROUND_TRIP, None),
        ],
    );
}

#[test]
fn tokenizer_qwen25() {
    tokenizer_matches(
        &QWEN25,
        &[
            ("<|im_start|>user\n<tool_call>x</tool_call><|im_end|>", None),
            (ROUND_TRIP, None),
        ],
    );
}

#[test]
fn tokenizer_gemma3() {
    tokenizer_matches(
        &GEMMA3,
        &[
            ("<start_of_turn>user\nHi<end_of_turn>\n", None),
            (ROUND_TRIP, None),
        ],
    );
}

// ---------------------------------------------------------------------------------------------
// Forward parity and greedy generation

/// Token ids, last-position logits (1e-3), per-layer last-position hidden states (relative
/// 1e-4) and top-5 ids (exact) for the 4 prompts of `expected.safetensors`.
fn forward_parity(real: &Real, loaded: &LoadedModel, with_hidden: bool) {
    let expected = real.fixture("expected.safetensors");
    let tok = loaded.tokenizer().unwrap();
    let info = loaded.model.info();
    let n_layers = info.n_layers;
    let (mut worst_logits, mut worst_hidden) = (0f64, 0f64);
    for (k, prompt) in real.prompts().iter().enumerate() {
        let ids = tok.encode(prompt, true).unwrap();
        assert_eq!(
            ids,
            ids_u32(&expected[&format!("input_ids.{k}")]),
            "prompt {k}: token ids"
        );
        let mut plan = CapturePlan::new().with(Site::Logits, Positions::Last);
        if with_hidden {
            plan.add(Site::Embed, Positions::Last);
            plan.add(Site::FinalNorm, Positions::Last);
            for l in 0..n_layers - 1 {
                plan.add(Site::ResidPost(l), Positions::Last);
            }
        }
        let captures = loaded
            .model
            .forward(&TokenBatch::single(ids).unwrap(), &plan)
            .unwrap();
        let get = |site: Site| {
            captures
                .get(site)
                .unwrap_or_else(|| panic!("{site} not captured"))
                .to_vec()
                .unwrap()
        };
        let logits = get(Site::Logits);
        let want = &expected[&format!("logits_last.{k}")];
        let what = format!("{} prompt {k} logits_last", real.fixture);
        worst_logits = worst_logits.max(assert_close(
            &what,
            &logits,
            want.f32(),
            &want.shape,
            ATOL_LOGITS,
            RTOL_LOGITS,
        ));
        let top5: Vec<i64> = top_k(&logits, 5).into_iter().map(i64::from).collect();
        assert_eq!(
            top5,
            expected[&format!("top5.{k}")].i64(),
            "{} prompt {k}: top-5 ids",
            real.fixture
        );
        if with_hidden {
            let rows = &expected[&format!("hidden_states_last.{k}")];
            let d = rows.shape[1];
            assert_eq!(rows.shape[0], n_layers + 1);
            for (i, want_row) in rows.f32().chunks(d).enumerate() {
                let site = match i {
                    0 => Site::Embed,
                    i if i == n_layers => Site::FinalNorm,
                    i => Site::ResidPost(i - 1),
                };
                let scale = want_row.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
                let atol = REL_HIDDEN * scale + REL_HIDDEN;
                let what = format!(
                    "{} prompt {k} hidden_states_last row {i} ({site})",
                    real.fixture
                );
                let dev = assert_close(&what, &get(site), want_row, &[d], atol, 0.0);
                worst_hidden = worst_hidden.max(dev / (scale + 1.0));
            }
        }
    }
    let hidden = if with_hidden {
        format!("; max hidden |Δ|/(max|h_row|+1) {worst_hidden:.2e}")
    } else {
        String::new()
    };
    eprintln!(
        "{}: max |Δ logits_last| {worst_logits:.2e}{hidden}",
        real.fixture
    );
}

/// The 12-token greedy continuations of the 4 prompts (one batch, left-padded, through the KV
/// cache) equal `generate.safetensors`.
fn greedy_parity(real: &Real, loaded: &LoadedModel) {
    let reference = real.fixture("generate.safetensors");
    let prompts: Vec<Vec<u32>> = (0..4)
        .map(|k| ids_u32(&reference[&format!("input_ids.{k}")]))
        .collect();
    let options = GenerateOptions {
        max_new_tokens: NEW_TOKENS,
        sampling: Sampling::Greedy,
        ..GenerateOptions::default()
    };
    let start = Instant::now();
    let generations =
        strata_core::generate(loaded.model.as_ref(), &prompts, &options, None).unwrap();
    for (k, generation) in generations.iter().enumerate() {
        let want = ids_u32(&reference[&format!("generated_ids.{k}")]);
        assert_eq!(
            generation.tokens, want,
            "{} prompt {k}: greedy continuation",
            real.fixture
        );
    }
    eprintln!(
        "{}: 4 × {NEW_TOKENS} greedy tokens exact, in {:.1?}",
        real.fixture,
        start.elapsed()
    );
}

/// One forward over each prompt + its continuation reproduces every step's top-5 ids and logits,
/// and for prompt 0 the top-20 log-probabilities (full-vocabulary log-softmax).
fn teacher_forced_parity(real: &Real, loaded: &LoadedModel) {
    let reference = real.fixture("generate.safetensors");
    let (mut worst_logit, mut worst_logprob) = (0f64, 0f64);
    for k in 0..4 {
        let prompt = ids_u32(&reference[&format!("input_ids.{k}")]);
        let full: Vec<u32> = prompt
            .iter()
            .chain(&ids_u32(&reference[&format!("generated_ids.{k}")]))
            .copied()
            .collect();
        let plan = CapturePlan::new().with(Site::Logits, Positions::All);
        let captures = loaded
            .model
            .forward(&TokenBatch::single(full).unwrap(), &plan)
            .unwrap();
        let logits = captures.get(Site::Logits).unwrap().to_vec().unwrap();
        let vocab = logits.len() / (prompt.len() + NEW_TOKENS);
        let top5_ids = reference[&format!("top5_ids.{k}")].i64_rows();
        let top5_logits = reference[&format!("top5_logits.{k}")].f32();
        for step in 0..NEW_TOKENS {
            let at = prompt.len() - 1 + step;
            let row = &logits[at * vocab..(at + 1) * vocab];
            let ids = top_k(row, 5);
            let as_i64 = |ids: &[u32]| ids.iter().map(|&i| i64::from(i)).collect::<Vec<_>>();
            assert_eq!(
                as_i64(&ids),
                top5_ids[step],
                "prompt {k} step {step}: top-5"
            );
            let ours: Vec<f32> = ids.iter().map(|&i| row[i as usize]).collect();
            let what = format!("{} prompt {k} step {step} top5_logits", real.fixture);
            let want = &top5_logits[step * 5..(step + 1) * 5];
            worst_logit = worst_logit.max(assert_close(&what, &ours, want, &[5], ATOL_LOGITS, 0.0));
            if k == 0 {
                let logprobs = strata_core::generate::log_softmax(row, 1.0);
                let ids20 = top_k(row, 20);
                assert_eq!(
                    as_i64(&ids20),
                    reference["top20_ids.0"].i64_rows()[step],
                    "step {step}: top-20 ids"
                );
                let ours: Vec<f32> = ids20.iter().map(|&i| logprobs[i as usize] as f32).collect();
                let want = &reference["top20_logprobs.0"].f32()[step * 20..(step + 1) * 20];
                let what = format!("{} step {step} top20_logprobs", real.fixture);
                worst_logprob =
                    worst_logprob.max(assert_close(&what, &ours, want, &[20], ATOL_LOGITS, 0.0));
            }
        }
    }
    eprintln!(
        "{}: max |Δ top5_logits| {worst_logit:.2e}; max |Δ top20_logprobs| {worst_logprob:.2e}",
        real.fixture
    );
}

/// Decoding one token per step through the KV cache (teacher-forced with the reference
/// continuation) reproduces every step's top-5 ids and logits. On flex from a GGUF file these
/// single-row products read the file's quantised blocks (`strata_blocks::cpu::packed`), so this
/// checks that path against transformers, as `teacher_forced_parity` checks the f32 one.
fn decode_steps_parity(real: &Real, loaded: &LoadedModel) {
    let reference = real.fixture("generate.safetensors");
    let plan = CapturePlan::new().with(Site::Logits, Positions::All);
    let mut worst = 0f64;
    for k in 0..4 {
        let prompt = ids_u32(&reference[&format!("input_ids.{k}")]);
        let generated = ids_u32(&reference[&format!("generated_ids.{k}")]);
        let top5_ids = reference[&format!("top5_ids.{k}")].i64_rows();
        let top5_logits = reference[&format!("top5_logits.{k}")].f32();
        let mut cache = loaded.model.new_cache();
        let mut input = prompt;
        for step in 0..NEW_TOKENS {
            let captures = loaded
                .model
                .forward_cached(&TokenBatch::single(input).unwrap(), &plan, &mut cache)
                .unwrap();
            let logits = captures.get(Site::Logits).unwrap().to_vec().unwrap();
            let vocab = loaded.model.info().vocab_size;
            let row = &logits[logits.len() - vocab..];
            let ids = top_k(row, 5);
            let as_i64: Vec<i64> = ids.iter().map(|&i| i64::from(i)).collect();
            assert_eq!(
                as_i64, top5_ids[step],
                "prompt {k} decoding step {step}: top-5"
            );
            let ours: Vec<f32> = ids.iter().map(|&i| row[i as usize]).collect();
            let what = format!(
                "{} prompt {k} decoding step {step} top5_logits",
                real.fixture
            );
            let want = &top5_logits[step * 5..(step + 1) * 5];
            worst = worst.max(assert_close(&what, &ours, want, &[5], ATOL_LOGITS, 0.0));
            input = vec![generated[step]];
        }
    }
    eprintln!(
        "{}: decoding steps, max |Δ top5_logits| {worst:.2e}",
        real.fixture
    );
}

#[test]
fn smollm2_parity_flex() {
    let Some(path) = require_model(SMOLLM2.file) else {
        return;
    };
    let loaded = SMOLLM2.load(&path, Backend::Flex);
    forward_parity(&SMOLLM2, &loaded, true);
    greedy_parity(&SMOLLM2, &loaded);
    teacher_forced_parity(&SMOLLM2, &loaded);
    decode_steps_parity(&SMOLLM2, &loaded);
}

#[test]
fn qwen25_parity_flex() {
    let Some(path) = require_model(QWEN25.file) else {
        return;
    };
    let loaded = QWEN25.load(&path, Backend::Flex);
    forward_parity(&QWEN25, &loaded, true);
    greedy_parity(&QWEN25, &loaded);
    teacher_forced_parity(&QWEN25, &loaded);
    decode_steps_parity(&QWEN25, &loaded);
}

#[test]
fn gemma3_parity_flex() {
    let Some(path) = require_model(GEMMA3.file) else {
        return;
    };
    let loaded = GEMMA3.load(&path, Backend::Flex);
    let info = loaded.model.info();
    assert_eq!(
        (info.architecture.as_str(), info.n_layers, info.d_model),
        ("gemma3", 18, 640)
    );
    assert_eq!((info.n_heads, info.n_kv_heads, info.head_dim), (4, 1, 256));
    forward_parity(&GEMMA3, &loaded, true);
    greedy_parity(&GEMMA3, &loaded);
    teacher_forced_parity(&GEMMA3, &loaded);
    decode_steps_parity(&GEMMA3, &loaded);
}

// ---------------------------------------------------------------------------------------------
// all-MiniLM-L6-v2 (BERT, safetensors + tokenizer.json)

const MINILM_FIXTURE: &str = "all-minilm-l6-v2";
const MINILM_DIR: &str = "all-minilm-l6-v2";

/// Token ids (`[CLS] … [SEP]`, no padding to 128), every `hidden_states_last` row (relative
/// 1e-4), the full `last_hidden_state` (`1e-4 + 1e-4·|b|`) and the sentence-transformers
/// embedding (mean over tokens, L2-normalised; `atol 1e-5`) of the 4 prompts.
#[test]
fn minilm_parity_flex() {
    let Some(path) = require_model(MINILM_DIR) else {
        return;
    };
    let real = Real {
        fixture: MINILM_FIXTURE,
        file: MINILM_DIR,
    };
    let loaded = real.load(&path, Backend::Flex);
    let info = loaded.model.info();
    assert_eq!(
        (info.architecture.as_str(), info.n_layers, info.d_model),
        ("bert", 6, 384)
    );
    let n_layers = info.n_layers;
    let expected = real.fixture("expected.safetensors");
    let tok = loaded.tokenizer().unwrap();
    let (mut worst_hidden, mut worst_last, mut worst_sentence) = (0f64, 0f64, 0f64);
    for (k, prompt) in real.prompts().iter().enumerate() {
        let ids = tok.encode(prompt, true).unwrap();
        assert_eq!(
            ids,
            ids_u32(&expected[&format!("input_ids.{k}")]),
            "prompt {k}: token ids"
        );
        let n = ids.len();
        let mut plan = CapturePlan::new().with(Site::Embed, Positions::Last);
        for l in 0..n_layers - 1 {
            plan.add(Site::ResidPost(l), Positions::Last);
        }
        plan.add(Site::ResidPost(n_layers - 1), Positions::All);
        let captures = loaded
            .model
            .forward(&TokenBatch::single(ids).unwrap(), &plan)
            .unwrap();
        let get = |site: Site| captures.get(site).unwrap().to_vec().unwrap();
        let last_hidden = get(Site::ResidPost(n_layers - 1));
        let rows = &expected[&format!("hidden_states_last.{k}")];
        let d = rows.shape[1];
        assert_eq!(rows.shape[0], n_layers + 1);
        for (i, want_row) in rows.f32().chunks(d).enumerate() {
            let (site, got) = match i {
                0 => (Site::Embed, get(Site::Embed)),
                i if i == n_layers => (
                    Site::ResidPost(i - 1),
                    last_hidden[(n - 1) * d..n * d].to_vec(),
                ),
                i => (Site::ResidPost(i - 1), get(Site::ResidPost(i - 1))),
            };
            let scale = want_row.iter().fold(0f64, |m, v| m.max(v.abs() as f64));
            let what = format!("{MINILM_FIXTURE} prompt {k} hidden_states_last row {i} ({site})");
            let atol = REL_HIDDEN * scale + REL_HIDDEN;
            let dev = assert_close(&what, &got, want_row, &[d], atol, 0.0);
            worst_hidden = worst_hidden.max(dev / (scale + 1.0));
        }
        let want = &expected[&format!("last_hidden_state.{k}")];
        let what = format!("{MINILM_FIXTURE} prompt {k} last_hidden_state");
        worst_last = worst_last.max(assert_close(
            &what,
            &last_hidden,
            want.f32(),
            &want.shape,
            1e-4,
            1e-4,
        ));
        // sentence-transformers: mean pooling over the tokens, then L2 normalisation.
        let mut mean = vec![0f64; d];
        for row in last_hidden.chunks(d) {
            mean.iter_mut()
                .zip(row)
                .for_each(|(m, &v)| *m += v as f64 / n as f64);
        }
        let norm = mean.iter().map(|v| v * v).sum::<f64>().sqrt();
        let sentence: Vec<f32> = mean.iter().map(|v| (v / norm) as f32).collect();
        let want = &expected[&format!("sentence_embedding.{k}")];
        let what = format!("{MINILM_FIXTURE} prompt {k} sentence_embedding");
        worst_sentence = worst_sentence.max(assert_close(
            &what,
            &sentence,
            want.f32(),
            &want.shape,
            1e-5,
            0.0,
        ));
    }
    eprintln!(
        "{MINILM_FIXTURE}: max hidden |Δ|/(max|h_row|+1) {worst_hidden:.2e}; max |Δ \
         last_hidden_state| {worst_last:.2e}; max |Δ sentence_embedding| {worst_sentence:.2e}"
    );
}

/// SmolLM2 logits and greedy continuations on the GPU backend (lavapipe on a CPU-only machine,
/// where burn is slow: the teacher-forced step checks, the same numerics, run on flex only).
#[test]
fn smollm2_parity_wgpu() {
    if !backends().contains(&Backend::Wgpu) {
        eprintln!("wgpu: skipped (not in STRATA_TEST_BACKENDS)");
        return;
    }
    let Some(path) = require_model(SMOLLM2.file) else {
        return;
    };
    let loaded = SMOLLM2.load(&path, Backend::Wgpu);
    forward_parity(&SMOLLM2, &loaded, false);
    greedy_parity(&SMOLLM2, &loaded);
}

// ---------------------------------------------------------------------------------------------
// Damaged files

/// A truncated copy of a real GGUF is an error naming the file (and the first tensor whose data
/// is missing), never a panic.
#[test]
fn truncated_gguf_is_an_error() {
    let Some(path) = require_model(SMOLLM2.file) else {
        return;
    };
    let bytes = std::fs::read(&path).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (what, len, needle) in [
        ("inside the header", 4096, "malformed GGUF header"),
        (
            "inside the tensor data",
            bytes.len() * 3 / 5,
            "run past the end of the file",
        ),
        (
            "by one byte",
            bytes.len() - 1,
            "run past the end of the file",
        ),
    ] {
        let cut = dir.path().join("cut.gguf");
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let err = match ModelFiles::open(&ModelSource::Path(cut.clone())) {
            Ok(_) => panic!("truncated {what}: opened without an error"),
            Err(e) => e,
        };
        let msg = err.to_string();
        assert!(
            msg.contains("cut.gguf") && msg.contains(needle),
            "truncated {what}: {msg}"
        );
        assert!(
            err.is_input_error(),
            "truncated {what}: not an input error: {msg}"
        );
        eprintln!("truncated {what}: {msg}");
    }
}

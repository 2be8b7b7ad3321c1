//! Generation through the KV cache against repeated full forwards, and seeded reproducibility.

use strata_plugins as _;

use std::sync::Mutex;

use strata_core::burn::tensor::Device;
use strata_core::{
    Backend, CapturePlan, Captures, DecodeCache, Finish, GenerateOptions, LanguageModel, ModelInfo,
    Sampling, TokenBatch, generate,
};

use strata_tests::parity::{greedy_by_full_forwards, greedy_matches_full_forwards, load};

const PROMPTS: [&[u32]; 2] = [&[431, 59, 66, 509, 108], &[170, 322, 319]];

#[test]
fn greedy_through_the_cache_equals_argmax_of_full_forwards() {
    // Batched (left-padded) and one prompt at a time give the same continuations.
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    for arch in ["llama", "qwen2"] {
        let model = load(arch, Backend::Flex);
        greedy_matches_full_forwards(arch, model.model.as_ref(), &prompts, 10);
    }
}

#[test]
fn seeded_sampling_is_reproducible_and_independent_of_the_batch() {
    let model = load("llama", Backend::Flex);
    let options = |seed| GenerateOptions {
        max_new_tokens: 12,
        sampling: Sampling::Sample {
            temperature: 1.5,
            top_k: Some(50),
            top_p: Some(0.95),
        },
        seed,
        ..GenerateOptions::default()
    };
    let prompts: Vec<Vec<u32>> = PROMPTS.iter().map(|p| p.to_vec()).collect();
    let run = |seed| generate(model.model.as_ref(), &prompts, &options(seed), None).unwrap();
    let first = run(3);
    assert_eq!(first, run(3), "same seed, same continuations");
    assert_ne!(first, run(4), "another seed gives other continuations");
    // Row 1 draws with seed + 1, so alone with that seed it continues identically.
    let alone = generate(model.model.as_ref(), &prompts[1..], &options(4), None).unwrap();
    assert_eq!(alone[0], first[1]);
}

#[test]
fn stop_tokens_end_a_row_early() {
    let model = load("llama", Backend::Flex);
    let expected = greedy_by_full_forwards(model.model.as_ref(), PROMPTS[0], 3);
    let options = GenerateOptions {
        max_new_tokens: 10,
        stop_tokens: vec![expected[1]],
        ..GenerateOptions::default()
    };
    let out = generate(model.model.as_ref(), &[PROMPTS[0].to_vec()], &options, None).unwrap();
    let stop_at = expected.iter().position(|&t| t == expected[1]).unwrap();
    assert_eq!(out[0].tokens, expected[..=stop_at].to_vec());
    assert_eq!(out[0].finish, Finish::StopToken);
}

#[test]
fn a_prompt_longer_than_the_context_is_an_input_error() {
    let model = load("llama", Backend::Flex);
    let long = vec![5u32; model.model.info().context_length + 1];
    let err = generate(
        model.model.as_ref(),
        &[long],
        &GenerateOptions::default(),
        None,
    )
    .err()
    .unwrap();
    assert!(err.is_input_error(), "{err}");
    assert!(err.to_string().contains("context"), "{err}");
}

/// Counts the rows of every decoding call of the model it wraps.
struct Counting<'a> {
    inner: &'a dyn LanguageModel,
    rows: Mutex<Vec<usize>>,
}

impl LanguageModel for Counting<'_> {
    fn info(&self) -> &ModelInfo {
        self.inner.info()
    }

    fn device(&self) -> &Device {
        self.inner.device()
    }

    fn forward(&self, batch: &TokenBatch, plan: &CapturePlan) -> strata_core::Result<Captures> {
        self.inner.forward(batch, plan)
    }

    fn new_cache(&self) -> DecodeCache {
        self.inner.new_cache()
    }

    fn forward_cached(
        &self,
        batch: &TokenBatch,
        plan: &CapturePlan,
        cache: &mut DecodeCache,
    ) -> strata_core::Result<Captures> {
        self.rows.lock().unwrap().push(batch.batch_size());
        self.inner.forward_cached(batch, plan, cache)
    }
}

#[test]
fn samples_of_one_prompt_share_its_forward_pass_and_equal_each_sample_alone() {
    let options = |seed| GenerateOptions {
        max_new_tokens: 6,
        sampling: Sampling::Sample {
            temperature: 2.0,
            top_k: None,
            top_p: None,
        },
        seed,
        ..GenerateOptions::default()
    };
    // One family per kind of decoding state: KV cache, Mamba's and RWKV's recurrent states.
    for arch in ["llama", "mamba", "rwkv"] {
        let loaded = load(arch, Backend::Flex);
        let model = Counting {
            inner: loaded.model.as_ref(),
            rows: Mutex::new(Vec::new()),
        };
        let prompt = PROMPTS[0].to_vec();
        let samples = generate(&model, &vec![prompt.clone(); 4], &options(7), None).unwrap();
        let rows = model.rows.lock().unwrap().clone();
        assert_eq!(rows[0], 1, "{arch}: the prompt runs once");
        assert!(rows[1..].iter().all(|&r| r == 4), "{arch}: {rows:?}");
        for (i, sample) in samples.iter().enumerate() {
            let alone = generate(
                loaded.model.as_ref(),
                std::slice::from_ref(&prompt),
                &options(7 + i as u64),
                None,
            )
            .unwrap();
            assert_eq!(sample, &alone[0], "{arch}: sample {i}");
        }
        let distinct: std::collections::BTreeSet<_> = samples.iter().map(|s| &s.tokens).collect();
        assert!(
            distinct.len() > 1,
            "{arch}: samples differ at temperature 2"
        );
    }
}

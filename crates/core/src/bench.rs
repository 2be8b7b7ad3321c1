//! Throughput measurement: what `strata bench` runs.
//!
//! A workload (a forward pass over a `[batch, seq]` block with a capture plan, or greedy
//! generation from a prompt) runs `warmup` times unmeasured, then `runs` times measured; the
//! report gives the median, minimum and maximum wall time, tokens per second at the median and
//! the process's peak resident memory. Token ids are drawn uniformly from `[100, vocab − 100)`
//! with a seeded generator — the same recipe as the transformers baseline script — so that runs
//! are reproducible and no tokenizer is needed.
//!
//! Every measured run ends by reading one value of its last output back to the host, so
//! asynchronous backends (wgpu) are timed to completion rather than to submission.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::backend::Backend;
use crate::batch::TokenBatch;
use crate::capture::{Activation, CapturePlan};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Sampling, generate};
use crate::model::LanguageModel;

/// What one measured run does.
#[derive(Debug, Clone)]
pub enum Workload {
    /// One forward pass over `batch` rows of `seq` random ids, keeping what `plan` asks for.
    Forward {
        batch: usize,
        seq: usize,
        plan: CapturePlan,
    },
    /// Greedy generation of exactly `new_tokens` tokens (no stop token) after a prompt of
    /// `prompt_len` random ids, for `samples` continuations of that one prompt.
    Generate {
        prompt_len: usize,
        new_tokens: usize,
        samples: usize,
    },
}

impl Workload {
    /// `forward` or `generate`.
    fn mode(&self) -> &'static str {
        match self {
            Workload::Forward { .. } => "forward",
            Workload::Generate { .. } => "generate",
        }
    }

    /// Rows, tokens per row (the prompt when generating), new tokens per row, capture sites.
    fn shape(&self) -> (usize, usize, usize, usize) {
        match self {
            Workload::Forward { batch, seq, plan } => (*batch, *seq, 0, plan.sites().count()),
            Workload::Generate {
                prompt_len,
                new_tokens,
                samples,
            } => (*samples, *prompt_len, *new_tokens, 0),
        }
    }
}

/// Repetitions and the seed of the random ids.
#[derive(Debug, Clone, Copy)]
pub struct BenchOptions {
    /// Unmeasured runs first (caches, allocator, kernel autotuning).
    pub warmup: usize,
    /// Measured runs; the report's figures are over these.
    pub runs: usize,
    /// Seed of the random token ids.
    pub seed: u64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            warmup: 2,
            runs: 5,
            seed: 0,
        }
    }
}

/// The result of [`bench`]: `strata bench --json` prints it as one object.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub model: String,
    pub architecture: String,
    pub backend: String,
    /// `forward` or `generate`.
    pub mode: &'static str,
    /// Rows per forward pass (generation: continuations of the one prompt).
    pub batch: usize,
    /// Tokens per row (generation: the prompt length).
    pub seq: usize,
    /// Tokens generated per row (0 for a forward pass).
    pub new_tokens: usize,
    /// Number of capture sites in the plan (generation: 0).
    pub captures: usize,
    pub warmup: usize,
    pub runs: usize,
    /// Tokens per measured run: `batch × seq` (forward) or `batch × new_tokens` (generation).
    pub tokens: usize,
    /// `tokens / median_s`.
    pub tokens_per_s: f64,
    pub median_s: f64,
    pub min_s: f64,
    pub max_s: f64,
    /// Peak resident memory of the process so far (model loading included), in MiB; `None`
    /// where the platform does not report it.
    pub peak_rss_mb: Option<f64>,
    /// Threads of the CPU backends' pool.
    pub threads: usize,
}

/// Runs `workload` on `model` and reports its throughput.
pub fn bench(
    model: &dyn LanguageModel,
    backend: Backend,
    workload: &Workload,
    options: &BenchOptions,
) -> Result<BenchReport> {
    if options.runs == 0 {
        return Err(Error::InvalidRequest(
            "a benchmark needs at least one measured run".into(),
        ));
    }
    let info = model.info();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let (lo, hi) = id_range(info.vocab_size);
    let mut ids = |n: usize| -> Vec<u32> { (0..n).map(|_| rng.random_range(lo..hi)).collect() };
    let mut once: Box<dyn FnMut() -> Result<()> + '_> = match workload {
        Workload::Forward {
            batch: b,
            seq: t,
            plan,
        } => {
            check_shape(*b, *t, info.context_length)?;
            plan.validate(info)?;
            let input = TokenBatch::new((0..*b).map(|_| ids(*t)).collect())?;
            Box::new(move || {
                let out = model.forward(&input, plan)?;
                match out.iter().last() {
                    Some((_, act)) => sync(act),
                    None => Ok(()),
                }
            })
        }
        Workload::Generate {
            prompt_len,
            new_tokens: n,
            samples,
        } => {
            check_shape(*samples, prompt_len + n, info.context_length)?;
            let prompt = ids(*prompt_len);
            let prompts = vec![prompt; *samples];
            let opts = GenerateOptions {
                max_new_tokens: *n,
                sampling: Sampling::Greedy,
                ..GenerateOptions::default()
            };
            Box::new(move || {
                let out = generate(model, &prompts, &opts, None)?;
                match out.iter().map(|g| g.tokens.len()).min() {
                    Some(len) if len == opts.max_new_tokens => Ok(()),
                    got => Err(Error::Numeric(format!(
                        "generation stopped after {got:?} tokens, expected {}",
                        opts.max_new_tokens
                    ))),
                }
            })
        }
    };
    let (batch, seq, new_tokens, captures) = workload.shape();
    let tokens = batch
        * match workload {
            Workload::Forward { .. } => seq,
            Workload::Generate { .. } => new_tokens,
        };
    for _ in 0..options.warmup {
        once()?;
    }
    let mut times = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let start = Instant::now();
        once()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    let median_s = median(&times);
    Ok(BenchReport {
        model: info.name.clone(),
        architecture: info.architecture.clone(),
        backend: backend.name().to_owned(),
        mode: workload.mode(),
        batch,
        seq,
        new_tokens,
        captures,
        warmup: options.warmup,
        runs: options.runs,
        tokens,
        tokens_per_s: tokens as f64 / median_s,
        median_s,
        min_s: times[0],
        max_s: times[times.len() - 1],
        peak_rss_mb: peak_rss_mb(),
        threads: std::thread::available_parallelism().map_or(1, usize::from),
    })
}

/// The half-open id range random inputs are drawn from: `[100, vocab − 100)` as in the
/// transformers baseline, or the whole vocabulary when it is too small for that.
fn id_range(vocab: usize) -> (u32, u32) {
    if vocab > 300 {
        (100, (vocab - 100) as u32)
    } else {
        (0, vocab.max(1) as u32)
    }
}

fn check_shape(rows: usize, len: usize, context: usize) -> Result<()> {
    if rows == 0 || len == 0 {
        return Err(Error::InvalidRequest(format!(
            "a benchmark needs at least one row and one token (got {rows} × {len})"
        )));
    }
    if len > context {
        return Err(Error::InvalidRequest(format!(
            "{len} tokens per row exceed the model's context of {context}"
        )));
    }
    Ok(())
}

/// Waits for `act` to be computed by reading one of its values back.
fn sync(act: &Activation) -> Result<()> {
    let value = match act {
        Activation::Hidden(t) => t.clone().slice([0..1, 0..1, 0..1]).into_data(),
        Activation::Pattern(t) => t.clone().slice([0..1, 0..1, 0..1, 0..1]).into_data(),
    };
    value
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map(|_| ())
        .map_err(|e| Error::Numeric(format!("reading an output back: {e:?}")))
}

/// The median of sorted, non-empty `values`.
fn median(values: &[f64]) -> f64 {
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// Peak resident memory of this process in MiB (`VmHWM` of `/proc/self/status`, Linux).
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::{id_range, median, peak_rss_mb};

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[1.0, 2.0, 9.0]), 2.0);
        assert_eq!(median(&[1.0, 2.0, 4.0, 9.0]), 3.0);
        assert_eq!(median(&[5.0]), 5.0);
    }

    #[test]
    fn ids_avoid_the_vocabulary_edges_like_the_baseline() {
        assert_eq!(id_range(49152), (100, 49052));
        assert_eq!(id_range(64), (0, 64));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn peak_rss_is_reported_and_grows_with_a_touched_allocation() {
        let before = peak_rss_mb().expect("VmHWM on Linux");
        let block = vec![1u8; 64 << 20];
        let after = peak_rss_mb().unwrap();
        assert!(block.iter().all(|&b| b == 1));
        assert!(after >= before + 60.0, "{before} → {after} MiB");
    }
}

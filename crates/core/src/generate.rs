//! Generation: greedy and temperature sampling (full softmax, optional top-k / top-p), stop
//! tokens and stop strings, batched, through the model's incremental-decoding cache so each new
//! token costs one step.
//!
//! Reproducibility: each row draws from its own `ChaCha8Rng` seeded with `seed + row`, so a
//! prompt's continuation does not depend on what else is in the batch, and the same seed gives
//! the same text run to run and machine to machine.

use rand::Rng;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::batch::{PadSide, TokenBatch};
use crate::capture::{CapturePlan, Positions, Site};
use crate::error::{Error, Result};
use crate::model::LanguageModel;
use crate::tokenizer::Tokenizer;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// The most likely token (ties go to the lowest id).
    Greedy,
    /// A draw from `softmax(logits / temperature)` over the full vocabulary, optionally
    /// restricted to the `top_k` most likely tokens and then to the smallest set whose
    /// probability reaches `top_p`.
    Sample {
        temperature: f64,
        top_k: Option<usize>,
        top_p: Option<f64>,
    },
}

/// A generation request.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// Upper bound on new tokens per prompt.
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Seed of row 0's generator (row `i` uses `seed + i`).
    pub seed: u64,
    /// Generation of a row ends after one of these ids (EOS). The id is kept in the output.
    pub stop_tokens: Vec<u32>,
    /// Generation of a row ends once its decoded continuation contains one of these; the text
    /// is cut before it (needs a tokenizer).
    pub stop_strings: Vec<String>,
    /// Pad id for left-padding prompts of different lengths.
    pub pad_id: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_new_tokens: 32,
            sampling: Sampling::Greedy,
            seed: 0,
            stop_tokens: Vec::new(),
            stop_strings: Vec::new(),
            pad_id: 0,
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// `max_new_tokens` (or the context length) was reached.
    Length,
    /// A stop token was generated.
    StopToken,
    /// A stop string appeared.
    StopString,
}

/// One row's continuation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// New token ids only.
    pub tokens: Vec<u32>,
    /// The decoded continuation (cut before a stop string), when a tokenizer was given.
    pub text: Option<String>,
    pub finish: Finish,
}

impl Sampling {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        if let Sampling::Sample {
            temperature,
            top_k,
            top_p,
        } = *self
        {
            if !(temperature > 0.0 && temperature.is_finite()) {
                return Err(Error::InvalidRequest(format!(
                    "temperature must be a positive number, got {temperature}"
                )));
            }
            if top_k == Some(0) {
                return Err(Error::InvalidRequest("top_k must be at least 1".into()));
            }
            if let Some(p) = top_p
                && !(p > 0.0 && p <= 1.0)
            {
                return Err(Error::InvalidRequest(format!(
                    "top_p must be in (0, 1], got {p}"
                )));
            }
        }
        Ok(())
    }

    /// Chooses the next token from one row of logits.
    pub fn choose(&self, logits: &[f32], rng: &mut ChaCha8Rng) -> Result<u32> {
        if let Some(i) = logits.iter().position(|v| v.is_nan()) {
            return Err(Error::Numeric(format!("logit {i} is NaN")));
        }
        match *self {
            Sampling::Greedy => Ok(argmax(logits)),
            Sampling::Sample {
                temperature,
                top_k,
                top_p,
            } => {
                let probs = sampling_distribution(logits, temperature, top_k, top_p);
                let u: f64 = rng.random();
                let mut cum = 0.0;
                let mut last = 0;
                for &(id, p) in &probs {
                    cum += p;
                    last = id;
                    if u < cum {
                        return Ok(id);
                    }
                }
                Ok(last)
            }
        }
    }
}

/// Index of the largest value (the first on ties).
pub fn argmax(values: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in values.iter().enumerate() {
        if v > values[best] {
            best = i;
        }
    }
    best as u32
}

/// `log_softmax(logits / temperature)` in f64 over the full vocabulary.
pub fn log_softmax(logits: &[f32], temperature: f64) -> Vec<f64> {
    let scaled: Vec<f64> = logits.iter().map(|&v| v as f64 / temperature).collect();
    let max = scaled.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + scaled.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
    scaled.into_iter().map(|v| v - lse).collect()
}

/// The (id, probability) pairs sampling draws from, most likely first, renormalised after the
/// top-k and top-p cuts.
pub fn sampling_distribution(
    logits: &[f32],
    temperature: f64,
    top_k: Option<usize>,
    top_p: Option<f64>,
) -> Vec<(u32, f64)> {
    let logp = log_softmax(logits, temperature);
    let mut probs: Vec<(u32, f64)> = logp
        .into_iter()
        .enumerate()
        .map(|(i, lp)| (i as u32, lp.exp()))
        .collect();
    // Descending probability; ties by id so the order (and the draw) is deterministic.
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if let Some(k) = top_k {
        probs.truncate(k.max(1));
    }
    if let Some(p) = top_p {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, &(_, q)) in probs.iter().enumerate() {
            cum += q;
            if cum >= p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    probs.iter_mut().for_each(|p| p.1 /= total);
    probs
}

/// Generates a continuation of every prompt (batched, left-padded, through the cache). When
/// every prompt is the same (many samples of one prompt), the prompt runs once and its cache is
/// shared by all rows.
pub fn generate(
    model: &dyn LanguageModel,
    prompts: &[Vec<u32>],
    options: &GenerateOptions,
    tokenizer: Option<&Tokenizer>,
) -> Result<Vec<Generation>> {
    options.sampling.validate()?;
    if !options.stop_strings.is_empty() && tokenizer.is_none() {
        return Err(Error::InvalidRequest(
            "stop strings need a tokenizer to decode the continuation".into(),
        ));
    }
    let info = model.info();
    if !info.has_lm_head || !info.causal {
        return Err(Error::InvalidRequest(format!(
            "`{}` ({}) cannot generate: it is not a causal language model",
            info.name, info.architecture
        )));
    }
    let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
    if longest > info.context_length {
        return Err(Error::InvalidRequest(format!(
            "a prompt has {longest} tokens, but `{}` has a context of {} tokens",
            info.name, info.context_length
        )));
    }
    let max_new = options.max_new_tokens.min(info.context_length - longest);
    let n = prompts.len();
    let mut out: Vec<Generation> = (0..n)
        .map(|_| Generation {
            tokens: Vec::new(),
            text: None,
            finish: Finish::Length,
        })
        .collect();
    if n == 0 || max_new == 0 {
        return Ok(out);
    }
    let mut rngs: Vec<ChaCha8Rng> = (0..n as u64)
        .map(|i| ChaCha8Rng::seed_from_u64(options.seed.wrapping_add(i)))
        .collect();
    let plan = CapturePlan::new().with(Site::Logits, Positions::Last);
    let mut cache = model.new_cache();
    // Continuations of one prompt share its forward pass: the prompt runs once and the cache
    // is then repeated for every row.
    let shared = n > 1 && prompts.iter().all(|p| *p == prompts[0]);
    let mut batch = if shared {
        TokenBatch::new(vec![prompts[0].clone()])?
    } else {
        TokenBatch::with_padding(prompts.to_vec(), PadSide::Left, options.pad_id)?
    };
    let mut done = vec![false; n];
    for step in 0..max_new {
        let captures = model.forward_cached(&batch, &plan, &mut cache)?;
        if shared && step == 0 {
            cache = cache.repeat_rows(n);
        }
        let logits = captures.hidden(Site::Logits)?;
        // One row of logits after a shared prompt, then one per row.
        let [rows, _, vocab] = logits.dims();
        let values = logits
            .to_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Numeric(format!("reading logits: {e:?}")))?;
        let mut next = Vec::with_capacity(n);
        for row in 0..n {
            if done[row] {
                next.push(vec![options.pad_id]);
                continue;
            }
            let from = (row % rows) * vocab;
            let id = options
                .sampling
                .choose(&values[from..from + vocab], &mut rngs[row])?;
            let g = &mut out[row];
            g.tokens.push(id);
            if options.stop_tokens.contains(&id) {
                g.finish = Finish::StopToken;
                done[row] = true;
            } else if let Some(tok) = tokenizer.filter(|_| !options.stop_strings.is_empty()) {
                let text = tok.decode(&g.tokens)?;
                if options
                    .stop_strings
                    .iter()
                    .any(|s| text.contains(s.as_str()))
                {
                    g.finish = Finish::StopString;
                    done[row] = true;
                }
            }
            next.push(vec![id]);
        }
        if done.iter().all(|&d| d) {
            break;
        }
        batch = TokenBatch::new(next)?;
    }
    if let Some(tok) = tokenizer {
        for g in &mut out {
            let mut text = tok.decode(&g.tokens)?;
            if let Some(cut) = options
                .stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(cut);
            }
            g.text = Some(text);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_and_top_p_cut_and_renormalise() {
        let logits = [0.0f32, 1.0, 2.0, 3.0];
        let full = sampling_distribution(&logits, 1.0, None, None);
        let total: f64 = full.iter().map(|p| p.1).sum();
        assert!((total - 1.0).abs() < 1e-12);
        assert_eq!(
            full.iter().map(|p| p.0).collect::<Vec<_>>(),
            vec![3, 2, 1, 0]
        );
        let k2 = sampling_distribution(&logits, 1.0, Some(2), None);
        let e = std::f64::consts::E;
        assert_eq!(k2.len(), 2);
        assert!((k2[0].1 - e / (e + 1.0)).abs() < 1e-12);
        // p(3) = 0.6439…, so top_p = 0.5 keeps only it and top_p = 0.9 keeps three.
        assert_eq!(
            sampling_distribution(&logits, 1.0, None, Some(0.5)).len(),
            1
        );
        assert_eq!(
            sampling_distribution(&logits, 1.0, None, Some(0.9)).len(),
            3
        );
    }

    #[test]
    fn log_softmax_matches_closed_form() {
        let lp = log_softmax(&[1.0, 2.0], 1.0);
        let expected = -(1.0 + (1.0f64).exp()).ln();
        assert!((lp[0] - expected).abs() < 1e-12);
        let cold = log_softmax(&[1.0, 2.0], 0.5);
        assert!((cold[0] - (-(1.0 + (2.0f64).exp()).ln())).abs() < 1e-12);
    }

    #[test]
    fn greedy_breaks_ties_to_lowest_id_and_sampling_is_seeded() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0]), 1);
        let s = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: None,
        };
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin()).collect();
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..20)
                .map(|_| s.choose(&logits, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn bad_sampling_parameters_are_rejected() {
        let bad = Sampling::Sample {
            temperature: 0.0,
            top_k: None,
            top_p: None,
        };
        assert!(bad.validate().is_err());
        let bad_p = Sampling::Sample {
            temperature: 1.0,
            top_k: None,
            top_p: Some(1.5),
        };
        assert!(bad_p.validate().is_err());
    }
}

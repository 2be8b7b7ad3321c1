//! # `next-token-law`: He & Su (2024), "A Law of Next-Token Prediction in Large Language Models"
//!
//! Each layer of a pretrained language model reduces the *prediction residual* PR — how badly a
//! linear map of the layer's token representations predicts the next token — by the same factor:
//! `log10 PR_k` falls linearly with depth k (the "law of equi-learning"). This analysis measures
//! PR at every hidden-state entry and fits that line.
//!
//! ## What is computed (faithful to the reference code, HornHehhf/LLM-ELL, by default)
//!
//! - **Data**: every text tokenised alone with the tokenizer's default special tokens, cut to its
//!   first `max_tokens` ids, one sequence per forward pass, no padding (`batch_size = 1`; larger
//!   batches are right-padded and give the same numbers up to float rounding).
//! - **Features**: per hidden-state entry k = 0..L, the representation at every position.
//!   `layer_indexing = "hf-compatible"` (default) uses HF's `output_hidden_states` list — for
//!   pre-norm decoders `[embed, block 1, …, block L−1, final_norm(block L)]`, for Mamba/RWKV
//!   `[block 1, …, block L, final_norm(block L)]` (no embedding entry, as the paper's code
//!   indexes it) — and `"blocks"` uses `[embed, block 1, …, block L]` for every family.
//! - **Normalisation** (`normalize`): `fresh-norm` (default) applies a freshly initialised norm
//!   of the model's kind (LayerNorm γ = 1, β = 0, or RMSNorm w = 1, with the model's eps) to
//!   every entry except the last hf-compatible entry, which already carries the trained final
//!   norm; `standardize` z-scores each token over the hidden dimension (eps 0); `none` uses the
//!   raw states. In `blocks` indexing every entry is normalised.
//! - **Examples**: position j predicts token `u_{j+1}` (`token = "next"`, default), or `u_{j−1}`,
//!   `u_j`, `u_{j+2}` (`previous`, `current`, `next-next`: the paper's information-flow study).
//!   The target is the **token id as a scalar**, as the reference code regresses
//!   (`target = "token-id"`); `target = "onehot"` is our documented extension: multi-output OLS
//!   over the observed vocabulary, `PR = ‖Y − Ŷ‖²_F / ‖Y − Ȳ‖²_F`.
//! - **PR_k** = SSE/SST of the in-sample OLS fit with intercept (= 1 − R²_k), streamed: per entry
//!   f64 sufficient statistics, a symmetric-eigen pseudo-inverse (see [`ols`]); no activation is
//!   stored and memory does not grow with the corpus (one-hot: it grows with the number of
//!   distinct target tokens, at most the vocabulary).
//! - **The law**: OLS of `log10 PR_1..PR_L` (entry 0 excluded) against x = 0..L−1; slope,
//!   intercept, R², Pearson r with its p-value, `PR_L / PR_1`, ρ = 10^slope, N, d.
//!
//! Deviations from the reference code: f64 statistics instead of sklearn's float32 solve
//! (agreement ~1e-4 relative is expected, not bit-equality); texts longer than the model's
//! context are cut to it (the summary says how many); the corpus is read in file order (the
//! reference shuffles with numpy's legacy RNG).

pub mod law;
pub mod ols;

use serde::Deserialize;
use strata_core::report::{Column, Figure, Series, SeriesStyle, Table};
use strata_core::{
    Analysis, AnalysisRegistration, CapturePlan, Context, Error, HiddenStatesLayout, ModelInfo,
    NormKind, ParamDoc, ParamsInput, Positions, Report, Result, Site, TokenBatch,
};

use law::LawFit;
use ols::{Accumulator, RCOND};

/// The registry id.
pub const ID: &str = "next-token-law";

/// How hidden states are normalised before the regression.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Normalize {
    /// A freshly initialised norm of the model's kind (the reference code's `initialized-LN`).
    #[default]
    FreshNorm,
    /// Per-token z-score over the hidden dimension.
    Standardize,
    /// Raw hidden states.
    None,
}

/// The regression target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// The target token's id as one real number (what the reference code regresses).
    #[default]
    TokenId,
    /// One indicator output per observed target token (multi-output OLS).
    Onehot,
}

/// Which token each position predicts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TokenChoice {
    /// `u_{j−1}`.
    Previous,
    /// `u_j`.
    Current,
    /// `u_{j+1}` (the law).
    #[default]
    Next,
    /// `u_{j+2}`.
    NextNext,
}

impl TokenChoice {
    /// Offset of the target relative to the position.
    fn offset(self) -> isize {
        match self {
            TokenChoice::Previous => -1,
            TokenChoice::Current => 0,
            TokenChoice::Next => 1,
            TokenChoice::NextNext => 2,
        }
    }
}

/// Which list of representations "layer k" indexes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerIndexing {
    /// HF's `output_hidden_states` list, as the paper's code indexes it.
    #[default]
    HfCompatible,
    /// `[embed, block 1 … block L]` for every family.
    Blocks,
}

/// Parameters of `next-token-law`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub normalize: Normalize,
    #[serde(default)]
    pub target: Target,
    #[serde(default)]
    pub token: TokenChoice,
    #[serde(default)]
    pub layer_indexing: LayerIndexing,
    /// Per-text token cap; overrides the data set's `max_tokens`.
    pub max_tokens: Option<usize>,
    /// Total token budget; overrides the data set's `limit_tokens`.
    pub limit_tokens: Option<usize>,
    /// Texts per forward pass (default 1: one sequence at a time, no padding).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    1
}

/// The analysis.
#[derive(Debug, Clone)]
pub struct NextTokenLaw {
    params: Params,
}

impl NextTokenLaw {
    /// Validates `params`.
    pub fn new(params: Params) -> Result<Self> {
        if params.batch_size == 0 {
            return Err(Error::analysis(ID, "`batch_size` must be at least 1"));
        }
        if params.max_tokens == Some(0) {
            return Err(Error::analysis(ID, "`max_tokens` must be at least 1"));
        }
        Ok(Self { params })
    }
}

/// One hidden-state entry: where it is captured and whether it gets the fresh norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub site: Site,
    pub normalized: bool,
}

/// The hidden-state entries 0..=L for a model like `info` (see the crate documentation).
pub fn entries(info: &ModelInfo, indexing: LayerIndexing) -> Vec<Entry> {
    let l = info.n_layers;
    let plain = |site| Entry {
        site,
        normalized: true,
    };
    let trained_norm = Entry {
        site: Site::FinalNorm,
        normalized: false,
    };
    match (indexing, info.hidden_states) {
        (LayerIndexing::Blocks, _) => std::iter::once(plain(Site::Embed))
            .chain((0..l).map(|b| plain(Site::ResidPost(b))))
            .collect(),
        (LayerIndexing::HfCompatible, HiddenStatesLayout::EmbedThenBlocks) => {
            std::iter::once(plain(Site::Embed))
                .chain((0..l - 1).map(|b| plain(Site::ResidPost(b))))
                .chain(std::iter::once(trained_norm))
                .collect()
        }
        (LayerIndexing::HfCompatible, HiddenStatesLayout::BlocksOnly) => (0..l)
            .map(|b| plain(Site::ResidPost(b)))
            .chain(std::iter::once(trained_norm))
            .collect(),
        (LayerIndexing::HfCompatible, HiddenStatesLayout::EmbedThenAllBlocks) => {
            // Post-LN encoders: every entry is a block output; the last is left as it is.
            let mut out: Vec<Entry> = std::iter::once(plain(Site::Embed))
                .chain((0..l).map(|b| plain(Site::ResidPost(b))))
                .collect();
            out[l].normalized = false;
            out
        }
    }
}

/// Normalises one row of hidden state in place (f64).
fn normalize_row(row: &mut [f64], how: Normalize, norm: NormKind) {
    let d = row.len() as f64;
    match (how, norm) {
        (Normalize::None, _) => {}
        (Normalize::FreshNorm, NormKind::RmsNorm { eps, .. }) => {
            // Gemma's `(1 + w)` norms start at w = 0, i.e. a unit weight too.
            let ms = row.iter().map(|v| v * v).sum::<f64>() / d;
            let scale = 1.0 / (ms + eps).sqrt();
            row.iter_mut().for_each(|v| *v *= scale);
        }
        (Normalize::FreshNorm, NormKind::LayerNorm { eps }) => standardize(row, eps),
        (Normalize::Standardize, _) => standardize(row, 0.0),
    }
}

/// `(x − mean) / sqrt(var + eps)` with the population variance.
fn standardize(row: &mut [f64], eps: f64) {
    let d = row.len() as f64;
    let mean = row.iter().sum::<f64>() / d;
    let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / d;
    let scale = 1.0 / (var + eps).sqrt();
    row.iter_mut().for_each(|v| *v = (*v - mean) * scale);
}

/// PR of every entry of one model and the law fitted through them.
#[derive(Debug, Clone)]
pub struct ModelResult {
    pub entries: Vec<Entry>,
    pub pr: Vec<f64>,
    pub rank: Vec<usize>,
    pub law: LawFit,
    /// Examples (positions with a target).
    pub n: u64,
    pub d: usize,
    pub texts: usize,
    /// Texts cut to the model's context length.
    pub truncated: usize,
}

impl NextTokenLaw {
    /// Streams the data through one model and fits the law.
    pub fn measure(
        &self,
        loaded: &strata_core::LoadedModel,
        data: &strata_core::data::Dataset,
        progress: &dyn strata_core::Progress,
    ) -> Result<ModelResult> {
        let p = &self.params;
        let info = loaded.model.info();
        if !info.causal {
            return Err(Error::analysis(
                ID,
                format!(
                    "model `{}` is a bidirectional encoder: every position sees the token it would \
                     predict, so the next-token law is not defined for it",
                    loaded.id
                ),
            ));
        }
        let mut data = data.clone();
        if p.max_tokens.is_some() {
            data.max_tokens = p.max_tokens;
        }
        if p.limit_tokens.is_some() {
            data.limit_tokens = p.limit_tokens;
        }
        let mut sequences = data.token_sequences(loaded.tokenizer()?)?;
        let mut truncated = 0;
        for ids in &mut sequences {
            if ids.len() > info.context_length {
                ids.truncate(info.context_length);
                truncated += 1;
            }
        }
        let entries = entries(info, p.layer_indexing);
        let mut plan = CapturePlan::new();
        for e in &entries {
            plan.add(e.site, Positions::All);
        }
        let d = info.d_model;
        let new_acc = || match p.target {
            Target::TokenId => Accumulator::scalar(d),
            Target::Onehot => Accumulator::one_hot(d),
        };
        let mut accs: Vec<Accumulator> = entries.iter().map(|_| new_acc()).collect();
        let offset = p.token.offset();
        let task = progress.task(
            &format!("{ID}: {}", loaded.id),
            Some(sequences.len() as u64),
        );
        for chunk in sequences.chunks(p.batch_size) {
            let batch = TokenBatch::new(chunk.to_vec())?;
            let captures = loaded.model.forward(&batch, &plan)?;
            // Positions with a target, and the targets, per row.
            let examples: Vec<(Vec<usize>, Vec<f64>)> = chunk
                .iter()
                .map(|ids| {
                    let n = ids.len() as isize;
                    (0..n)
                        .filter(|&j| (0..n).contains(&(j + offset)))
                        .map(|j| (j as usize, f64::from(ids[(j + offset) as usize])))
                        .unzip()
                })
                .collect();
            for (entry, acc) in entries.iter().zip(&mut accs) {
                let values = captures
                    .get(entry.site)
                    .ok_or_else(|| {
                        Error::Numeric(format!(
                            "model `{}` did not capture `{}`",
                            loaded.id, entry.site
                        ))
                    })?
                    .to_vec()?;
                let width = batch.max_len();
                for (b, (positions, targets)) in examples.iter().enumerate() {
                    let mut x = Vec::with_capacity(positions.len() * d);
                    for &j in positions {
                        let start = (b * width + batch.padded_index(b, j)) * d;
                        let mut row: Vec<f64> = values[start..start + d]
                            .iter()
                            .map(|&v| f64::from(v))
                            .collect();
                        if row.iter().any(|v| !v.is_finite()) {
                            return Err(Error::Numeric(format!(
                                "model `{}`: non-finite activation at `{}`, text {}, position {j}",
                                loaded.id, entry.site, b
                            )));
                        }
                        if entry.normalized {
                            normalize_row(&mut row, p.normalize, info.norm);
                        }
                        x.extend(row);
                    }
                    acc.add(&x, targets);
                }
            }
            task.inc(chunk.len() as u64);
        }
        task.finish();

        let n = accs[0].rows();
        if n <= d as u64 + 1 {
            return Err(Error::analysis(
                ID,
                format!(
                    "model `{}`: {n} examples for {d} features — the in-sample fit would be exact; \
                     give more text (raise `limit_tokens`/`max_tokens`)",
                    loaded.id
                ),
            ));
        }
        let mut pr = Vec::with_capacity(accs.len());
        let mut rank = Vec::with_capacity(accs.len());
        for (entry, acc) in entries.iter().zip(&accs) {
            let fit = acc.solve(RCOND).map_err(|e| {
                Error::analysis(ID, format!("model `{}`, `{}`: {e}", loaded.id, entry.site))
            })?;
            pr.push(fit.pr());
            rank.push(fit.rank);
        }
        let xs: Vec<f64> = (0..pr.len() - 1).map(|x| x as f64).collect();
        let ys: Vec<f64> = pr[1..].iter().map(|v| v.log10()).collect();
        if ys.iter().any(|v| !v.is_finite()) {
            return Err(Error::analysis(
                ID,
                format!(
                    "model `{}`: some PR is 0 (a perfect in-sample fit), so log10 PR is undefined; \
                     give more text",
                    loaded.id
                ),
            ));
        }
        let law = LawFit::fit(&xs, &ys).ok_or_else(|| {
            Error::analysis(
                ID,
                format!("model `{}` has too few layers to fit a line", loaded.id),
            )
        })?;
        Ok(ModelResult {
            entries,
            pr,
            rank,
            law,
            n,
            d,
            texts: sequences.len(),
            truncated,
        })
    }
}

impl Analysis for NextTokenLaw {
    fn run(&self, ctx: &mut Context<'_>) -> Result<Report> {
        let data = ctx.require_data(ID)?;
        let models = ctx.require_models(ID)?.to_vec();
        let mut report = Report::new(ID);
        let mut col_model = Vec::new();
        let mut col_layer = Vec::new();
        let mut col_site = Vec::new();
        let mut col_in_fit = Vec::new();
        let mut col_pr = Vec::new();
        let mut col_log = Vec::new();
        let mut col_rank = Vec::new();
        let mut series = Vec::new();
        let mut sentences = Vec::new();
        for loaded in models {
            let r = self.measure(loaded, data, ctx.progress)?;
            let id = &loaded.id;
            for (k, (entry, (&pr, &rank))) in
                r.entries.iter().zip(r.pr.iter().zip(&r.rank)).enumerate()
            {
                col_model.push(id.clone());
                col_layer.push(k as i64);
                col_site.push(entry.site.to_string());
                col_in_fit.push(i64::from(k > 0));
                col_pr.push(pr);
                col_log.push(pr.log10());
                col_rank.push(rank as i64);
            }
            let l = r.pr.len() - 1;
            let (first, last) = (r.pr[1], r.pr[l]);
            let law = r.law;
            let scalars: [(&str, f64, &str); 10] = [
                ("slope", law.slope, "slope of log10 PR per layer"),
                (
                    "intercept",
                    law.intercept,
                    "log10 PR at the first layer of the fit (x = 0)",
                ),
                ("r2", law.r2, "R² of the line through log10 PR"),
                (
                    "pearson_r",
                    law.pearson_r,
                    "Pearson r of layer and log10 PR",
                ),
                ("pearson_p", law.pearson_p, "two-sided p-value of Pearson r"),
                ("pr_ratio", last / first, "PR_L / PR_1"),
                (
                    "rho",
                    10f64.powf(law.slope),
                    "per-layer decay ratio ρ = 10^slope",
                ),
                ("n_tokens", r.n as f64, "examples (positions with a target)"),
                ("d", r.d as f64, "feature width"),
                ("n_texts", r.texts as f64, "texts read"),
            ];
            for (name, value, description) in scalars {
                report.scalar(&format!("{id}.{name}"), value, None, description);
            }
            let xs: Vec<f64> = (0..l).map(|x| x as f64).collect();
            series.push(Series {
                label: format!("{id}: log10 PR"),
                style: SeriesStyle::Points,
                x: xs.clone(),
                y: r.pr[1..].iter().map(|v| v.log10()).collect(),
            });
            series.push(Series {
                label: format!(
                    "{id}: fit (ρ = {:.4}, r = {:.4})",
                    10f64.powf(law.slope),
                    law.pearson_r
                ),
                style: SeriesStyle::Line,
                y: xs.iter().map(|x| law.intercept + law.slope * x).collect(),
                x: xs,
            });
            let trend = if law.slope < 0.0 {
                "falls"
            } else {
                "does not fall"
            };
            let mut sentence = format!(
                "On `{id}` ({} texts, N = {} examples, d = {}), log10 PR {trend} with depth: slope \
                 {:.4} per layer (ρ = {:.4}), Pearson r = {:.4} (p = {:.2e}), R² = {:.4}; PR goes \
                 from {:.4} at the first layer of the fit to {:.4} at the last (ratio {:.4}).",
                r.texts,
                r.n,
                r.d,
                law.slope,
                10f64.powf(law.slope),
                law.pearson_r,
                law.pearson_p,
                law.r2,
                first,
                last,
                last / first,
            );
            if r.truncated > 0 {
                sentence.push_str(&format!(
                    " {} text(s) were cut to the model's context length.",
                    r.truncated
                ));
            }
            if r.n < 10 * r.d as u64 {
                sentence.push_str(
                    " N is under 10·d, so the in-sample PR is noticeably optimistic (bias ≈ d/N).",
                );
            }
            sentences.push(sentence);
        }
        let p = &self.params;
        report.summary = format!(
            "Law of next-token prediction (He & Su 2024) on `{}`: in-sample OLS of the {} of token \
             u_(j{:+}) on the {} hidden state at position j, per entry ({} indexing); the law is the \
             line through log10 PR of entries 1..L. {}",
            data.id,
            match p.target {
                Target::TokenId => "scalar id",
                Target::Onehot => "one-hot indicator",
            },
            p.token.offset(),
            match p.normalize {
                Normalize::FreshNorm => "freshly normalised",
                Normalize::Standardize => "standardised",
                Normalize::None => "raw",
            },
            match p.layer_indexing {
                LayerIndexing::HfCompatible => "HF hidden-states",
                LayerIndexing::Blocks => "block",
            },
            sentences.join(" ")
        );
        report.tables.push(Table {
            name: "pr".into(),
            columns: vec![
                Column::text("model", col_model),
                Column::int("layer", col_layer),
                Column::text("site", col_site),
                Column::int("in_fit", col_in_fit),
                Column::float("pr", None, col_pr),
                Column::float("log10_pr", None, col_log),
                Column::int("rank", col_rank),
            ],
        });
        report.figures.push(Figure {
            name: "log10_pr".into(),
            title: "Law of next-token prediction: log10 PR by layer".into(),
            x_label: "layer (0 = first entry of the fit)".into(),
            y_label: "log10 PR".into(),
            series,
        });
        Ok(report)
    }
}

fn build(params: ParamsInput<'_>) -> Result<Box<dyn Analysis>> {
    Ok(Box::new(NextTokenLaw::new(params.parse()?)?))
}

strata_core::inventory::submit! {
    AnalysisRegistration {
        id: ID,
        description: "He & Su (2024): PR = 1 − R² of a linear next-token probe per layer, and the log-linear law over depth",
        parameters: &[
            ParamDoc { name: "normalize", ty: "\"fresh-norm\" | \"standardize\" | \"none\"", default: "\"fresh-norm\"", doc: "per-token normalisation of entries 0..L-1" },
            ParamDoc { name: "target", ty: "\"token-id\" | \"onehot\"", default: "\"token-id\"", doc: "scalar token id (reference code) or one-hot multi-output OLS" },
            ParamDoc { name: "token", ty: "\"previous\" | \"current\" | \"next\" | \"next-next\"", default: "\"next\"", doc: "which token each position predicts" },
            ParamDoc { name: "layer_indexing", ty: "\"hf-compatible\" | \"blocks\"", default: "\"hf-compatible\"", doc: "HF hidden_states list, or [embed, blocks 1..L]" },
            ParamDoc { name: "max_tokens", ty: "integer", default: "the data set's", doc: "per-text token cap" },
            ParamDoc { name: "limit_tokens", ty: "integer", default: "the data set's", doc: "total token budget" },
            ParamDoc { name: "batch_size", ty: "integer", default: "1", doc: "texts per forward pass (right-padded)" },
        ],
        build,
    }
}

//! # The template plugin: `residual-norms`
//!
//! A complete, small analysis that doubles as the documented template for new plugins. It
//! measures the mean L2 norm of the residual stream at every depth (`embed`, then the output of
//! each block), which is useful on its own: residual norms grow with depth in pre-norm models,
//! and a broken port shows up here first.
//!
//! ## Writing a new analysis, step by step
//!
//! 1. **A crate** under `crates/analyses/<name>` (or `plugins/<name>` for third-party work) that
//!    depends on `strata-core` and `serde`. Copy this file as a start.
//! 2. **Parameters**: a `#[derive(Deserialize)] #[serde(deny_unknown_fields)]` struct. Every field
//!    has a documented default (`#[serde(default = ...)]`). The experiment's `[[analysis]]` table,
//!    minus `kind`/`models`/`data`, is parsed into it by [`ParamsInput::parse`], so a typo or a
//!    wrong type is reported with `file:line:col` before anything runs.
//! 3. **The analysis**: a struct holding the parsed parameters that implements [`Analysis`]. Its
//!    `run` asks the models for exactly the activations it needs through a [`CapturePlan`]
//!    (nothing else is kept), streams over the data batch by batch, and returns a [`Report`]:
//!    scalars, tables, figures as data, and a one-paragraph summary. No file I/O: the runner
//!    renders and writes the report atomically.
//! 4. **Registration**: one `strata_core::inventory::submit!` of an [`AnalysisRegistration`] with
//!    a unique id (the experiment's `kind`), a one-line description and the parameter docs.
//! 5. **Linking**: one `extern crate <your_crate> as _;` line in `plugins/src/lib.rs` and the
//!    dependency in `plugins/Cargo.toml`. The registry test (`tests/tests/registry.rs`) lists the
//!    exact ids, so add yours there too.
//! 6. **Tests** against an independent computation (here: norms recomputed from the
//!    Hugging Face fixture's hidden states, `tests/tests/template_plugin.rs`).

use serde::Deserialize;
use strata_core::burn::tensor::Tensor;
use strata_core::report::{Column, Figure, Series, SeriesStyle, Table};
use strata_core::{
    Analysis, AnalysisRegistration, CapturePlan, Context, Error, ParamDoc, ParamsInput, Positions,
    Report, Result, Site, TokenBatch,
};

/// The registry id.
pub const ID: &str = "residual-norms";

/// Which token positions are averaged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PositionChoice {
    /// Every real token of every text.
    #[default]
    All,
    /// The last token of every text.
    Last,
}

/// Parameters of `residual-norms`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Which positions are averaged (default `all`).
    #[serde(default)]
    pub positions: PositionChoice,
    /// Texts per forward pass (default 8).
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
}

fn default_batch_size() -> usize {
    8
}

/// The analysis: parameters validated at build time.
#[derive(Debug, Clone)]
pub struct ResidualNorms {
    params: Params,
}

impl ResidualNorms {
    /// Validates `params`.
    pub fn new(params: Params) -> Result<Self> {
        if params.batch_size == 0 {
            return Err(Error::analysis(ID, "`batch_size` must be at least 1"));
        }
        Ok(Self { params })
    }
}

/// Running sums of one depth.
#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    sum: f64,
    sum_sq: f64,
    n: u64,
}

impl Analysis for ResidualNorms {
    fn run(&self, ctx: &mut Context<'_>) -> Result<Report> {
        let data = ctx.require_data(ID)?;
        let models = ctx.require_models(ID)?.to_vec();
        let positions = match self.params.positions {
            PositionChoice::All => Positions::All,
            PositionChoice::Last => Positions::Last,
        };
        let mut table_model = Vec::new();
        let mut table_depth = Vec::new();
        let mut table_site = Vec::new();
        let mut table_mean = Vec::new();
        let mut table_std = Vec::new();
        let mut table_n = Vec::new();
        let mut series = Vec::new();
        let mut report = Report::new(ID);

        for loaded in models {
            let info = loaded.model.info();
            let sequences = data.token_sequences(loaded.tokenizer()?)?;
            let sites: Vec<Site> = std::iter::once(Site::Embed)
                .chain((0..info.n_layers).map(Site::ResidPost))
                .collect();
            let mut plan = CapturePlan::new();
            for &site in &sites {
                plan.add(site, positions.clone());
            }
            let mut acc = vec![Acc::default(); sites.len()];
            let task = ctx.progress.task(
                &format!("{ID}: {}", loaded.id),
                Some(sequences.len() as u64),
            );
            for chunk in sequences.chunks(self.params.batch_size) {
                let batch = TokenBatch::new(chunk.to_vec())?;
                let captures = loaded.model.forward(&batch, &plan)?;
                for (i, &site) in sites.iter().enumerate() {
                    let norms = row_norms(captures.hidden(site)?.clone())?;
                    let width = norms.len() / batch.batch_size();
                    for (b, len) in batch.lengths().into_iter().enumerate() {
                        // With `All`, the padded tail of a row is not a real token.
                        let real = if positions == Positions::All {
                            len
                        } else {
                            width
                        };
                        for &v in &norms[b * width..b * width + real] {
                            acc[i].sum += v;
                            acc[i].sum_sq += v * v;
                            acc[i].n += 1;
                        }
                    }
                }
                task.inc(chunk.len() as u64);
            }
            task.finish();
            let mut xs = Vec::new();
            let mut ys = Vec::new();
            for (depth, (site, a)) in sites.iter().zip(&acc).enumerate() {
                let mean = a.sum / a.n as f64;
                let var = (a.sum_sq / a.n as f64 - mean * mean).max(0.0);
                table_model.push(loaded.id.clone());
                table_depth.push(depth as i64);
                table_site.push(site.to_string());
                table_mean.push(mean);
                table_std.push(var.sqrt());
                table_n.push(a.n as i64);
                xs.push(depth as f64);
                ys.push(mean);
            }
            let growth = ys[ys.len() - 1] / ys[0];
            report.scalar(
                &format!("{}.growth", loaded.id),
                growth,
                None,
                "mean norm after the last block / mean norm of the embeddings",
            );
            series.push(Series {
                label: loaded.id.clone(),
                style: SeriesStyle::LinePoints,
                x: xs,
                y: ys,
            });
        }
        report.summary = format!(
            "Mean L2 norm of the residual stream at every depth (0 = embeddings, k = output of \
             block k-1), over {} positions of `{}`. Growth (last/first): {}.",
            match self.params.positions {
                PositionChoice::All => "all token",
                PositionChoice::Last => "the last token",
            },
            data.id,
            report
                .scalars
                .iter()
                .map(|s| format!("{} {:.3}", s.name, s.value))
                .collect::<Vec<_>>()
                .join(", ")
        );
        report.tables.push(Table {
            name: "norms".into(),
            columns: vec![
                Column::text("model", table_model),
                Column::int("depth", table_depth),
                Column::text("site", table_site),
                Column::float("mean_norm", None, table_mean),
                Column::float("std_norm", None, table_std),
                Column::int("n", table_n),
            ],
        });
        report.figures.push(Figure {
            name: "norms".into(),
            title: "Residual-stream norm by depth".into(),
            x_label: "depth (0 = embeddings)".into(),
            y_label: "mean L2 norm".into(),
            series,
        });
        Ok(report)
    }
}

/// L2 norm over the last axis of `[b, t, d]`, flattened row-major to `b * t` values.
fn row_norms(x: Tensor<3>) -> Result<Vec<f64>> {
    let norms = x.powi_scalar(2).sum_dim(2).sqrt();
    let values = norms
        .into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| Error::Numeric(format!("reading norms back: {e:?}")))?;
    Ok(values.into_iter().map(f64::from).collect())
}

fn build(params: ParamsInput<'_>) -> Result<Box<dyn Analysis>> {
    Ok(Box::new(ResidualNorms::new(params.parse()?)?))
}

strata_core::inventory::submit! {
    AnalysisRegistration {
        id: ID,
        description: "Mean L2 norm of the residual stream at every depth (the template plugin)",
        parameters: &[
            ParamDoc { name: "positions", ty: "\"all\" | \"last\"", default: "\"all\"", doc: "token positions averaged" },
            ParamDoc { name: "batch_size", ty: "integer", default: "8", doc: "texts per forward pass" },
        ],
        build,
    }
}

//! The capture plan: which activations a forward pass keeps, named canonically so that analyses
//! never depend on an architecture.
//!
//! | site | shape | meaning |
//! | --- | --- | --- |
//! | `embed` | `[b, t, d]` | input of the first block (after any embedding scale / position add) |
//! | `resid_post.l` | `[b, t, d]` | raw output of block `l` (0-based), before any final norm |
//! | `final_norm` | `[b, t, d]` | what the unembedding sees (the final norm applied to the last block) |
//! | `attn_pattern.l` | `[b, h, q, k]` | attention probabilities of block `l` |
//! | `attn_out.l` | `[b, t, d]` | output of block `l`'s attention (mixer) before it joins the residual |
//! | `mlp_out.l` | `[b, t, d]` | output of block `l`'s MLP before it joins the residual |
//! | `logits` | `[b, t, vocab]` | unembedding output |
//!
//! HF `output_hidden_states` of a pre-norm decoder is `[embed, resid_post.0, …, resid_post.{L-2},
//! final_norm]`; see `ARCHITECTURE.md` for every family.
//!
//! **Cost guarantee.** Models report every canonical point to a [`Recorder`]; the recorder looks the
//! site up in the plan (a `BTreeMap` lookup) and keeps a (position-selected) handle only when the
//! site was asked for. Nothing is copied or kept otherwise, and a plan without `logits` or
//! `final_norm` lets the model stop after the deepest block that is needed
//! ([`CapturePlan::blocks_needed`]).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use burn::tensor::{Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::batch::TokenBatch;
use crate::error::{Error, Result};
use crate::intervention::{Edit, Intervention};
use crate::model::ModelInfo;

/// A canonical capture site.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Site {
    /// Input of the first block.
    Embed,
    /// Raw output of block `l`.
    ResidPost(usize),
    /// Attention probabilities of block `l`, `[batch, heads, query, key]`.
    AttnPattern(usize),
    /// Attention (mixer) output of block `l`.
    AttnOut(usize),
    /// MLP output of block `l`.
    MlpOut(usize),
    /// The final norm's output.
    FinalNorm,
    /// The logits.
    Logits,
}

/// A site family without its layer: what `--capture resid_post,attn_pattern` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SiteKind {
    Embed,
    ResidPost,
    AttnPattern,
    AttnOut,
    MlpOut,
    FinalNorm,
    Logits,
}

impl SiteKind {
    /// All kinds, in canonical order.
    pub const ALL: [SiteKind; 7] = [
        SiteKind::Embed,
        SiteKind::ResidPost,
        SiteKind::AttnPattern,
        SiteKind::AttnOut,
        SiteKind::MlpOut,
        SiteKind::FinalNorm,
        SiteKind::Logits,
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            SiteKind::Embed => "embed",
            SiteKind::ResidPost => "resid_post",
            SiteKind::AttnPattern => "attn_pattern",
            SiteKind::AttnOut => "attn_out",
            SiteKind::MlpOut => "mlp_out",
            SiteKind::FinalNorm => "final_norm",
            SiteKind::Logits => "logits",
        }
    }

    /// True for the per-block kinds.
    pub fn is_layered(self) -> bool {
        matches!(
            self,
            SiteKind::ResidPost | SiteKind::AttnPattern | SiteKind::AttnOut | SiteKind::MlpOut
        )
    }

    /// The site of this kind at `layer` (ignored for the kinds that are not per block).
    pub fn at(self, layer: usize) -> Site {
        match self {
            SiteKind::Embed => Site::Embed,
            SiteKind::ResidPost => Site::ResidPost(layer),
            SiteKind::AttnPattern => Site::AttnPattern(layer),
            SiteKind::AttnOut => Site::AttnOut(layer),
            SiteKind::MlpOut => Site::MlpOut(layer),
            SiteKind::FinalNorm => Site::FinalNorm,
            SiteKind::Logits => Site::Logits,
        }
    }
}

impl FromStr for SiteKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        SiteKind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = SiteKind::ALL.iter().map(|k| k.name()).collect();
                Error::InvalidRequest(format!(
                    "unknown capture site `{s}`: expected one of {}",
                    names.join(", ")
                ))
            })
    }
}

impl Site {
    /// The site's kind.
    pub fn kind(self) -> SiteKind {
        match self {
            Site::Embed => SiteKind::Embed,
            Site::ResidPost(_) => SiteKind::ResidPost,
            Site::AttnPattern(_) => SiteKind::AttnPattern,
            Site::AttnOut(_) => SiteKind::AttnOut,
            Site::MlpOut(_) => SiteKind::MlpOut,
            Site::FinalNorm => SiteKind::FinalNorm,
            Site::Logits => SiteKind::Logits,
        }
    }

    /// The block index of a per-block site.
    pub fn layer(self) -> Option<usize> {
        match self {
            Site::ResidPost(l) | Site::AttnPattern(l) | Site::AttnOut(l) | Site::MlpOut(l) => {
                Some(l)
            }
            Site::Embed | Site::FinalNorm | Site::Logits => None,
        }
    }
}

impl fmt::Display for Site {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.layer() {
            Some(l) => write!(f, "{}.{l}", self.kind().name()),
            None => f.write_str(self.kind().name()),
        }
    }
}

impl FromStr for Site {
    type Err = Error;
    /// Accepts `resid_post.3`, `resid_post(3)` and the layer-less names.
    fn from_str(s: &str) -> Result<Self> {
        let (name, layer) = match s.split_once(['.', '(']) {
            Some((name, rest)) => {
                let digits = rest.trim_end_matches(')');
                let layer = digits.parse::<usize>().map_err(|_| {
                    Error::InvalidRequest(format!(
                        "capture site `{s}`: `{digits}` is not a layer index"
                    ))
                })?;
                (name, Some(layer))
            }
            None => (s, None),
        };
        let kind: SiteKind = name.parse()?;
        match (kind.is_layered(), layer) {
            (true, Some(l)) => Ok(kind.at(l)),
            (false, None) => Ok(kind.at(0)),
            (true, None) => Err(Error::InvalidRequest(format!(
                "capture site `{s}` needs a layer, e.g. `{name}.0`"
            ))),
            (false, Some(_)) => Err(Error::InvalidRequest(format!(
                "capture site `{name}` has no layer index"
            ))),
        }
    }
}

/// Which positions of each row a capture keeps (real-token positions, padding excluded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Positions {
    /// Every slot of the padded axis (callers use the batch's lengths to ignore pads).
    #[default]
    All,
    /// The last real token of each row.
    Last,
    /// These real-token positions of every row.
    Index(Vec<usize>),
}

impl Positions {
    /// Padded-axis indices selected in `row`, or `None` for [`Positions::All`].
    fn indices(&self, batch: &TokenBatch, row: usize) -> Result<Option<Vec<usize>>> {
        let len = batch.rows()[row].len();
        match self {
            Positions::All => Ok(None),
            Positions::Last => Ok(Some(vec![batch.padded_index(row, len - 1)])),
            Positions::Index(ix) => ix
                .iter()
                .map(|&p| {
                    if p < len {
                        Ok(batch.padded_index(row, p))
                    } else {
                        Err(Error::InvalidRequest(format!(
                            "position {p} is past the end of sequence {row} (length {len})"
                        )))
                    }
                })
                .collect::<Result<Vec<_>>>()
                .map(Some),
        }
    }
}

/// A kept activation.
#[derive(Debug, Clone)]
pub enum Activation {
    /// `[batch, positions, width]`.
    Hidden(Tensor<3>),
    /// `[batch, heads, query positions, keys]`.
    Pattern(Tensor<4>),
}

impl Activation {
    /// The shape.
    pub fn dims(&self) -> Vec<usize> {
        match self {
            Activation::Hidden(t) => t.dims().to_vec(),
            Activation::Pattern(t) => t.dims().to_vec(),
        }
    }

    /// Reads the values back to the host as f32.
    pub fn to_vec(&self) -> Result<Vec<f32>> {
        let data = match self {
            Activation::Hidden(t) => t.to_data(),
            Activation::Pattern(t) => t.to_data(),
        };
        data.convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::Numeric(format!("reading an activation back: {e:?}")))
    }
}

/// What a forward pass asks for: captures with their positions, and interventions.
#[derive(Debug, Clone, Default)]
pub struct CapturePlan {
    sites: BTreeMap<Site, Positions>,
    interventions: Vec<Intervention>,
}

impl CapturePlan {
    /// An empty plan: nothing is kept.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a capture (builder form).
    pub fn with(mut self, site: Site, positions: Positions) -> Self {
        self.add(site, positions);
        self
    }

    /// Adds a capture.
    pub fn add(&mut self, site: Site, positions: Positions) {
        self.sites.insert(site, positions);
    }

    /// Adds an intervention (builder form).
    pub fn intervene(mut self, intervention: Intervention) -> Self {
        self.interventions.push(intervention);
        self
    }

    /// The requested positions of `site`, if it is requested.
    pub fn get(&self, site: Site) -> Option<&Positions> {
        self.sites.get(&site)
    }

    /// True when `site` is requested.
    pub fn wants(&self, site: Site) -> bool {
        self.sites.contains_key(&site)
    }

    /// The requested sites, in canonical order.
    pub fn sites(&self) -> impl Iterator<Item = (&Site, &Positions)> {
        self.sites.iter()
    }

    /// The interventions, in order.
    pub fn interventions(&self) -> &[Intervention] {
        &self.interventions
    }

    /// True when nothing is captured and nothing is changed.
    pub fn is_empty(&self) -> bool {
        self.sites.is_empty() && self.interventions.is_empty()
    }

    /// How many blocks must run: one past the deepest block any capture or intervention touches,
    /// or every block when `final_norm`/`logits` are requested.
    pub fn blocks_needed(&self, n_layers: usize) -> usize {
        if self.wants(Site::FinalNorm) || self.wants(Site::Logits) {
            return n_layers;
        }
        let sites = self.sites.keys().copied();
        let edited = self
            .interventions
            .iter()
            .filter_map(Intervention::deepest_layer);
        sites
            .filter_map(Site::layer)
            .chain(edited)
            .map(|l| l + 1)
            .max()
            .unwrap_or(0)
            .min(n_layers)
    }

    /// Checks the plan against a model: layer indices in range, attention sites and masks only
    /// on attention models, logits only on models with a head.
    pub fn validate(&self, info: &ModelInfo) -> Result<()> {
        let check_layer = |what: &str, l: usize| {
            if l >= info.n_layers {
                Err(Error::InvalidRequest(format!(
                    "{what} asks for layer {l}, but `{}` has {} layers (0..={})",
                    info.name,
                    info.n_layers,
                    info.n_layers - 1
                )))
            } else {
                Ok(())
            }
        };
        for site in self.sites.keys() {
            if let Some(l) = site.layer() {
                check_layer(&format!("capture `{site}`"), l)?;
            }
            if site.kind() == SiteKind::AttnPattern && !info.has_attention {
                return Err(Error::InvalidRequest(format!(
                    "capture `{site}`: `{}` ({}) has no attention probabilities",
                    info.name, info.architecture
                )));
            }
            if *site == Site::Logits && !info.has_lm_head {
                return Err(Error::InvalidRequest(format!(
                    "capture `logits`: `{}` ({}) is an encoder without a language-model head",
                    info.name, info.architecture
                )));
            }
        }
        for i in &self.interventions {
            i.validate(info)?;
        }
        Ok(())
    }
}

/// The activations a forward pass kept.
#[derive(Debug, Clone, Default)]
pub struct Captures {
    map: BTreeMap<Site, Activation>,
}

impl Captures {
    /// The activation at `site`, if captured.
    pub fn get(&self, site: Site) -> Option<&Activation> {
        self.map.get(&site)
    }

    /// The `[b, t, d]` activation at `site`, or an error naming it.
    pub fn hidden(&self, site: Site) -> Result<&Tensor<3>> {
        match self.map.get(&site) {
            Some(Activation::Hidden(t)) => Ok(t),
            Some(Activation::Pattern(_)) => Err(Error::InvalidRequest(format!(
                "`{site}` is an attention pattern, not a hidden state"
            ))),
            None => Err(Error::InvalidRequest(format!(
                "`{site}` was not captured (add it to the capture plan)"
            ))),
        }
    }

    /// The `[b, h, q, k]` attention pattern at `site`, or an error naming it.
    pub fn pattern(&self, site: Site) -> Result<&Tensor<4>> {
        match self.map.get(&site) {
            Some(Activation::Pattern(t)) => Ok(t),
            Some(Activation::Hidden(_)) => Err(Error::InvalidRequest(format!(
                "`{site}` is a hidden state, not an attention pattern"
            ))),
            None => Err(Error::InvalidRequest(format!(
                "`{site}` was not captured (add it to the capture plan)"
            ))),
        }
    }

    /// Removes and returns the activation at `site`.
    pub fn take(&mut self, site: Site) -> Option<Activation> {
        self.map.remove(&site)
    }

    /// Every capture, in canonical order.
    pub fn iter(&self) -> impl Iterator<Item = (&Site, &Activation)> {
        self.map.iter()
    }

    /// Number of captures.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when nothing was captured.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The captures of consecutive row groups of one batch, joined along the batch axis: what
    /// one forward pass over the whole batch keeps. Every part must hold the same sites with
    /// the same shape past the batch axis.
    pub fn concat_rows(parts: Vec<Captures>) -> Result<Captures> {
        let mut parts = parts.into_iter();
        let Some(first) = parts.next() else {
            return Err(Error::InvalidRequest("no captures to join".into()));
        };
        let mut rest: Vec<Captures> = parts.collect();
        let mut map = BTreeMap::new();
        // Each part's tensor is taken out of it, so it is freed once joined.
        for (site, act) in first.map {
            let joined = match act {
                Activation::Hidden(t) => {
                    Activation::Hidden(join_rows(site, t, &mut rest, |a| match a {
                        Activation::Hidden(t) => Some(t),
                        Activation::Pattern(_) => None,
                    })?)
                }
                Activation::Pattern(t) => {
                    Activation::Pattern(join_rows(site, t, &mut rest, |a| match a {
                        Activation::Pattern(t) => Some(t),
                        Activation::Hidden(_) => None,
                    })?)
                }
            };
            map.insert(site, joined);
        }
        if let Some(extra) = rest.iter().flat_map(|p| p.map.keys()).next() {
            return Err(Error::InvalidRequest(format!(
                "captures to join along the batch differ: only some parts hold `{extra}`"
            )));
        }
        Ok(Captures { map })
    }
}

/// `first` and the same site's tensors of `rest`, joined along the batch axis.
fn join_rows<const D: usize>(
    site: Site,
    first: Tensor<D>,
    rest: &mut [Captures],
    get: impl Fn(Activation) -> Option<Tensor<D>>,
) -> Result<Tensor<D>> {
    let mut all = vec![first];
    for part in rest {
        match part.map.remove(&site).and_then(&get) {
            Some(t) if t.dims()[1..] == all[0].dims()[1..] => all.push(t),
            other => {
                return Err(Error::InvalidRequest(format!(
                    "captures of `{site}` to join along the batch: {:?} and {:?}",
                    all[0].dims(),
                    other.map(|t| t.dims())
                )));
            }
        }
    }
    Ok(Tensor::cat(all, 0))
}

/// What model code reports its canonical points to. It applies the plan's edits at each point and
/// keeps what the plan asks for; everything else passes through untouched.
pub struct Recorder<'a> {
    plan: &'a CapturePlan,
    batch: &'a TokenBatch,
    captures: Captures,
}

impl<'a> Recorder<'a> {
    /// A recorder for one forward pass of `batch`.
    pub fn new(plan: &'a CapturePlan, batch: &'a TokenBatch) -> Self {
        Self {
            plan,
            batch,
            captures: Captures::default(),
        }
    }

    /// The plan being recorded.
    pub fn plan(&self) -> &CapturePlan {
        self.plan
    }

    /// Reports the hidden state `x` (`[b, t, d]`) at `site`: applies edits for the site, keeps it
    /// if requested, and returns the (possibly edited) tensor to continue the forward with.
    pub fn point(&mut self, site: Site, mut x: Tensor<3>) -> Result<Tensor<3>> {
        for i in self.plan.interventions() {
            if let Intervention::Edit {
                site: s,
                positions,
                edit,
            } = i
                && *s == site
            {
                x = apply_edit(x, self.batch, positions, edit)?;
            }
        }
        if let Some(positions) = self.plan.get(site) {
            let kept = select_positions(&x, 1, self.batch, positions)?;
            self.captures.map.insert(site, Activation::Hidden(kept));
        }
        Ok(x)
    }

    /// Reports attention probabilities `[b, h, q, k]` of block `layer`.
    pub fn pattern(&mut self, layer: usize, probs: &Tensor<4>) -> Result<()> {
        let site = Site::AttnPattern(layer);
        if let Some(positions) = self.plan.get(site) {
            let kept = select_positions(probs, 2, self.batch, positions)?;
            self.captures.map.insert(site, Activation::Pattern(kept));
        }
        Ok(())
    }

    /// True when `site` is requested (lets models skip work only a capture needs).
    pub fn wants(&self, site: Site) -> bool {
        self.plan.wants(site)
    }

    /// The captures recorded so far.
    pub fn finish(self) -> Captures {
        self.captures
    }
}

/// Selects `positions` of every row along `axis` (the token axis). Rows select different padded
/// indices when the batch is padded, so the selection is a per-row gather.
fn select_positions<const D: usize>(
    x: &Tensor<D>,
    axis: usize,
    batch: &TokenBatch,
    positions: &Positions,
) -> Result<Tensor<D>> {
    if *positions == Positions::All {
        return Ok(x.clone());
    }
    let device = x.device();
    let per_row: Vec<Vec<usize>> = (0..batch.batch_size())
        .map(|b| positions.indices(batch, b).map(|ix| ix.unwrap_or_default()))
        .collect::<Result<_>>()?;
    let same = per_row.windows(2).all(|w| w[0] == w[1]);
    if same {
        let ix: Vec<i64> = per_row[0].iter().map(|&i| i as i64).collect();
        let n = ix.len();
        let index = Tensor::<1, Int>::from_data(TensorData::new(ix, [n]), &device);
        return Ok(x.clone().select(axis, index));
    }
    let rows = per_row
        .iter()
        .enumerate()
        .map(|(b, ix)| {
            let ix: Vec<i64> = ix.iter().map(|&i| i as i64).collect();
            let n = ix.len();
            let index = Tensor::<1, Int>::from_data(TensorData::new(ix, [n]), &device);
            x.clone().narrow(0, b, 1).select(axis, index)
        })
        .collect();
    Ok(Tensor::cat(rows, 0))
}

/// Zeroes or replaces the selected positions of `x` (`[b, t, d]`).
fn apply_edit(
    x: Tensor<3>,
    batch: &TokenBatch,
    positions: &Positions,
    edit: &Edit,
) -> Result<Tensor<3>> {
    let [b, t, d] = x.dims();
    let device = x.device();
    let mut mask = vec![false; b * t];
    for row in 0..b {
        match positions.indices(batch, row)? {
            None => mask[row * t..(row + 1) * t].fill(true),
            Some(ix) => ix.into_iter().for_each(|j| mask[row * t + j] = true),
        }
    }
    let mask =
        Tensor::<3, burn::tensor::Bool>::from_data(TensorData::new(mask, [b, t, 1]), &device)
            .expand([b, t, d]);
    match edit {
        Edit::Zero => Ok(x.mask_fill(mask, 0.0)),
        Edit::Replace(value) => {
            let vd = value.dims();
            if vd[2] != d || (vd[0] != b && vd[0] != 1) || vd[1] != t {
                return Err(Error::InvalidRequest(format!(
                    "replacement value has shape {vd:?}, expected [{b} or 1, {t}, {d}]"
                )));
            }
            Ok(x.mask_where(mask, value.as_ref().clone().expand([b, t, d])))
        }
    }
}

//! Interventions applied inside the forward pass: attention-key blocking and activation edits.

use burn::tensor::{Bool, Device, Tensor, TensorData};

use crate::capture::{Positions, Site};
use crate::error::{Error, Result};
use crate::model::ModelInfo;

/// Which blocks an intervention applies to.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Layers {
    /// Every block.
    #[default]
    All,
    /// These blocks (0-based).
    Only(Vec<usize>),
}

impl Layers {
    /// True when block `l` is included.
    pub fn contains(&self, l: usize) -> bool {
        match self {
            Layers::All => true,
            Layers::Only(v) => v.contains(&l),
        }
    }
}

/// Blocks attention from query positions to key positions before the softmax: the blocked
/// probabilities become exactly 0 and the rest of each row is renormalised.
///
/// Positions are real-token positions of each row (see [`crate::TokenBatch`]); in incremental decoding
/// they are absolute positions in the sequence so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttentionBlock {
    /// Blocks the mask applies to.
    pub layers: Layers,
    /// Heads it applies to (`None`: every head).
    pub heads: Option<Vec<usize>>,
    /// Batch rows it applies to (`None`: every row).
    pub rows: Option<Vec<usize>>,
    /// Blocked `(query position, key position)` pairs.
    pub blocked: Vec<(usize, usize)>,
}

/// What an [`Intervention::Edit`] does to the selected positions.
#[derive(Debug, Clone)]
pub enum Edit {
    /// Sets them to zero.
    Zero,
    /// Replaces them with the same positions of this `[batch or 1, t, width]` tensor (boxed: a
    /// tensor handle is large, and plans are moved around by value).
    Replace(Box<Tensor<3>>),
}

/// An intervention carried by a [`crate::CapturePlan`].
#[derive(Debug, Clone)]
pub enum Intervention {
    /// Block attention pairs before the softmax.
    BlockAttention(AttentionBlock),
    /// Zero or replace a hidden state at a capture point; later blocks see the edited value.
    Edit {
        site: Site,
        positions: Positions,
        edit: Edit,
    },
}

impl Intervention {
    /// The deepest block the intervention touches (it must run for the edit to matter).
    pub(crate) fn deepest_layer(&self) -> Option<usize> {
        match self {
            Intervention::BlockAttention(_) => None,
            Intervention::Edit { site, .. } => site.layer(),
        }
    }

    pub(crate) fn validate(&self, info: &ModelInfo) -> Result<()> {
        match self {
            Intervention::BlockAttention(block) => {
                if !info.has_attention {
                    return Err(Error::InvalidRequest(format!(
                        "an attention-key mask was requested, but `{}` ({}) has no attention",
                        info.name, info.architecture
                    )));
                }
                if let Layers::Only(ls) = &block.layers
                    && let Some(l) = ls.iter().find(|&&l| l >= info.n_layers)
                {
                    return Err(Error::InvalidRequest(format!(
                        "attention-key mask names layer {l}, but `{}` has {} layers",
                        info.name, info.n_layers
                    )));
                }
                if let Some(h) = block.heads.iter().flatten().find(|&&h| h >= info.n_heads) {
                    return Err(Error::InvalidRequest(format!(
                        "attention-key mask names head {h}, but `{}` has {} heads",
                        info.name, info.n_heads
                    )));
                }
                Ok(())
            }
            Intervention::Edit { site, .. } => match site.layer() {
                Some(l) if l >= info.n_layers => Err(Error::InvalidRequest(format!(
                    "edit at `{site}`, but `{}` has {} layers",
                    info.name, info.n_layers
                ))),
                _ => Ok(()),
            },
        }
    }
}

/// The geometry of one attention call: how query and key slots map to real-token positions.
///
/// The key axis holds, for each row, `key_pad[row]` padding slots (left padding of the prompt)
/// followed by the row's tokens in order; the query slots are the last `n_query` key slots.
/// This covers a full forward (`n_query == n_key`) and incremental decoding alike.
#[derive(Debug, Clone, Copy)]
pub struct AttentionGeometry<'a> {
    /// Leading padding slots of each row on the key axis.
    pub key_pad: &'a [usize],
    /// Number of query slots.
    pub n_query: usize,
    /// Number of key slots.
    pub n_key: usize,
    /// Number of heads.
    pub n_heads: usize,
}

/// The `[batch, heads or 1, query, key]` mask of every [`AttentionBlock`] in `interventions`
/// that applies to block `layer` (`true` = blocked), or `None` when there is none.
pub fn attention_block_mask(
    interventions: &[Intervention],
    layer: usize,
    geom: AttentionGeometry<'_>,
    device: &Device,
) -> Option<Tensor<4, Bool>> {
    let blocks: Vec<&AttentionBlock> = interventions
        .iter()
        .filter_map(|i| match i {
            Intervention::BlockAttention(b) if b.layers.contains(layer) => Some(b),
            _ => None,
        })
        .collect();
    if blocks.is_empty() {
        return None;
    }
    let per_head = blocks.iter().any(|b| b.heads.is_some());
    let h = if per_head { geom.n_heads } else { 1 };
    let (bsz, q, k) = (geom.key_pad.len(), geom.n_query, geom.n_key);
    let first_query_slot = k - q;
    let mut mask = vec![false; bsz * h * q * k];
    for block in blocks {
        for (row, &pad) in geom.key_pad.iter().enumerate() {
            if block.rows.as_ref().is_some_and(|rows| !rows.contains(&row)) {
                continue;
            }
            for &(qp, kp) in &block.blocked {
                let (qk, ks) = (qp + pad, kp + pad);
                if qk < first_query_slot || qk >= k || ks >= k {
                    continue;
                }
                let qs = qk - first_query_slot;
                for head in 0..h {
                    if block.heads.as_ref().is_none_or(|hs| hs.contains(&head)) {
                        mask[((row * h + head) * q + qs) * k + ks] = true;
                    }
                }
            }
        }
    }
    Some(Tensor::from_data(
        TensorData::new(mask, [bsz, h, q, k]),
        device,
    ))
}

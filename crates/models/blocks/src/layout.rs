//! Where each row's tokens sit on the query and key axes of one forward call, and the masks that
//! follow from it.

use burn::tensor::{Bool, Device, Tensor, TensorData};
use strata_core::intervention::AttentionGeometry;
use strata_core::{Error, PadSide, Result, TokenBatch};

/// Which keys a query may see, besides padding (padding keys are always hidden).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MaskSpec {
    /// Decoder attention: query `i` sees keys `j <= i` only.
    pub causal: bool,
    /// Sliding window: query `i` sees key `j` only if `i - window < j`.
    pub window: Option<usize>,
}

impl MaskSpec {
    /// Plain causal attention.
    pub const CAUSAL: MaskSpec = MaskSpec {
        causal: true,
        window: None,
    };
    /// Bidirectional (encoder) attention.
    pub const BIDIRECTIONAL: MaskSpec = MaskSpec {
        causal: false,
        window: None,
    };
}

/// The slot geometry of one forward call.
///
/// The key axis of row `b` holds `key_pad[b]` padding slots, the row's real tokens in order, and
/// (right padding) padding slots from `key_end[b]` on. The query slots are the last `n_query`
/// key slots: a full forward has `n_query == n_key`; an incremental step appends `n_query` new
/// slots after the cached ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionLayout {
    key_pad: Vec<usize>,
    key_end: Vec<usize>,
    n_query: usize,
    n_key: usize,
    positions: Vec<Vec<usize>>,
}

impl AttentionLayout {
    /// The layout of a full forward pass over `batch` (no cache). Position ids follow HF: the
    /// real tokens of every row get `0..len`; left-padding slots get 0, right-padding slots
    /// continue the count.
    pub fn for_batch(batch: &TokenBatch) -> Self {
        let t = batch.max_len();
        let (key_pad, key_end) = batch
            .lengths()
            .into_iter()
            .map(|len| match batch.pad_side() {
                PadSide::Left => (t - len, t),
                PadSide::Right => (0, len),
            })
            .unzip();
        Self {
            key_pad,
            key_end,
            n_query: t,
            n_key: t,
            positions: batch.position_ids(0),
        }
    }

    /// A layout with explicit geometry (used by [`crate::KvCache`]). `positions` holds
    /// `n_query` ids per row.
    pub(crate) fn new(
        key_pad: Vec<usize>,
        key_end: Vec<usize>,
        n_query: usize,
        n_key: usize,
        positions: Vec<Vec<usize>>,
    ) -> Self {
        debug_assert!(n_query <= n_key);
        debug_assert!(positions.iter().all(|p| p.len() == n_query));
        Self {
            key_pad,
            key_end,
            n_query,
            n_key,
            positions,
        }
    }

    /// Number of rows.
    pub fn batch_size(&self) -> usize {
        self.key_pad.len()
    }

    /// Number of query slots.
    pub fn n_query(&self) -> usize {
        self.n_query
    }

    /// Number of key slots.
    pub fn n_key(&self) -> usize {
        self.n_key
    }

    /// Leading padding slots of each row on the key axis.
    pub fn key_pad(&self) -> &[usize] {
        &self.key_pad
    }

    /// Position id of every query slot, `[batch][n_query]` (RoPE reads these).
    pub fn position_ids(&self) -> &[Vec<usize>] {
        &self.positions
    }

    /// Checks that no position id reaches `context_length` (the model's
    /// `max_position_embeddings`).
    pub fn check_context(&self, context_length: usize, model: &str) -> Result<()> {
        let longest = self
            .positions
            .iter()
            .flat_map(|row| row.iter().copied())
            .max()
            .map_or(0, |p| p + 1);
        if longest > context_length {
            return Err(Error::InvalidRequest(format!(
                "a sequence reaches {longest} tokens, but `{model}` supports at most \
                 {context_length} (its context length)"
            )));
        }
        Ok(())
    }

    /// The geometry `strata_core`'s attention-key interventions are resolved against.
    pub fn geometry(&self, n_heads: usize) -> AttentionGeometry<'_> {
        AttentionGeometry {
            key_pad: &self.key_pad,
            n_query: self.n_query,
            n_key: self.n_key,
            n_heads,
        }
    }

    /// The `[batch, 1, n_query, n_key]` blocked-key mask (`true` = hidden) of `spec`: padding
    /// keys, future keys (causal) and keys outside the window. A query slot that is itself
    /// padding may end up with every key hidden; the softmax then stays finite (see
    /// [`crate::Attention`]) and its values are never meaningful.
    pub fn mask(&self, spec: MaskSpec, device: &Device) -> Tensor<4, Bool> {
        let (q, k) = (self.n_query, self.n_key);
        let first_query_slot = k - q;
        let mut mask = Vec::with_capacity(self.batch_size() * q * k);
        for (&pad, &end) in self.key_pad.iter().zip(&self.key_end) {
            for qs in 0..q {
                let i = first_query_slot + qs;
                mask.extend((0..k).map(|j| {
                    let padding = j < pad || j >= end;
                    let future = spec.causal && j > i;
                    let outside = spec.window.is_some_and(|w| j + w <= i);
                    padding || future || outside
                }));
            }
        }
        Tensor::from_data(TensorData::new(mask, [self.batch_size(), 1, q, k]), device)
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::Device;
    use strata_core::{PadSide, TokenBatch};

    use super::{AttentionLayout, MaskSpec};

    fn grid(layout: &AttentionLayout, spec: MaskSpec, row: usize) -> Vec<String> {
        let (q, k) = (layout.n_query(), layout.n_key());
        let all = layout
            .mask(spec, &Device::flex())
            .into_data()
            .try_into_vec::<bool>()
            .unwrap();
        all[row * q * k..(row + 1) * q * k]
            .chunks(k)
            .map(|r| r.iter().map(|&b| if b { 'x' } else { '.' }).collect())
            .collect()
    }

    #[test]
    fn masks_hide_padding_future_and_out_of_window_keys() {
        let rows = vec![vec![5, 6, 7, 8], vec![9, 10]];
        let left = TokenBatch::with_padding(rows.clone(), PadSide::Left, 0).unwrap();
        let layout = AttentionLayout::for_batch(&left);
        assert_eq!(layout.position_ids(), &[vec![0, 1, 2, 3], vec![0, 0, 0, 1]]);
        assert_eq!(
            grid(&layout, MaskSpec::CAUSAL, 1),
            ["xxxx", "xxxx", "xx.x", "xx.."]
        );
        assert_eq!(
            grid(&layout, MaskSpec::CAUSAL, 0),
            [".xxx", "..xx", "...x", "...."]
        );
        let window = MaskSpec {
            causal: true,
            window: Some(2),
        };
        assert_eq!(grid(&layout, window, 0), [".xxx", "..xx", "x..x", "xx.."]);
        assert_eq!(
            grid(&layout, MaskSpec::BIDIRECTIONAL, 1),
            ["xx..", "xx..", "xx..", "xx.."]
        );

        let right = TokenBatch::new(rows).unwrap();
        let layout = AttentionLayout::for_batch(&right);
        assert_eq!(layout.position_ids(), &[vec![0, 1, 2, 3], vec![0, 1, 2, 3]]);
        assert_eq!(
            grid(&layout, MaskSpec::CAUSAL, 1),
            [".xxx", "..xx", "..xx", "..xx"]
        );
        assert!(layout.check_context(4, "m").is_ok());
        assert!(layout.check_context(3, "m").is_err());
    }
}

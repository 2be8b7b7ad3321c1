//! What recurrent (attention-free) models share: the rules of their incremental decoding, the
//! real-token mask that keeps padding out of a recurrent state, and moving the tensors a scan
//! runs over between the device and contiguous host `f32` buffers.
//!
//! A recurrent model (Mamba, RWKV) carries a fixed-size state from token to token instead of a
//! KV cache. Padding must never reach that state: pad slots are zeroed before anything mixes
//! tokens (token shift, convolution) and skipped by the scan, so a left-padded prompt leaves
//! exactly the state its unpadded row would.

use burn::tensor::{Device, Tensor, TensorData};
use strata_core::{Error, PadSide, Result, TokenBatch};

/// Checks that `batch` may continue a recurrent decoding state that holds `rows` sequences
/// (`None`: nothing yet). The first call (the prompt) may be left-padded; every later call adds
/// the same number of tokens to every row, unpadded — the rules of [`crate::KvCache`].
pub fn check_step(batch: &TokenBatch, rows: Option<usize>) -> Result<()> {
    match rows {
        None => {
            if batch.is_padded() && batch.pad_side() == PadSide::Right {
                return Err(Error::InvalidRequest(
                    "incremental decoding needs a left-padded prompt batch (PadSide::Left) when \
                     rows differ in length"
                        .into(),
                ));
            }
        }
        Some(rows) => {
            if batch.batch_size() != rows {
                return Err(Error::InvalidRequest(format!(
                    "the decoding state holds {rows} sequences, but the step has {}",
                    batch.batch_size()
                )));
            }
            if batch.is_padded() {
                return Err(Error::InvalidRequest(
                    "after the prompt, every decoding step must add the same number of tokens \
                     to every sequence (no padding)"
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// Which slots of a padded batch hold real tokens: the `[batch][max_len]` flags, and the same as
/// a `[batch, max_len, 1]` tensor of `1.0` (real) / `0.0` (pad) to multiply hidden states with.
/// Both are `None` for an unpadded batch (every slot is real).
pub struct RealMask {
    /// `[batch * max_len]` flags, row-major.
    pub flags: Vec<bool>,
    /// `[batch, max_len, 1]` multiplier.
    pub tensor: Tensor<3>,
}

impl RealMask {
    /// The mask of `batch`, or `None` when it is not padded.
    pub fn of(batch: &TokenBatch, device: &Device) -> Option<Self> {
        if !batch.is_padded() {
            return None;
        }
        let flags: Vec<bool> = batch.real_mask().into_iter().flatten().collect();
        let ones: Vec<f32> = flags.iter().map(|&r| if r { 1.0 } else { 0.0 }).collect();
        let shape = [batch.batch_size(), batch.max_len(), 1];
        let tensor = Tensor::from_data(TensorData::new(ones, shape), device);
        Some(Self { flags, tensor })
    }

    /// `x` (`[batch, max_len, width]`) with its pad slots set to zero.
    pub fn zero_pads(mask: Option<&Self>, x: Tensor<3>) -> Tensor<3> {
        match mask {
            Some(m) => x * m.tensor.clone(),
            None => x,
        }
    }

    /// True when slot `j` of row `b` (of `t` slots per row) holds a real token.
    pub fn is_real(mask: Option<&Self>, b: usize, j: usize, t: usize) -> bool {
        mask.is_none_or(|m| m.flags[b * t + j])
    }
}

/// One layer's part of a [`RecurrentState`].
pub trait LayerRows: Clone + Send + 'static {
    /// The layer's state with each of its `rows` sequences repeated `n` times in order.
    fn repeat_rows(&self, rows: usize, n: usize) -> Self;
}

/// The decoding state of a recurrent model (what its [`strata_core::DecodeCache`] holds): the
/// number of sequences and every layer's state, both empty before the prompt.
#[derive(Debug, Clone)]
pub struct RecurrentState<L> {
    /// Sequences in the state (`None` before the prompt).
    pub rows: Option<usize>,
    pub layers: Vec<L>,
}

impl<L> Default for RecurrentState<L> {
    fn default() -> Self {
        Self {
            rows: None,
            layers: Vec::new(),
        }
    }
}

impl<L: LayerRows> strata_core::DecodeState for RecurrentState<L> {
    fn repeat_rows(&self, n: usize) -> Self {
        let rows = self.rows.unwrap_or(0);
        Self {
            rows: self.rows.map(|r| r * n),
            layers: self.layers.iter().map(|l| l.repeat_rows(rows, n)).collect(),
        }
    }
}

/// Reads `t` back to a contiguous host `f32` buffer (row-major); `what` names it in errors.
pub fn to_host<const D: usize>(t: Tensor<D>, what: &str) -> Result<Vec<f32>> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| Error::Numeric(format!("reading {what} back from the device: {e:?}")))
}

/// A tensor of `shape` on `device` from a row-major host buffer.
pub fn from_host<const D: usize>(
    values: Vec<f32>,
    shape: [usize; D],
    device: &Device,
) -> Tensor<D> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};
    use strata_core::{PadSide, TokenBatch};

    use super::{RealMask, check_step, from_host, to_host};

    #[test]
    fn steps_follow_the_kv_cache_rules() {
        let rows = vec![vec![1, 2, 3], vec![4]];
        let left = TokenBatch::with_padding(rows.clone(), PadSide::Left, 0).unwrap();
        let right = TokenBatch::new(rows).unwrap();
        assert!(check_step(&left, None).is_ok());
        assert!(check_step(&right, None).unwrap_err().is_input_error());
        let step = TokenBatch::new(vec![vec![5], vec![6]]).unwrap();
        assert!(check_step(&step, Some(2)).is_ok());
        assert!(check_step(&step, Some(3)).is_err());
        assert!(check_step(&left, Some(2)).is_err());
    }

    #[test]
    fn the_mask_zeroes_pad_slots_only() {
        let device = Device::flex();
        let left =
            TokenBatch::with_padding(vec![vec![1, 2, 3], vec![4]], PadSide::Left, 0).unwrap();
        let mask = RealMask::of(&left, &device).unwrap();
        assert_eq!(mask.flags, [true, true, true, false, false, true]);
        let x: Tensor<3> = Tensor::ones([2, 3, 2], &device);
        let zeroed = to_host(RealMask::zero_pads(Some(&mask), x), "x").unwrap();
        assert_eq!(zeroed, [1., 1., 1., 1., 1., 1., 0., 0., 0., 0., 1., 1.]);
        assert!(RealMask::is_real(Some(&mask), 1, 2, 3));
        assert!(!RealMask::is_real(Some(&mask), 1, 1, 3));
        let plain = TokenBatch::new(vec![vec![1, 2]]).unwrap();
        assert!(RealMask::of(&plain, &device).is_none());
        assert!(RealMask::is_real(None, 0, 1, 2));
        let back = to_host(from_host(vec![1.0, 2.0], [1, 2], &device), "t").unwrap();
        assert_eq!(back, [1.0, 2.0]);
    }
}

//! A batch of token sequences of possibly different lengths, and how it is padded.
//!
//! Positions that analyses and captures talk about are always *real-token* positions
//! `0..len_b` of row `b`; [`TokenBatch::padded_index`] maps them to the padded axis.

use burn::tensor::{Device, Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// Where the padding goes when rows differ in length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PadSide {
    /// Pads after the real tokens (forward passes, captures).
    #[default]
    Right,
    /// Pads before the real tokens (batched generation: every row ends at the last column).
    Left,
}

/// Token ids of one or more sequences, padded to a rectangle on one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBatch {
    rows: Vec<Vec<u32>>,
    side: PadSide,
    pad_id: u32,
}

impl TokenBatch {
    /// A batch of the given sequences, right-padded with id 0 where lengths differ.
    pub fn new(rows: Vec<Vec<u32>>) -> Result<Self> {
        Self::with_padding(rows, PadSide::Right, 0)
    }

    /// A batch with an explicit padding side and pad id.
    pub fn with_padding(rows: Vec<Vec<u32>>, side: PadSide, pad_id: u32) -> Result<Self> {
        if rows.is_empty() {
            return Err(Error::InvalidRequest(
                "a batch needs at least one sequence".into(),
            ));
        }
        if let Some(i) = rows.iter().position(Vec::is_empty) {
            return Err(Error::InvalidRequest(format!(
                "sequence {i} of the batch is empty: every sequence needs at least one token"
            )));
        }
        Ok(Self { rows, side, pad_id })
    }

    /// A single sequence.
    pub fn single(ids: Vec<u32>) -> Result<Self> {
        Self::new(vec![ids])
    }

    /// Number of sequences.
    pub fn batch_size(&self) -> usize {
        self.rows.len()
    }

    /// Length of the padded axis (the longest sequence).
    pub fn max_len(&self) -> usize {
        self.rows.iter().map(Vec::len).max().unwrap_or(0)
    }

    /// Real length of each row.
    pub fn lengths(&self) -> Vec<usize> {
        self.rows.iter().map(Vec::len).collect()
    }

    /// The unpadded rows.
    pub fn rows(&self) -> &[Vec<u32>] {
        &self.rows
    }

    /// Rows `range` as a batch of their own, with the same padding side and pad id (its padded
    /// axis is the longest of those rows).
    pub fn slice_rows(&self, range: std::ops::Range<usize>) -> Result<Self> {
        match self.rows.get(range.clone()) {
            Some(rows) => Self::with_padding(rows.to_vec(), self.side, self.pad_id),
            None => Err(Error::InvalidRequest(format!(
                "rows {range:?} of a batch of {} sequences",
                self.rows.len()
            ))),
        }
    }

    /// The padding side.
    pub fn pad_side(&self) -> PadSide {
        self.side
    }

    /// True when some row is shorter than the padded axis.
    pub fn is_padded(&self) -> bool {
        let t = self.max_len();
        self.rows.iter().any(|r| r.len() != t)
    }

    /// Index on the padded axis of real position `pos` of row `row`.
    pub fn padded_index(&self, row: usize, pos: usize) -> usize {
        match self.side {
            PadSide::Right => pos,
            PadSide::Left => self.max_len() - self.rows[row].len() + pos,
        }
    }

    /// `[batch, max_len]` ids, padded with the pad id.
    pub fn ids_tensor(&self, device: &Device) -> Tensor<2, Int> {
        let t = self.max_len();
        let mut data = Vec::with_capacity(self.rows.len() * t);
        for row in &self.rows {
            let pad = t - row.len();
            if self.side == PadSide::Left {
                data.extend(std::iter::repeat_n(self.pad_id as i64, pad));
            }
            data.extend(row.iter().map(|&id| id as i64));
            if self.side == PadSide::Right {
                data.extend(std::iter::repeat_n(self.pad_id as i64, pad));
            }
        }
        Tensor::from_data(TensorData::new(data, [self.rows.len(), t]), device)
    }

    /// Position ids of every padded slot, starting at `offset`: real tokens get
    /// `offset..offset+len`, pads get `offset` (HF's generate convention for left padding).
    pub fn position_ids(&self, offset: usize) -> Vec<Vec<usize>> {
        let t = self.max_len();
        self.rows
            .iter()
            .map(|row| {
                let pad = t - row.len();
                (0..t)
                    .map(|j| match self.side {
                        PadSide::Right => offset + j,
                        PadSide::Left => offset + j.saturating_sub(pad),
                    })
                    .collect()
            })
            .collect()
    }

    /// `true` for every padded slot that holds a real token (`[batch][max_len]`).
    pub fn real_mask(&self) -> Vec<Vec<bool>> {
        let t = self.max_len();
        self.rows
            .iter()
            .enumerate()
            .map(|(b, row)| {
                let start = self.padded_index(b, 0);
                (0..t)
                    .map(|j| j >= start && j < start + row.len())
                    .collect()
            })
            .collect()
    }
}

//! Weight matrices in a container's own block-quantised storage (GGUF's `Q8_0`, `Q4_K`, …),
//! kept beside their f32 copy so that products with a few rows — a decoding step — can read
//! 4–8 bits per weight instead of 32.
//!
//! A [`PackedRows`] is the `[rows, cols]` matrix in HF layout (`nn.Linear`'s `[out, in]`): each
//! row is `cols / block_size` consecutive blocks, so any row permutation of the stored matrix
//! is a permutation of whole byte ranges. Its values are by definition what
//! [`PackedRows::dequantize`] gives — candle's dequantisation, the same code that produces the
//! f32 copy — and a kernel that reads the blocks must reproduce them exactly.

use std::sync::Arc;

use memmap2::Mmap;

use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// A `[rows, cols]` block-quantised matrix, row-major in whole blocks.
#[derive(Clone)]
pub struct PackedRows {
    format: GgmlType,
    rows: usize,
    cols: usize,
    bytes: Bytes,
}

#[derive(Clone)]
enum Bytes {
    /// A range of a memory-mapped file (no copy; pages are read from the file when used).
    Mapped {
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    },
    Owned(Arc<[u8]>),
}

impl std::fmt::Debug for PackedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedRows")
            .field("format", &self.format)
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("mapped", &matches!(self.bytes, Bytes::Mapped { .. }))
            .finish()
    }
}

impl PackedRows {
    /// `rows × cols` values of block type `format` in `map[start..start + len]`.
    pub(crate) fn mapped(
        format: GgmlType,
        rows: usize,
        cols: usize,
        map: Arc<Mmap>,
        start: usize,
        len: usize,
    ) -> Result<Self, String> {
        check(format, rows, cols, len)?;
        if start.checked_add(len).is_none_or(|end| end > map.len()) {
            return Err(format!(
                "{len} bytes at offset {start} lie outside the file ({} bytes)",
                map.len()
            ));
        }
        Ok(Self {
            format,
            rows,
            cols,
            bytes: Bytes::Mapped { map, start, len },
        })
    }

    /// `rows × cols` values of block type `format` in `bytes`.
    pub fn owned(
        format: GgmlType,
        rows: usize,
        cols: usize,
        bytes: Vec<u8>,
    ) -> Result<Self, String> {
        check(format, rows, cols, bytes.len())?;
        Ok(Self {
            format,
            rows,
            cols,
            bytes: Bytes::Owned(bytes.into()),
        })
    }

    /// The block type.
    pub fn format(&self) -> GgmlType {
        self.format
    }

    /// Number of rows (a linear map's outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (a linear map's inputs), a multiple of the block size.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// All rows' bytes, row after row.
    pub fn bytes(&self) -> &[u8] {
        match &self.bytes {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned(bytes) => bytes,
        }
    }

    /// Bytes per row.
    pub fn row_bytes(&self) -> usize {
        self.bytes().len() / self.rows.max(1)
    }

    /// The matrix with its rows reordered: row `i` of the result is row `order[i]` of `self`.
    pub fn permute_rows(&self, order: &[usize]) -> Result<Self, String> {
        if order.len() != self.rows || order.iter().any(|&r| r >= self.rows) {
            return Err(format!(
                "a row order of {} entries does not fit {} rows",
                order.len(),
                self.rows
            ));
        }
        let out = gather_rows(self.bytes(), self.row_bytes(), order);
        Self::owned(self.format, self.rows, self.cols, out)
    }

    /// The values as f32, row-major: candle's dequantisation, the definition of what the
    /// blocks hold.
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        crate::gguf::dequantize(self.format, self.bytes(), &[self.rows, self.cols])
            .map_err(|e| Error::InvalidRequest(format!("dequantising {} blocks: {e}", self.format)))
    }
}

/// Rows of `width` values of `values` in the order `order` (row `i` of the result is row
/// `order[i]`).
pub(crate) fn gather_rows<T: Copy>(values: &[T], width: usize, order: &[usize]) -> Vec<T> {
    let mut out = Vec::with_capacity(order.len() * width);
    for &r in order {
        out.extend_from_slice(&values[r * width..(r + 1) * width]);
    }
    out
}

/// `len` bytes hold exactly `rows × cols` values of `format`, in whole blocks per row.
fn check(format: GgmlType, rows: usize, cols: usize, len: usize) -> Result<(), String> {
    let dtype = format.to_candle();
    let (block, size) = (dtype.block_size(), dtype.type_size());
    if !format.is_block_quantised() {
        return Err(format!("{format} is not a block-quantised type"));
    }
    if !cols.is_multiple_of(block) {
        return Err(format!(
            "rows of {cols} values do not split into {format} blocks of {block}"
        ));
    }
    let expected = rows * (cols / block) * size;
    if len != expected {
        return Err(format!(
            "{rows} × {cols} {format} values take {expected} bytes, not {len}"
        ));
    }
    Ok(())
}

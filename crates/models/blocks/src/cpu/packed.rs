//! Products of a few rows with a block-quantised weight ([`PackedRows`]), read in place.
//!
//! A decoding step multiplies one row (or one per continuation) by every weight matrix, so it
//! is bound by memory bandwidth: streaming an f32 weight costs 32 bits per multiply–add, its
//! GGUF blocks 4.5–8.5. Each block is decoded into f32 registers with exactly the arithmetic
//! of candle's dequantisation (which made the f32 copy), so the weights are the same values
//! and only the order of the sums differs from the f32 product.

use burn::tensor::Tensor;
use half::f16;
use rayon::prelude::*;
use strata_core::gguf::GgmlType;
use strata_core::packed::PackedRows;

use super::{Out, bias_rows, primitive, tensor, values};
#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
#[cfg(target_arch = "x86_64")]
use x86::{h16, i8x8, scaled, store, u8x8};

/// Products of at most this many rows read the packed weights; larger ones are compute-bound
/// and go to gemm on the f32 copy.
pub(crate) const MAX_ROWS: usize = 8;

/// Whether [`linear`] reads `format`.
pub(crate) fn supports(format: GgmlType) -> bool {
    matches!(
        format,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q8_0
            | GgmlType::Q4K
            | GgmlType::Q6K
    )
}

/// Output rows per task of the pool (a task streams this many weight rows).
const ROWS_PER_TASK: usize = 64;

/// `x · wᵀ + bias` for `x` `[m, k]` (`m ≤ MAX_ROWS`) and `w` the `[n, k]` weight as consecutive
/// blocks of output rows (`parts`, each in its own block format).
pub(crate) fn linear(x: Tensor<2>, parts: &[PackedRows], bias: Option<&Tensor<1>>) -> Tensor<2> {
    product(x, parts, bias, avx2_fma())
}

/// [`linear`], with the AVX2 kernels when `simd` (which needs [`avx2_fma`]).
fn product(x: Tensor<2>, parts: &[PackedRows], bias: Option<&Tensor<1>>, simd: bool) -> Tensor<2> {
    let [m, k] = x.dims();
    let n: usize = parts.iter().map(PackedRows::rows).sum();
    assert!(m <= MAX_ROWS, "packed linear: at most {MAX_ROWS} rows");
    assert!(
        parts.iter().all(|p| p.cols() == k && supports(p.format())),
        "packed linear: every part must be a supported format of the input width"
    );
    let x = primitive(x).to_contiguous();
    let xs = values(&x);
    let mut out = bias_rows(bias, m, n).unwrap_or_else(|| vec![0.0; m * n]);
    // Tasks: (part, first row of the part, rows, first output column).
    let mut tasks = Vec::new();
    let mut column = 0;
    for (p, part) in parts.iter().enumerate() {
        for first in (0..part.rows()).step_by(ROWS_PER_TASK) {
            let rows = ROWS_PER_TASK.min(part.rows() - first);
            tasks.push((p, first, rows, column + first));
        }
        column += part.rows();
    }
    assert!(
        !simd || avx2_fma(),
        "packed linear: the AVX2 kernels need AVX2, FMA and F16C"
    );
    let dst = Out(out.as_mut_ptr());
    let run = |&(p, first, rows, column): &(usize, usize, usize, usize)| {
        let task = Task {
            w: &parts[p],
            first,
            rows,
            column,
            xs,
            m,
            n,
            dst,
        };
        match parts[p].format() {
            GgmlType::Q4_0 => task.run::<Q4_0>(simd),
            GgmlType::Q4_1 => task.run::<Q4_1>(simd),
            GgmlType::Q5_0 => task.run::<Q5_0>(simd),
            GgmlType::Q8_0 => task.run::<Q8_0>(simd),
            GgmlType::Q4K => task.run::<Q4K>(simd),
            GgmlType::Q6K => task.run::<Q6K>(simd),
            other => {
                unreachable!("packed linear: {other} is not supported (checked by `supports`)")
            }
        }
    };
    if m * n * k < super::PARALLEL_ELEMENTS * 16 {
        tasks.iter().for_each(run);
    } else {
        tasks.par_iter().for_each(run);
    }
    tensor(out, [m, n])
}

/// Whether this CPU runs the AVX2 kernels (AVX2, FMA, F16C; otherwise the portable loop runs).
fn avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows `first..first + rows` of one part, written to output columns `column…`.
struct Task<'a> {
    w: &'a PackedRows,
    first: usize,
    rows: usize,
    column: usize,
    xs: &'a [f32],
    m: usize,
    n: usize,
    dst: Out,
}

impl Task<'_> {
    /// The task for blocks of format `F`, with the AVX2 kernel when `simd` (which the caller
    /// checked with [`avx2_fma`]).
    fn run<F: Format>(&self, simd: bool) {
        #[cfg(target_arch = "x86_64")]
        if simd {
            // SAFETY: `simd` is true only where the CPU has AVX2, FMA and F16C.
            unsafe { x86::rows::<F>(self) };
            return;
        }
        let _ = simd;
        self.rows_portable::<F>();
    }

    /// The portable loop: each block decoded by [`Format::decode`], then plain sums.
    fn rows_portable<F: Format>(&self) {
        let k = self.w.cols();
        let mut weights = [0.0f32; 256];
        let weights = &mut weights[..F::BLOCK];
        for i in 0..self.rows {
            let mut sums = [0.0f32; MAX_ROWS];
            for (b, block) in self.row(i).chunks_exact(F::SIZE).enumerate() {
                F::decode(block, weights);
                for (r, sum) in sums.iter_mut().enumerate().take(self.m) {
                    let x = &self.xs[r * k + b * F::BLOCK..r * k + (b + 1) * F::BLOCK];
                    *sum += weights.iter().zip(x).map(|(w, x)| w * x).sum::<f32>();
                }
            }
            for (r, &sum) in sums.iter().enumerate().take(self.m) {
                self.add(r, i, sum);
            }
        }
    }

    /// The bytes of this task's row `i`.
    #[inline(always)]
    fn row(&self, i: usize) -> &[u8] {
        let width = self.w.row_bytes();
        let first = (self.first + i) * width;
        &self.w.bytes()[first..first + width]
    }

    /// Adds `sum` to output `(r, column + i)`.
    #[inline(always)]
    fn add(&self, r: usize, i: usize, sum: f32) {
        assert!(r < self.m && self.column + i < self.n && i < self.rows);
        // SAFETY: `dst` holds `m × n` initialised values and the index is in bounds (checked
        // above); tasks write disjoint columns.
        unsafe { *self.dst.ptr().add(r * self.n + self.column + i) += sum };
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Format, Task};

    /// The AVX2 loop: each weight row decoded block by block ([`Format::decode_avx2`]) into a
    /// scratch row that stays in L1/L2, then one eight-lane fused multiply–add pass over it per
    /// input row.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows<F: Format>(task: &Task<'_>) {
        let k = task.w.cols();
        let mut weights = vec![0.0f32; k];
        for i in 0..task.rows {
            for (block, w) in task
                .row(i)
                .chunks_exact(F::SIZE)
                .zip(weights.chunks_exact_mut(F::BLOCK))
            {
                // SAFETY: AVX2, FMA and F16C are available (this function's contract).
                unsafe { F::decode_avx2(block, w) };
            }
            for r in 0..task.m {
                let x = &task.xs[r * k..(r + 1) * k];
                // Four independent chains hide the latency of the fused multiply–adds (rows
                // are whole blocks, so a multiple of 32 values).
                let mut acc = [_mm256_setzero_ps(); 4];
                for (w, x) in weights.chunks_exact(32).zip(x.chunks_exact(32)) {
                    for (j, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: `8 * j + 8 ≤ 32` values of both chunks.
                        *acc = unsafe {
                            _mm256_fmadd_ps(
                                _mm256_loadu_ps(w.as_ptr().add(8 * j)),
                                _mm256_loadu_ps(x.as_ptr().add(8 * j)),
                                *acc,
                            )
                        };
                    }
                }
                let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
                let mut lanes = [0.0f32; 8];
                // SAFETY: `lanes` holds 8 values.
                unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), v) };
                task.add(r, i, lanes.iter().sum());
            }
        }
    }

    // The helpers below are `#[inline(always)]` without target features of their own, so that
    // they (and the block decoders built from them) are inlined into `rows` and compiled with
    // its features there. Safety of each: the caller runs under AVX2, FMA and F16C.

    /// The f16 in `b[..2]` (little-endian) as f32, by F16C (exact, as every f16 → f32).
    #[inline(always)]
    pub(super) unsafe fn h16(b: &[u8]) -> f32 {
        let bits = u16::from_le_bytes([b[0], b[1]]);
        // SAFETY: the caller runs under F16C.
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
    }

    /// Eight bytes zero-extended to eight i32 lanes.
    #[inline(always)]
    pub(super) unsafe fn u8x8(b: &[u8]) -> __m256i {
        let b: &[u8; 8] = b[..8].try_into().expect("eight bytes");
        // SAFETY: reads exactly the eight bytes of `b`; the caller runs under AVX2.
        unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
    }

    /// Eight bytes sign-extended to eight i32 lanes.
    #[inline(always)]
    pub(super) unsafe fn i8x8(b: &[u8]) -> __m256i {
        let b: &[u8; 8] = b[..8].try_into().expect("eight bytes");
        // SAFETY: as for `u8x8`.
        unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
    }

    /// `q · d` for i32 lanes `q`, rounded in f32 as the scalar code rounds it.
    #[inline(always)]
    pub(super) unsafe fn scaled(q: __m256i, d: f32) -> __m256 {
        // SAFETY: the caller runs under AVX2.
        unsafe { _mm256_mul_ps(_mm256_cvtepi32_ps(q), _mm256_set1_ps(d)) }
    }

    /// Stores eight lanes at `w[..8]`.
    #[inline(always)]
    pub(super) unsafe fn store(w: &mut [f32], v: __m256) {
        let w: &mut [f32; 8] = (&mut w[..8]).try_into().expect("eight values");
        // SAFETY: writes exactly the eight values of `w`; the caller runs under AVX2.
        unsafe { _mm256_storeu_ps(w.as_mut_ptr(), v) }
    }
}

/// A block format: `SIZE` bytes holding `BLOCK` values.
trait Format {
    const SIZE: usize;
    const BLOCK: usize;
    /// Block `b` (`SIZE` bytes) decoded into `w` (`BLOCK` values): candle's arithmetic, value
    /// by value.
    fn decode(b: &[u8], w: &mut [f32]);
    /// [`Self::decode`] with AVX2, eight values at a time, the same operations in each lane.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]);
}

#[inline(always)]
fn f16_at(b: &[u8]) -> f32 {
    f16::from_le_bytes([b[0], b[1]]).to_f32()
}

/// `Q4_0`: scale `d`, then 32 nibbles: `(q − 8) · d`.
struct Q4_0;

impl Format for Q4_0 {
    const SIZE: usize = 18;
    const BLOCK: usize = 32;

    #[inline(always)]
    fn decode(b: &[u8], w: &mut [f32]) {
        let (b, w): (&[u8; 18], &mut [f32; 32]) = (b.try_into().unwrap(), w.try_into().unwrap());
        let d = f16_at(&b[0..2]);
        for (j, &q) in b[2..18].iter().enumerate() {
            w[j] = ((q & 0x0F) as i16 - 8) as f32 * d;
            w[j + 16] = ((q >> 4) as i16 - 8) as f32 * d;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]) {
        // SAFETY: the caller runs under AVX2, FMA and F16C (this method's contract).
        unsafe {
            let d = h16(&b[0..2]);
            let (low, eight) = (_mm256_set1_epi32(0x0F), _mm256_set1_epi32(8));
            for h in 0..2 {
                let q = u8x8(&b[2 + 8 * h..]);
                let lo = _mm256_sub_epi32(_mm256_and_si256(q, low), eight);
                let hi = _mm256_sub_epi32(_mm256_srli_epi32::<4>(q), eight);
                store(&mut w[8 * h..], scaled(lo, d));
                store(&mut w[16 + 8 * h..], scaled(hi, d));
            }
        }
    }
}

/// `Q4_1`: scale `d`, offset `m`, 32 nibbles: `q · d + m`.
struct Q4_1;

impl Format for Q4_1 {
    const SIZE: usize = 20;
    const BLOCK: usize = 32;

    #[inline(always)]
    fn decode(b: &[u8], w: &mut [f32]) {
        let (b, w): (&[u8; 20], &mut [f32; 32]) = (b.try_into().unwrap(), w.try_into().unwrap());
        let (d, m) = (f16_at(&b[0..2]), f16_at(&b[2..4]));
        for (j, &q) in b[4..20].iter().enumerate() {
            w[j] = (q & 0x0F) as f32 * d + m;
            w[j + 16] = (q >> 4) as f32 * d + m;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]) {
        // SAFETY: the caller runs under AVX2, FMA and F16C (this method's contract).
        unsafe {
            let (d, m) = (h16(&b[0..2]), h16(&b[2..4]));
            let (low, mv) = (_mm256_set1_epi32(0x0F), _mm256_set1_ps(m));
            for h in 0..2 {
                let q = u8x8(&b[4 + 8 * h..]);
                let lo = _mm256_and_si256(q, low);
                let hi = _mm256_srli_epi32::<4>(q);
                store(&mut w[8 * h..], _mm256_add_ps(scaled(lo, d), mv));
                store(&mut w[16 + 8 * h..], _mm256_add_ps(scaled(hi, d), mv));
            }
        }
    }
}

/// `Q5_0`: scale `d`, 32 high bits, 32 nibbles: `(q − 16) · d`.
struct Q5_0;

impl Format for Q5_0 {
    const SIZE: usize = 22;
    const BLOCK: usize = 32;

    #[inline(always)]
    fn decode(b: &[u8], w: &mut [f32]) {
        let (b, w): (&[u8; 22], &mut [f32; 32]) = (b.try_into().unwrap(), w.try_into().unwrap());
        let d = f16_at(&b[0..2]);
        let qh = u32::from_le_bytes([b[2], b[3], b[4], b[5]]);
        for (j, &q) in b[6..22].iter().enumerate() {
            let h0 = (((qh >> j) << 4) & 0x10) as u8;
            let h1 = ((qh >> (j + 12)) & 0x10) as u8;
            w[j] = (((q & 0x0F) | h0) as i32 - 16) as f32 * d;
            w[j + 16] = (((q >> 4) | h1) as i32 - 16) as f32 * d;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]) {
        // SAFETY: the caller runs under AVX2, FMA and F16C (this method's contract).
        unsafe {
            let d = h16(&b[0..2]);
            // Value `v` takes bit `v` of `qh` as its fifth bit.
            let qh = _mm256_set1_epi32(u32::from_le_bytes([b[2], b[3], b[4], b[5]]) as i32);
            let (low, one, sixteen) = (
                _mm256_set1_epi32(0x0F),
                _mm256_set1_epi32(1),
                _mm256_set1_epi32(16),
            );
            let high = |first: i32| {
                let at = _mm256_setr_epi32(
                    first,
                    first + 1,
                    first + 2,
                    first + 3,
                    first + 4,
                    first + 5,
                    first + 6,
                    first + 7,
                );
                _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srlv_epi32(qh, at), one))
            };
            for h in 0..2 {
                let q = u8x8(&b[6 + 8 * h..]);
                let first = 8 * h as i32;
                let lo = _mm256_or_si256(_mm256_and_si256(q, low), high(first));
                let hi = _mm256_or_si256(_mm256_srli_epi32::<4>(q), high(16 + first));
                store(&mut w[8 * h..], scaled(_mm256_sub_epi32(lo, sixteen), d));
                store(
                    &mut w[16 + 8 * h..],
                    scaled(_mm256_sub_epi32(hi, sixteen), d),
                );
            }
        }
    }
}

/// `Q8_0`: scale `d`, 32 signed bytes: `q · d`.
struct Q8_0;

impl Format for Q8_0 {
    const SIZE: usize = 34;
    const BLOCK: usize = 32;

    #[inline(always)]
    fn decode(b: &[u8], w: &mut [f32]) {
        let (b, w): (&[u8; 34], &mut [f32; 32]) = (b.try_into().unwrap(), w.try_into().unwrap());
        let d = f16_at(&b[0..2]);
        for (w, &q) in w.iter_mut().zip(&b[2..34]) {
            *w = q as i8 as f32 * d;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]) {
        // SAFETY: the caller runs under AVX2, FMA and F16C (this method's contract).
        unsafe {
            let d = h16(&b[0..2]);
            for g in 0..4 {
                store(&mut w[8 * g..], scaled(i8x8(&b[2 + 8 * g..]), d));
            }
        }
    }
}

/// The 6-bit scale and minimum of sub-block `j` of a `Q4_K` block.
#[inline(always)]
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0x0F) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// `Q4_K`: scales `d`, `dmin`, eight 6-bit (scale, min) pairs, 256 nibbles: per 32 values
/// `(d · sc) · q − dmin · min`.
struct Q4K;

impl Format for Q4K {
    const SIZE: usize = 144;
    const BLOCK: usize = 256;

    #[inline(always)]
    fn decode(b: &[u8], w: &mut [f32]) {
        let (b, w): (&[u8; 144], &mut [f32; 256]) = (b.try_into().unwrap(), w.try_into().unwrap());
        let (d, dmin) = (f16_at(&b[0..2]), f16_at(&b[2..4]));
        let scales = &b[4..16];
        for (c, (q, w)) in b[16..144]
            .chunks_exact(32)
            .zip(w.chunks_exact_mut(64))
            .enumerate()
        {
            let (sc, m) = scale_min_k4(2 * c, scales);
            let (d1, m1) = (d * sc as f32, dmin * m as f32);
            let (sc, m) = scale_min_k4(2 * c + 1, scales);
            let (d2, m2) = (d * sc as f32, dmin * m as f32);
            let (lo, hi) = w.split_at_mut(32);
            for ((lo, hi), &q) in lo.iter_mut().zip(hi).zip(q) {
                *lo = d1 * (q & 0x0F) as f32 - m1;
                *hi = d2 * (q >> 4) as f32 - m2;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]) {
        // SAFETY: the caller runs under AVX2, FMA and F16C (this method's contract).
        unsafe {
            let (d, dmin) = (h16(&b[0..2]), h16(&b[2..4]));
            let (scales, low) = (&b[4..16], _mm256_set1_epi32(0x0F));
            for c in 0..4 {
                let (sc, m) = scale_min_k4(2 * c, scales);
                let (d1, m1) = (d * sc as f32, _mm256_set1_ps(dmin * m as f32));
                let (sc, m) = scale_min_k4(2 * c + 1, scales);
                let (d2, m2) = (d * sc as f32, _mm256_set1_ps(dmin * m as f32));
                for g in 0..4 {
                    let q = u8x8(&b[16 + 32 * c + 8 * g..]);
                    let lo = _mm256_and_si256(q, low);
                    let hi = _mm256_srli_epi32::<4>(q);
                    store(&mut w[64 * c + 8 * g..], _mm256_sub_ps(scaled(lo, d1), m1));
                    store(
                        &mut w[64 * c + 32 + 8 * g..],
                        _mm256_sub_ps(scaled(hi, d2), m2),
                    );
                }
            }
        }
    }
}

/// `Q6_K`: 256 low nibbles, 256 high bit pairs, sixteen signed 8-bit scales, scale `d`: per 16
/// values `(d · sc) · (q − 32)`.
struct Q6K;

impl Format for Q6K {
    const SIZE: usize = 210;
    const BLOCK: usize = 256;

    #[inline(always)]
    fn decode(b: &[u8], w: &mut [f32]) {
        let (b, w): (&[u8; 210], &mut [f32; 256]) = (b.try_into().unwrap(), w.try_into().unwrap());
        let (ql, qh, sc) = (&b[0..128], &b[128..192], &b[192..208]);
        let d = f16_at(&b[208..210]);
        for h in 0..2 {
            let (ql, qh, sc) = (&ql[64 * h..], &qh[32 * h..], &sc[8 * h..]);
            let w = &mut w[128 * h..128 * (h + 1)];
            for l in 0..32 {
                let is = l / 16;
                let q1 = ((ql[l] & 0x0F) | ((qh[l] & 3) << 4)) as i8 - 32;
                let q2 = ((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
                let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
                let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
                w[l] = d * sc[is] as i8 as f32 * q1 as f32;
                w[l + 32] = d * sc[is + 2] as i8 as f32 * q2 as f32;
                w[l + 64] = d * sc[is + 4] as i8 as f32 * q3 as f32;
                w[l + 96] = d * sc[is + 6] as i8 as f32 * q4 as f32;
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn decode_avx2(b: &[u8], w: &mut [f32]) {
        // SAFETY: the caller runs under AVX2, FMA and F16C (this method's contract).
        unsafe {
            let d = h16(&b[208..210]);
            let (low, three, bias) = (
                _mm256_set1_epi32(0x0F),
                _mm256_set1_epi32(3),
                _mm256_set1_epi32(32),
            );
            // `((qh >> shift) & 3) << 4`
            let bits = |qh: __m256i, shift: __m128i| {
                _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srl_epi32(qh, shift), three))
            };
            for h in 0..2 {
                let (ql, qh, sc) = (&b[64 * h..], &b[128 + 32 * h..], &b[192 + 8 * h..]);
                let w = &mut w[128 * h..];
                for g in 0..4 {
                    let l = 8 * g;
                    let is = g / 2;
                    let (a, c, hh) = (u8x8(&ql[l..]), u8x8(&ql[l + 32..]), u8x8(&qh[l..]));
                    let q1 =
                        _mm256_or_si256(_mm256_and_si256(a, low), bits(hh, _mm_cvtsi32_si128(0)));
                    let q2 =
                        _mm256_or_si256(_mm256_and_si256(c, low), bits(hh, _mm_cvtsi32_si128(2)));
                    let q3 =
                        _mm256_or_si256(_mm256_srli_epi32::<4>(a), bits(hh, _mm_cvtsi32_si128(4)));
                    let q4 =
                        _mm256_or_si256(_mm256_srli_epi32::<4>(c), bits(hh, _mm_cvtsi32_si128(6)));
                    let scale = |s: u8| d * s as i8 as f32;
                    store(
                        &mut w[l..],
                        scaled(_mm256_sub_epi32(q1, bias), scale(sc[is])),
                    );
                    store(
                        &mut w[l + 32..],
                        scaled(_mm256_sub_epi32(q2, bias), scale(sc[is + 2])),
                    );
                    store(
                        &mut w[l + 64..],
                        scaled(_mm256_sub_epi32(q3, bias), scale(sc[is + 4])),
                    );
                    store(
                        &mut w[l + 96..],
                        scaled(_mm256_sub_epi32(q4, bias), scale(sc[is + 6])),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};
    use half::f16;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use strata_core::gguf::GgmlType;
    use strata_core::packed::PackedRows;

    use super::{Format, MAX_ROWS, Q4_0, Q4_1, Q4K, Q5_0, Q6K, Q8_0, supports};

    const FORMATS: [(GgmlType, usize, usize); 6] = [
        (GgmlType::Q4_0, 18, 32),
        (GgmlType::Q4_1, 20, 32),
        (GgmlType::Q5_0, 22, 32),
        (GgmlType::Q8_0, 34, 32),
        (GgmlType::Q4K, 144, 256),
        (GgmlType::Q6K, 210, 256),
    ];

    /// Random blocks whose f16 scales are finite (random bytes everywhere else).
    fn random_rows(
        format: GgmlType,
        size: usize,
        block: usize,
        rows: usize,
        cols: usize,
        seed: u64,
    ) -> PackedRows {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let blocks = rows * cols / block;
        let mut bytes = vec![0u8; blocks * size];
        rng.fill(&mut bytes[..]);
        // Byte offsets of the f16 fields in a block.
        let halves: &[usize] = match format {
            GgmlType::Q4_1 | GgmlType::Q4K => &[0, 2],
            GgmlType::Q6K => &[208],
            _ => &[0],
        };
        for b in bytes.chunks_exact_mut(size) {
            for &o in halves {
                let v = f16::from_f32(rng.random_range(-0.1f32..0.1));
                b[o..o + 2].copy_from_slice(&v.to_le_bytes());
            }
        }
        PackedRows::owned(format, rows, cols, bytes).unwrap()
    }

    fn flex() -> Device {
        strata_core::Backend::Flex.device()
    }

    /// Every format: the product equals the one over candle's dequantised values (in f64),
    /// for one row and for several, with and without a bias, across two parts.
    #[test]
    fn packed_products_equal_the_dequantised_weights() {
        let device = flex();
        for (seed, &(format, size, block)) in FORMATS.iter().enumerate() {
            assert!(supports(format));
            let k = 2 * 256;
            let parts = [
                random_rows(format, size, block, 70, k, seed as u64),
                random_rows(format, size, block, 3, k, 100 + seed as u64),
            ];
            let n = 73;
            let w: Vec<f32> = parts.iter().flat_map(|p| p.dequantize().unwrap()).collect();
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            for m in [1, 3, MAX_ROWS] {
                let x: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
                let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
                for (with_bias, simd) in
                    [(false, false), (true, false), (false, true), (true, true)]
                {
                    if simd && !super::avx2_fma() {
                        continue;
                    }
                    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
                    let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [n]), &device);
                    let y = super::product(xt, &parts, with_bias.then_some(&bt), simd);
                    assert_eq!(y.dims(), [m, n]);
                    let y = y.try_into_vec_as::<f32>().unwrap();
                    for r in 0..m {
                        for c in 0..n {
                            let dot: f64 = (0..k)
                                .map(|i| f64::from(w[c * k + i]) * f64::from(x[r * k + i]))
                                .sum::<f64>()
                                + if with_bias { f64::from(bias[c]) } else { 0.0 };
                            let scale: f64 = (0..k)
                                .map(|i| (f64::from(w[c * k + i]) * f64::from(x[r * k + i])).abs())
                                .sum::<f64>()
                                .max(1e-3);
                            let got = f64::from(y[r * n + c]);
                            assert!(
                                (got - dot).abs() <= 1e-5 * scale,
                                "{format} m={m} simd={simd} row {r} col {c}: {got} vs {dot}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// The decoded blocks are bit for bit candle's dequantised values (the f32 copy's).
    #[test]
    fn decoded_blocks_are_candles_values() {
        for (seed, &(format, size, block)) in FORMATS.iter().enumerate() {
            let p = random_rows(format, size, block, 4, 512, 40 + seed as u64);
            let expected = p.dequantize().unwrap();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            let decoded = |decode: fn(&[u8], &mut [f32])| {
                let mut got = vec![0.0f32; expected.len()];
                for (b, w) in p
                    .bytes()
                    .chunks_exact(size)
                    .zip(got.chunks_exact_mut(block))
                {
                    decode(b, w);
                }
                got
            };
            let portable: fn(&[u8], &mut [f32]) = match format {
                GgmlType::Q4_0 => Q4_0::decode,
                GgmlType::Q4_1 => Q4_1::decode,
                GgmlType::Q5_0 => Q5_0::decode,
                GgmlType::Q8_0 => Q8_0::decode,
                GgmlType::Q4K => Q4K::decode,
                GgmlType::Q6K => Q6K::decode,
                _ => unreachable!(),
            };
            assert_eq!(
                bits(&decoded(portable)),
                bits(&expected),
                "{format}: portable"
            );
            #[cfg(target_arch = "x86_64")]
            if super::avx2_fma() {
                // SAFETY (each arm): the CPU has AVX2, FMA and F16C (checked above).
                let simd: fn(&[u8], &mut [f32]) = match format {
                    GgmlType::Q4_0 => |b, w| unsafe { Q4_0::decode_avx2(b, w) },
                    GgmlType::Q4_1 => |b, w| unsafe { Q4_1::decode_avx2(b, w) },
                    GgmlType::Q5_0 => |b, w| unsafe { Q5_0::decode_avx2(b, w) },
                    GgmlType::Q8_0 => |b, w| unsafe { Q8_0::decode_avx2(b, w) },
                    GgmlType::Q4K => |b, w| unsafe { Q4K::decode_avx2(b, w) },
                    GgmlType::Q6K => |b, w| unsafe { Q6K::decode_avx2(b, w) },
                    _ => unreachable!(),
                };
                assert_eq!(bits(&decoded(simd)), bits(&expected), "{format}: AVX2");
            }
        }
    }
}

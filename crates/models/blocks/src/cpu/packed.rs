//! Products of a few rows with a block-quantised weight ([`PackedRows`]), read in place.
//!
//! A decoding step multiplies one row (or one per continuation) by every weight matrix, so it
//! is bound by memory bandwidth: streaming an f32 weight costs 32 bits per multiply–add, its
//! GGUF blocks 4.5–8.5. Each block is decoded in registers, a vector of 8 (AVX2) or 16
//! (AVX-512) values at a time, with exactly the arithmetic of candle's dequantisation (which
//! made the f32 copy), and each vector goes straight into the fused multiply–adds of every
//! input row: the weights are the same values and only the order of the sums differs from the
//! f32 product.

use burn::tensor::Tensor;
use half::f16;
use rayon::prelude::*;
use strata_core::gguf::GgmlType;
use strata_core::packed::PackedRows;

use super::{Out, bias_rows, primitive, tensor, values};
#[cfg(target_arch = "x86_64")]
use x86::{Isa, h16};

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

/// The loops a product runs: plain Rust, or the vector kernels of one instruction set.
/// Ordered: a CPU that runs one kernel runs the ones before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Kernel {
    Portable,
    /// AVX2, FMA and F16C: eight lanes.
    Avx2,
    /// AVX-512F besides those: sixteen lanes.
    Avx512,
}

impl Kernel {
    /// The widest kernel this CPU runs.
    fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2")
                && is_x86_feature_detected!("fma")
                && is_x86_feature_detected!("f16c")
            {
                if is_x86_feature_detected!("avx512f") {
                    return Kernel::Avx512;
                }
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }
}

/// `x · wᵀ + bias` for `x` `[m, k]` (`m ≤ MAX_ROWS`) and `w` the `[n, k]` weight as consecutive
/// blocks of output rows (`parts`, each in its own block format).
pub(crate) fn linear(x: Tensor<2>, parts: &[PackedRows], bias: Option<&Tensor<1>>) -> Tensor<2> {
    static KERNEL: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
    product(x, parts, bias, *KERNEL.get_or_init(Kernel::detect))
}

/// [`linear`] with the loops of `kernel` (which this CPU must run).
fn product(
    x: Tensor<2>,
    parts: &[PackedRows],
    bias: Option<&Tensor<1>>,
    kernel: Kernel,
) -> Tensor<2> {
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
        kernel <= Kernel::detect(),
        "packed linear: this CPU does not run the {kernel:?} kernel"
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
            GgmlType::Q4_0 => task.run::<Q4_0>(kernel),
            GgmlType::Q4_1 => task.run::<Q4_1>(kernel),
            GgmlType::Q5_0 => task.run::<Q5_0>(kernel),
            GgmlType::Q8_0 => task.run::<Q8_0>(kernel),
            GgmlType::Q4K => task.run::<Q4K>(kernel),
            GgmlType::Q6K => task.run::<Q6K>(kernel),
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
    /// The task for blocks of format `F` with the loops of `kernel` (which the caller checked
    /// this CPU runs).
    fn run<F: Format>(&self, kernel: Kernel) {
        match kernel {
            Kernel::Portable => self.rows_portable::<F>(),
            // SAFETY: the caller checked that the CPU has AVX2, FMA and F16C.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::rows_avx2::<F>(self) },
            // SAFETY: the caller checked that the CPU has AVX-512F besides those.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86::rows_avx512::<F>(self) },
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("packed linear: vector kernels exist only on x86-64"),
        }
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

    /// The vector operations the kernels are written in, for one instruction set: lanes of f32
    /// (`F`) and of i32 (`I`).
    ///
    /// Every method is `#[inline(always)]` without target features of its own, so that it is
    /// inlined into [`rows_avx2`] or [`rows_avx512`] and compiled with their features there.
    ///
    /// # Safety
    /// Every method needs the CPU features of its instruction set; those taking slices read
    /// `LANES` values (or bytes) from their start.
    pub(super) trait Isa {
        const LANES: usize;
        type F: Copy;
        type I: Copy;
        unsafe fn zero() -> Self::F;
        unsafe fn splat(v: f32) -> Self::F;
        unsafe fn splat_i(v: i32) -> Self::I;
        /// Lanes `first, first + 1, …`.
        unsafe fn iota(first: i32) -> Self::I;
        /// `LANES` values from `x`, which must be readable.
        unsafe fn load(x: *const f32) -> Self::F;
        unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
        unsafe fn add(a: Self::F, b: Self::F) -> Self::F;
        unsafe fn sub(a: Self::F, b: Self::F) -> Self::F;
        unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
        /// The sum of the lanes.
        unsafe fn sum(a: Self::F) -> f32;
        /// `LANES` bytes zero-extended.
        unsafe fn u8s(b: &[u8]) -> Self::I;
        /// `LANES` bytes sign-extended.
        unsafe fn i8s(b: &[u8]) -> Self::I;
        unsafe fn and(a: Self::I, b: Self::I) -> Self::I;
        unsafe fn or(a: Self::I, b: Self::I) -> Self::I;
        unsafe fn sub_i(a: Self::I, b: Self::I) -> Self::I;
        /// Each lane shifted right by `N` bits.
        unsafe fn shr<const N: u32>(a: Self::I) -> Self::I;
        /// Each lane shifted left by `N` bits.
        unsafe fn shl<const N: u32>(a: Self::I) -> Self::I;
        /// Each lane shifted right by the matching lane of `by`.
        unsafe fn shr_by(a: Self::I, by: Self::I) -> Self::I;
        unsafe fn to_f32(a: Self::I) -> Self::F;
        /// Stores the lanes at `w[..LANES]`.
        #[cfg(test)]
        unsafe fn store(w: &mut [f32], v: Self::F);

        /// `q · d`, rounded in f32 as the scalar code rounds it.
        #[inline(always)]
        unsafe fn scaled(q: Self::I, d: f32) -> Self::F {
            // SAFETY: as for every method.
            unsafe { Self::mul(Self::to_f32(q), Self::splat(d)) }
        }
    }

    /// The first sixteen lane indices, for [`Isa::iota`].
    const IOTA: [i32; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];

    /// AVX2 with FMA: eight lanes.
    pub(super) struct Avx2;

    // SAFETY (every unsafe block): the caller runs under AVX2, FMA and F16C, and the slices
    // hold the values read (checked by the conversions to arrays).
    impl Isa for Avx2 {
        const LANES: usize = 8;
        type F = __m256;
        type I = __m256i;
        #[inline(always)]
        unsafe fn zero() -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m256 {
            unsafe { _mm256_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn splat_i(v: i32) -> __m256i {
            unsafe { _mm256_set1_epi32(v) }
        }
        #[inline(always)]
        unsafe fn iota(first: i32) -> __m256i {
            unsafe {
                _mm256_add_epi32(
                    _mm256_set1_epi32(first),
                    _mm256_loadu_si256(IOTA.as_ptr().cast()),
                )
            }
        }
        #[inline(always)]
        unsafe fn load(x: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(x) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m256, b: __m256) -> __m256 {
            unsafe { _mm256_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sum(a: __m256) -> f32 {
            let mut lanes = [0.0f32; 8];
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), a) };
            lanes.iter().sum()
        }
        #[inline(always)]
        unsafe fn u8s(b: &[u8]) -> __m256i {
            let b: &[u8; 8] = b[..8].try_into().expect("eight bytes");
            unsafe { _mm256_cvtepu8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
        }
        #[inline(always)]
        unsafe fn i8s(b: &[u8]) -> __m256i {
            let b: &[u8; 8] = b[..8].try_into().expect("eight bytes");
            unsafe { _mm256_cvtepi8_epi32(_mm_loadl_epi64(b.as_ptr().cast())) }
        }
        #[inline(always)]
        unsafe fn and(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_and_si256(a, b) }
        }
        #[inline(always)]
        unsafe fn or(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_or_si256(a, b) }
        }
        #[inline(always)]
        unsafe fn sub_i(a: __m256i, b: __m256i) -> __m256i {
            unsafe { _mm256_sub_epi32(a, b) }
        }
        #[inline(always)]
        unsafe fn shr<const N: u32>(a: __m256i) -> __m256i {
            unsafe { _mm256_srl_epi32(a, _mm_cvtsi32_si128(N as i32)) }
        }
        #[inline(always)]
        unsafe fn shl<const N: u32>(a: __m256i) -> __m256i {
            unsafe { _mm256_sll_epi32(a, _mm_cvtsi32_si128(N as i32)) }
        }
        #[inline(always)]
        unsafe fn shr_by(a: __m256i, by: __m256i) -> __m256i {
            unsafe { _mm256_srlv_epi32(a, by) }
        }
        #[inline(always)]
        unsafe fn to_f32(a: __m256i) -> __m256 {
            unsafe { _mm256_cvtepi32_ps(a) }
        }
        #[cfg(test)]
        #[inline(always)]
        unsafe fn store(w: &mut [f32], v: __m256) {
            let w: &mut [f32; 8] = (&mut w[..8]).try_into().expect("eight values");
            unsafe { _mm256_storeu_ps(w.as_mut_ptr(), v) }
        }
    }

    /// AVX-512F: sixteen lanes.
    pub(super) struct Avx512;

    // SAFETY (every unsafe block): the caller runs under AVX-512F, AVX2, FMA and F16C, and the
    // slices hold the values read (checked by the conversions to arrays).
    impl Isa for Avx512 {
        const LANES: usize = 16;
        type F = __m512;
        type I = __m512i;
        #[inline(always)]
        unsafe fn zero() -> __m512 {
            unsafe { _mm512_setzero_ps() }
        }
        #[inline(always)]
        unsafe fn splat(v: f32) -> __m512 {
            unsafe { _mm512_set1_ps(v) }
        }
        #[inline(always)]
        unsafe fn splat_i(v: i32) -> __m512i {
            unsafe { _mm512_set1_epi32(v) }
        }
        #[inline(always)]
        unsafe fn iota(first: i32) -> __m512i {
            unsafe {
                _mm512_add_epi32(
                    _mm512_set1_epi32(first),
                    _mm512_loadu_si512(IOTA.as_ptr().cast()),
                )
            }
        }
        #[inline(always)]
        unsafe fn load(x: *const f32) -> __m512 {
            unsafe { _mm512_loadu_ps(x) }
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            unsafe { _mm512_fmadd_ps(a, b, c) }
        }
        #[inline(always)]
        unsafe fn add(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_add_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sub(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_sub_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            unsafe { _mm512_mul_ps(a, b) }
        }
        #[inline(always)]
        unsafe fn sum(a: __m512) -> f32 {
            unsafe { _mm512_reduce_add_ps(a) }
        }
        #[inline(always)]
        unsafe fn u8s(b: &[u8]) -> __m512i {
            let b: &[u8; 16] = b[..16].try_into().expect("sixteen bytes");
            unsafe { _mm512_cvtepu8_epi32(_mm_loadu_si128(b.as_ptr().cast())) }
        }
        #[inline(always)]
        unsafe fn i8s(b: &[u8]) -> __m512i {
            let b: &[u8; 16] = b[..16].try_into().expect("sixteen bytes");
            unsafe { _mm512_cvtepi8_epi32(_mm_loadu_si128(b.as_ptr().cast())) }
        }
        #[inline(always)]
        unsafe fn and(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_and_si512(a, b) }
        }
        #[inline(always)]
        unsafe fn or(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_or_si512(a, b) }
        }
        #[inline(always)]
        unsafe fn sub_i(a: __m512i, b: __m512i) -> __m512i {
            unsafe { _mm512_sub_epi32(a, b) }
        }
        #[inline(always)]
        unsafe fn shr<const N: u32>(a: __m512i) -> __m512i {
            unsafe { _mm512_srli_epi32::<N>(a) }
        }
        #[inline(always)]
        unsafe fn shl<const N: u32>(a: __m512i) -> __m512i {
            unsafe { _mm512_slli_epi32::<N>(a) }
        }
        #[inline(always)]
        unsafe fn shr_by(a: __m512i, by: __m512i) -> __m512i {
            unsafe { _mm512_srlv_epi32(a, by) }
        }
        #[inline(always)]
        unsafe fn to_f32(a: __m512i) -> __m512 {
            unsafe { _mm512_cvtepi32_ps(a) }
        }
        #[cfg(test)]
        #[inline(always)]
        unsafe fn store(w: &mut [f32], v: __m512) {
            let w: &mut [f32; 16] = (&mut w[..16]).try_into().expect("sixteen values");
            unsafe { _mm512_storeu_ps(w.as_mut_ptr(), v) }
        }
    }

    /// [`rows`] with eight lanes.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx2<F: Format>(task: &Task<'_>) {
        // SAFETY: this function's contract.
        unsafe { rows::<Avx2, F>(task) }
    }

    /// [`rows`] with sixteen lanes.
    ///
    /// # Safety
    /// The CPU must have AVX-512F, AVX2, FMA and F16C.
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    pub(super) unsafe fn rows_avx512<F: Format>(task: &Task<'_>) {
        // SAFETY: this function's contract.
        unsafe { rows::<Avx512, F>(task) }
    }

    /// The vector loop: each weight row decoded block by block in registers
    /// ([`Format::decode_simd`]), each vector multiplied into the sums of up to four input
    /// rows at once (a fifth to eighth row decodes the row again, from L1).
    ///
    /// # Safety
    /// The CPU must have the features of `S`.
    #[inline(always)]
    unsafe fn rows<S: Isa, F: Format>(task: &Task<'_>) {
        assert_eq!(
            task.xs.len(),
            task.m * task.w.cols(),
            "one input row per row"
        );
        for i in 0..task.rows {
            let row = task.row(i);
            for first in (0..task.m).step_by(4) {
                // SAFETY: the features of `S` (this function's contract); rows
                // `first..first + M` of `xs` exist (asserted above, `M ≤ m − first`).
                unsafe {
                    match task.m - first {
                        1 => row_dot::<S, F, 1>(task, row, first, i),
                        2 => row_dot::<S, F, 2>(task, row, first, i),
                        3 => row_dot::<S, F, 3>(task, row, first, i),
                        _ => row_dot::<S, F, 4>(task, row, first, i),
                    }
                }
            }
        }
    }

    /// Adds `row · x_r` to output `(r, i)` for the `M` input rows `r = first…`.
    ///
    /// # Safety
    /// The CPU must have the features of `S`; `task.xs` must hold rows `first..first + M`.
    #[inline(always)]
    unsafe fn row_dot<S: Isa, F: Format, const M: usize>(
        task: &Task<'_>,
        row: &[u8],
        first: usize,
        i: usize,
    ) {
        let k = task.w.cols();
        // Independent chains of fused multiply–adds per input row, to hide their latency.
        let chains = 4 / M;
        // SAFETY (every block): the features of `S`; every `x` read lies in rows
        // `first..first + M` of `xs` (`b · BLOCK + j + LANES ≤ k`, the row being `k / BLOCK`
        // whole blocks).
        let mut acc = [unsafe { S::zero() }; 4];
        let x = unsafe { task.xs.as_ptr().add(first * k) };
        for (b, block) in row.chunks_exact(F::SIZE).enumerate() {
            let x = unsafe { x.add(b * F::BLOCK) };
            // Vectors are numbered across blocks, so that blocks of fewer vectors than chains
            // still rotate through every chain.
            let vector = b * F::BLOCK / S::LANES;
            unsafe {
                F::decode_simd::<S>(block, |j, w| {
                    let chain = (vector + j / S::LANES) % chains;
                    for r in 0..M {
                        let a = &mut acc[r * chains + chain];
                        *a = S::fma(w, S::load(x.add(r * k + j)), *a);
                    }
                })
            };
        }
        for r in 0..M {
            let mut v = acc[r * chains];
            for c in 1..chains {
                v = unsafe { S::add(v, acc[r * chains + c]) };
            }
            task.add(first + r, i, unsafe { S::sum(v) });
        }
    }

    /// The f16 in `b[..2]` (little-endian) as f32, by F16C (exact, as every f16 → f32).
    ///
    /// # Safety
    /// The CPU must have F16C.
    #[inline(always)]
    pub(super) unsafe fn h16(b: &[u8]) -> f32 {
        let bits = u16::from_le_bytes([b[0], b[1]]);
        // SAFETY: the caller runs under F16C.
        unsafe { _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(bits)))) }
    }
}

/// A block format: `SIZE` bytes holding `BLOCK` values.
trait Format {
    const SIZE: usize;
    const BLOCK: usize;
    /// Block `b` (`SIZE` bytes) decoded into `w` (`BLOCK` values): candle's arithmetic, value
    /// by value.
    fn decode(b: &[u8], w: &mut [f32]);
    /// [`Self::decode`] a vector at a time, the same operations in each lane: calls
    /// `emit(j, v)` with values `j..j + LANES` of the block for every `j` (a multiple of
    /// `LANES`) once.
    ///
    /// # Safety
    /// The CPU must have the features of `S` and F16C.
    #[cfg(target_arch = "x86_64")]
    unsafe fn decode_simd<S: Isa>(b: &[u8], emit: impl FnMut(usize, S::F));
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
    unsafe fn decode_simd<S: Isa>(b: &[u8], mut emit: impl FnMut(usize, S::F)) {
        // SAFETY: the caller runs under the features of `S` and F16C (this method's contract).
        unsafe {
            let d = h16(&b[0..2]);
            let (low, eight) = (S::splat_i(0x0F), S::splat_i(8));
            for j in (0..16).step_by(S::LANES) {
                let q = S::u8s(&b[2 + j..]);
                emit(j, S::scaled(S::sub_i(S::and(q, low), eight), d));
                emit(16 + j, S::scaled(S::sub_i(S::shr::<4>(q), eight), d));
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
    unsafe fn decode_simd<S: Isa>(b: &[u8], mut emit: impl FnMut(usize, S::F)) {
        // SAFETY: the caller runs under the features of `S` and F16C (this method's contract).
        unsafe {
            let (d, m) = (h16(&b[0..2]), S::splat(h16(&b[2..4])));
            let low = S::splat_i(0x0F);
            for j in (0..16).step_by(S::LANES) {
                let q = S::u8s(&b[4 + j..]);
                emit(j, S::add(S::scaled(S::and(q, low), d), m));
                emit(16 + j, S::add(S::scaled(S::shr::<4>(q), d), m));
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
    unsafe fn decode_simd<S: Isa>(b: &[u8], mut emit: impl FnMut(usize, S::F)) {
        // SAFETY: the caller runs under the features of `S` and F16C (this method's contract).
        unsafe {
            let d = h16(&b[0..2]);
            // Value `v` takes bit `v` of `qh` as its fifth bit.
            let qh = S::splat_i(u32::from_le_bytes([b[2], b[3], b[4], b[5]]) as i32);
            let (low, one, sixteen) = (S::splat_i(0x0F), S::splat_i(1), S::splat_i(16));
            let high =
                |first: usize| S::shl::<4>(S::and(S::shr_by(qh, S::iota(first as i32)), one));
            for j in (0..16).step_by(S::LANES) {
                let q = S::u8s(&b[6 + j..]);
                let lo = S::or(S::and(q, low), high(j));
                let hi = S::or(S::shr::<4>(q), high(16 + j));
                emit(j, S::scaled(S::sub_i(lo, sixteen), d));
                emit(16 + j, S::scaled(S::sub_i(hi, sixteen), d));
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
    unsafe fn decode_simd<S: Isa>(b: &[u8], mut emit: impl FnMut(usize, S::F)) {
        // SAFETY: the caller runs under the features of `S` and F16C (this method's contract).
        unsafe {
            let d = h16(&b[0..2]);
            for j in (0..32).step_by(S::LANES) {
                emit(j, S::scaled(S::i8s(&b[2 + j..]), d));
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
    unsafe fn decode_simd<S: Isa>(b: &[u8], mut emit: impl FnMut(usize, S::F)) {
        // SAFETY: the caller runs under the features of `S` and F16C (this method's contract).
        unsafe {
            let (d, dmin) = (h16(&b[0..2]), h16(&b[2..4]));
            let (scales, low) = (&b[4..16], S::splat_i(0x0F));
            for c in 0..4 {
                let (sc, m) = scale_min_k4(2 * c, scales);
                let (d1, m1) = (d * sc as f32, S::splat(dmin * m as f32));
                let (sc, m) = scale_min_k4(2 * c + 1, scales);
                let (d2, m2) = (d * sc as f32, S::splat(dmin * m as f32));
                for j in (0..32).step_by(S::LANES) {
                    let q = S::u8s(&b[16 + 32 * c + j..]);
                    emit(64 * c + j, S::sub(S::scaled(S::and(q, low), d1), m1));
                    emit(64 * c + 32 + j, S::sub(S::scaled(S::shr::<4>(q), d2), m2));
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
    unsafe fn decode_simd<S: Isa>(b: &[u8], mut emit: impl FnMut(usize, S::F)) {
        // SAFETY: the caller runs under the features of `S` and F16C (this method's contract).
        unsafe {
            let d = h16(&b[208..210]);
            let (low, three, bias) = (S::splat_i(0x0F), S::splat_i(3), S::splat_i(32));
            // `((qh >> shift) & 3) << 4`, for the shifted `qh`.
            let bits = |qh: S::I| S::shl::<4>(S::and(qh, three));
            for h in 0..2 {
                let (ql, qh, sc) = (&b[64 * h..], &b[128 + 32 * h..], &b[192 + 8 * h..]);
                for l in (0..32).step_by(S::LANES) {
                    let is = l / 16;
                    let (a, c, hh) = (S::u8s(&ql[l..]), S::u8s(&ql[l + 32..]), S::u8s(&qh[l..]));
                    let q1 = S::or(S::and(a, low), bits(hh));
                    let q2 = S::or(S::and(c, low), bits(S::shr::<2>(hh)));
                    let q3 = S::or(S::shr::<4>(a), bits(S::shr::<4>(hh)));
                    let q4 = S::or(S::shr::<4>(c), bits(S::shr::<6>(hh)));
                    let scale = |s: u8| d * s as i8 as f32;
                    let at = 128 * h + l;
                    emit(at, S::scaled(S::sub_i(q1, bias), scale(sc[is])));
                    emit(at + 32, S::scaled(S::sub_i(q2, bias), scale(sc[is + 2])));
                    emit(at + 64, S::scaled(S::sub_i(q3, bias), scale(sc[is + 4])));
                    emit(at + 96, S::scaled(S::sub_i(q4, bias), scale(sc[is + 6])));
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

    use super::{Format, Kernel, MAX_ROWS, Q4_0, Q4_1, Q4K, Q5_0, Q6K, Q8_0, supports};

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
                let kernels = [Kernel::Portable, Kernel::Avx2, Kernel::Avx512];
                for (with_bias, kernel) in kernels
                    .into_iter()
                    .filter(|&kernel| kernel <= Kernel::detect())
                    .flat_map(|kernel| [(false, kernel), (true, kernel)])
                {
                    let xt = Tensor::<2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
                    let bt = Tensor::<1>::from_data(TensorData::new(bias.clone(), [n]), &device);
                    let y = super::product(xt, &parts, with_bias.then_some(&bt), kernel);
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
                                "{format} m={m} {kernel:?} row {r} col {c}: {got} vs {dot}"
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
            for kernel in [Kernel::Avx2, Kernel::Avx512] {
                if kernel > Kernel::detect() {
                    continue;
                }
                let simd: fn(&[u8], &mut [f32]) = match (format, kernel) {
                    (GgmlType::Q4_0, Kernel::Avx2) => simd::avx2::<Q4_0>,
                    (GgmlType::Q4_1, Kernel::Avx2) => simd::avx2::<Q4_1>,
                    (GgmlType::Q5_0, Kernel::Avx2) => simd::avx2::<Q5_0>,
                    (GgmlType::Q8_0, Kernel::Avx2) => simd::avx2::<Q8_0>,
                    (GgmlType::Q4K, Kernel::Avx2) => simd::avx2::<Q4K>,
                    (GgmlType::Q6K, Kernel::Avx2) => simd::avx2::<Q6K>,
                    (GgmlType::Q4_0, _) => simd::avx512::<Q4_0>,
                    (GgmlType::Q4_1, _) => simd::avx512::<Q4_1>,
                    (GgmlType::Q5_0, _) => simd::avx512::<Q5_0>,
                    (GgmlType::Q8_0, _) => simd::avx512::<Q8_0>,
                    (GgmlType::Q4K, _) => simd::avx512::<Q4K>,
                    (GgmlType::Q6K, _) => simd::avx512::<Q6K>,
                    _ => unreachable!(),
                };
                assert_eq!(
                    bits(&decoded(simd)),
                    bits(&expected),
                    "{format}: {kernel:?}"
                );
            }
        }
    }

    /// [`Format::decode_simd`] into a slice, for comparing with [`Format::decode`].
    #[cfg(target_arch = "x86_64")]
    mod simd {
        use super::super::Format;
        use super::super::x86::{Avx2, Avx512, Isa};

        /// Safe to call where [`super::Kernel::detect`] gives `Avx2` or better.
        pub(super) fn avx2<F: Format>(b: &[u8], w: &mut [f32]) {
            #[target_feature(enable = "avx2,fma,f16c")]
            fn run<F: Format>(b: &[u8], w: &mut [f32]) {
                // SAFETY: the features are enabled; `emit`'s offsets lie in the block.
                unsafe { F::decode_simd::<Avx2>(b, |j, v| Avx2::store(&mut w[j..], v)) }
            }
            assert!(super::Kernel::detect() >= super::Kernel::Avx2);
            // SAFETY: the CPU has the features (asserted above).
            unsafe { run::<F>(b, w) }
        }

        /// Safe to call where [`super::Kernel::detect`] gives `Avx512`.
        pub(super) fn avx512<F: Format>(b: &[u8], w: &mut [f32]) {
            #[target_feature(enable = "avx512f,avx2,fma,f16c")]
            fn run<F: Format>(b: &[u8], w: &mut [f32]) {
                // SAFETY: the features are enabled; `emit`'s offsets lie in the block.
                unsafe { F::decode_simd::<Avx512>(b, |j, v| Avx512::store(&mut w[j..], v)) }
            }
            assert_eq!(super::Kernel::detect(), super::Kernel::Avx512);
            // SAFETY: the CPU has the features (asserted above).
            unsafe { run::<F>(b, w) }
        }
    }
}

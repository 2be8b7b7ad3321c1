//! Fused CPU kernels for burn's flex backend: products written by gemm straight into their
//! output ([`linear`]), and elementwise work in one pass over the data split across the rayon
//! pool, where the generic path runs several single-threaded ops (each a fresh buffer). Each
//! kernel computes exactly the formula of the generic path it replaces, in f32; the blocks call
//! them only for `f32` tensors on flex ([`flex_f32`]), and the generic path
//! stays the reference every other backend runs (the blocks' unit tests compare both).
//!
//! The inner loops are written for auto-vectorisation and run under [`pulp::Arch::dispatch`],
//! which compiles them for AVX2 + FMA as well as the baseline and picks one at run time.

use std::mem::MaybeUninit;

use burn::tensor::{DType, Tensor, TensorData};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use crate::mlp::ActFn;

pub(crate) mod attention;
pub(crate) mod packed;

/// Elements below which a kernel runs on the calling thread (a decoding step's rows): handing
/// such work to the pool costs more than it saves.
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// Whether the fused kernels take `t`: an `f32` tensor on flex.
pub(crate) fn flex_f32<const D: usize>(t: &Tensor<D>) -> bool {
    crate::on_flex(&t.device()) && t.dtype() == DType::F32
}

fn primitive<const D: usize>(t: Tensor<D>) -> FlexTensor {
    t.try_into_primitive::<Flex>()
        .expect("cpu kernels run on flex tensors only (checked by `flex_f32`)")
}

/// A small operand (weights, bias, rotary tables) as its own flex tensor, contiguous; read it
/// with [`values`].
fn dense<const D: usize>(t: &Tensor<D>) -> FlexTensor {
    primitive(t.clone()).to_contiguous()
}

/// The values of a contiguous flex tensor (its own part of a shared buffer).
fn values(t: &FlexTensor) -> &[f32] {
    t.as_slice::<f32>().expect("a contiguous f32 tensor")
}

fn tensor<const D: usize>(values: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_primitive::<Flex>(FlexTensor::from_data(TensorData::new(values, shape)))
}

/// A flex tensor read as rows along its last axis, wherever the rows lie in its buffer (views
/// from `narrow`, `reshape` and `swap_dims` are read in place; only a last axis that is not
/// unit-stride is copied first).
struct Rows {
    t: FlexTensor,
    /// Leading dims and their strides, outermost first.
    lead: Vec<(usize, usize)>,
    offset: usize,
    width: usize,
}

impl Rows {
    fn new(t: FlexTensor) -> Self {
        let layout = t.layout();
        let dims = layout.shape().to_vec();
        let strides = layout.strides();
        let width = *dims.last().expect("cpu kernels take tensors of rank ≥ 1");
        let unit_inner = width <= 1 || strides[dims.len() - 1] == 1;
        if !unit_inner || strides.iter().any(|&s| s < 0) {
            return Self::new(t.to_contiguous());
        }
        let lead = dims[..dims.len() - 1]
            .iter()
            .zip(strides)
            .map(|(&d, &s)| (d, s as usize))
            .collect();
        let offset = layout.start_offset();
        Self {
            t,
            lead,
            offset,
            width,
        }
    }

    fn count(&self) -> usize {
        self.lead.iter().map(|&(d, _)| d).product()
    }

    /// Row `r` (row-major order over the leading dims).
    #[inline(always)]
    fn row(&self, mut r: usize) -> &[f32] {
        let mut start = self.offset;
        for &(d, s) in self.lead.iter().rev() {
            start += (r % d) * s;
            r /= d;
        }
        &self.t.storage::<f32>()[start..start + self.width]
    }
}

/// `out` (rows of `width`, row-major) updated row by row by `f(row, out_row)`, in blocks of
/// rows across the pool when there is enough work. `f` is to be `#[inline(always)]`, so that it
/// is compiled inside the dispatched instruction set.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    in_blocks(out, width, |first, block| {
        run_borrowed_rows(first, block, width, &f)
    });
}

/// A new `rows × width` buffer filled by `f` as in [`for_rows`]. Each block of rows is zeroed
/// by the thread that fills it, just before (no serial pass over the whole buffer first).
fn fill_rows(rows: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let n = rows * width;
    let mut out = Vec::with_capacity(n);
    in_blocks(&mut out.spare_capacity_mut()[..n], width, |first, block| {
        block.fill(MaybeUninit::new(0.0));
        // SAFETY: every element of `block` was just initialised.
        let block = unsafe { &mut *(block as *mut [MaybeUninit<f32>] as *mut [f32]) };
        run_borrowed_rows(first, block, width, &f);
    });
    // SAFETY: the blocks cover all `n` elements, each initialised above.
    unsafe { out.set_len(n) };
    out
}

/// `out` split into blocks of whole rows, `g(first_row, block)` on each, across the pool when
/// there is enough work (on the calling thread otherwise).
fn in_blocks<T: Send>(out: &mut [T], width: usize, g: impl Fn(usize, &mut [T]) + Sync) {
    if width == 0 {
        return;
    }
    let rows = out.len() / width;
    if out.len() < PARALLEL_ELEMENTS || rows == 1 {
        g(0, out);
    } else {
        let per_block = rows.div_ceil(4 * rayon::current_num_threads()).max(1);
        out.par_chunks_mut(per_block * width)
            .enumerate()
            .for_each(|(b, block)| g(b * per_block, block));
    }
}

/// [`run_rows`] with a borrowed `f`, called directly from an `#[inline(always)]` closure: handed
/// over as `&F`, `f` would be called through `Fn`'s shim for references, which is not inlined
/// into the dispatched code (it then runs as baseline SSE2 code).
fn run_borrowed_rows(
    first: usize,
    block: &mut [f32],
    width: usize,
    f: &impl Fn(usize, &mut [f32]),
) {
    run_rows(
        first,
        block,
        width,
        #[inline(always)]
        |i, row| (*f)(i, row),
    )
}

/// `f` on the rows of one block, under the instruction set [`pulp`] picks.
fn run_rows(first: usize, block: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32])) {
    pulp::Arch::new().dispatch(RowBlock {
        first,
        block,
        width,
        f: &f,
    })
}

/// Rows `first…` of an output block, filled by `f` under the instruction set [`pulp`] picked
/// (a struct rather than a closure, so that `f` is inlined into the dispatched code).
struct RowBlock<'a, F> {
    first: usize,
    block: &'a mut [f32],
    width: usize,
    f: &'a F,
}

impl<F: Fn(usize, &mut [f32])> pulp::WithSimd for RowBlock<'_, F> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _: S) {
        for (i, row) in self.block.chunks_exact_mut(self.width).enumerate() {
            (self.f)(self.first + i, row);
        }
    }
}

/// Multiply–adds from which burn-flex hands a product to gemm's thread pool (its
/// `PARALLEL_THRESHOLD`, 192³); below it, and for single rows (which gemm runs on one thread
/// whatever their size), [`linear`] splits the output columns across the pool itself.
const GEMM_PARALLEL_MACS: usize = 192 * 192 * 192;

/// Fewest output columns per block worth a thread of their own.
const MIN_SPLIT_COLUMNS: usize = 128;

/// Column blocks per thread of a split product (measured: four blocks on two threads stream a
/// weight faster than two).
const BLOCKS_PER_THREAD: usize = 2;

/// The output pointer shared by the column blocks of one product, each writing its own columns.
#[derive(Clone, Copy)]
struct Out(*mut f32);
// SAFETY: the blocks of `linear` write disjoint columns of the buffer, which outlives them.
unsafe impl Send for Out {}
unsafe impl Sync for Out {}

impl Out {
    /// The pointer (a method, so that closures capture the `Sync` wrapper, not its field).
    fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `x · wᵀ + bias` for `x` `[m, k]` and `w` stored `[n, k]` (HF's `nn.Linear` layout), one gemm
/// call writing straight into the output: no zeroed buffer first, the bias as the output's
/// initial value, and a product gemm would run on one thread split by output columns across the
/// pool (blocks write their columns in place; nothing is concatenated).
pub(crate) fn linear(x: Tensor<2>, w: &Tensor<2>, bias: Option<&Tensor<1>>) -> Tensor<2> {
    let [m, k] = x.dims();
    let [n, wk] = w.dims();
    assert_eq!(k, wk, "linear: input width must equal the weight's");
    let (x, w) = (primitive(x).to_contiguous(), dense(w));
    let (xs, ws) = (values(&x), values(&w));
    let mut out = bias_rows(bias, m, n).unwrap_or_else(|| Vec::with_capacity(m * n));
    if m * n == 0 || k == 0 {
        // An empty product: the bias alone (or zeros).
        out.resize(m * n, 0.0);
        return tensor(out, [m, n]);
    }
    let read_dst = bias.is_some();
    let dst = Out(out.as_mut_ptr());
    let product = |first: usize, cols: usize, parallelism: gemm::Parallelism| {
        // SAFETY: `dst` has room for `m × n` values (capacity, or the bias rows), row stride
        // `n`; columns `first..first + cols` are in bounds of it and of `w`'s rows (`n × k`),
        // and `xs` holds `m × k`. gemm writes every output of the block and reads the output
        // only when `read_dst` (then initialised with the bias). Blocks write disjoint columns.
        unsafe {
            gemm::gemm(
                m,
                cols,
                k,
                dst.ptr().add(first),
                1,
                n as isize,
                read_dst,
                xs.as_ptr(),
                1,
                k as isize,
                ws.as_ptr().add(first * k),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                parallelism,
            );
        }
    };
    let blocks = (rayon::current_num_threads() * BLOCKS_PER_THREAD).min(n / MIN_SPLIT_COLUMNS);
    if m > 1 && m * k * n >= GEMM_PARALLEL_MACS {
        product(0, n, gemm::Parallelism::Rayon(0));
    } else if blocks > 1 {
        let width = n.div_ceil(blocks);
        (0..n.div_ceil(width)).into_par_iter().for_each(|c| {
            let first = c * width;
            product(first, width.min(n - first), gemm::Parallelism::None);
        });
    } else {
        product(0, n, gemm::Parallelism::None);
    }
    if !read_dst {
        // SAFETY: gemm wrote every one of the `m × n` outputs (the blocks cover all columns).
        unsafe { out.set_len(m * n) };
    }
    tensor(out, [m, n])
}

/// `m` rows of the `n` biases (a product's initial output), when there is a bias.
fn bias_rows(bias: Option<&Tensor<1>>, m: usize, n: usize) -> Option<Vec<f32>> {
    bias.map(|b| {
        let b = dense(b);
        let b = values(&b);
        assert_eq!(
            b.len(),
            n,
            "linear: bias length must equal the output width"
        );
        b.repeat(m)
    })
}

/// `x + branch` (the residual stream), one pass across the pool, in place in `branch`'s buffer
/// when nothing else holds it.
pub(crate) fn add<const D: usize>(x: Tensor<D>, branch: Tensor<D>) -> Tensor<D> {
    let shape = x.dims();
    assert_eq!(shape, branch.dims(), "add: shapes differ");
    let x = Rows::new(primitive(x));
    let mut b = primitive(branch);
    if b.is_contiguous() && b.layout().start_offset() == 0 {
        let width = x.width;
        let n = x.count() * width;
        if let Some(out) = b.try_storage_mut::<f32>() {
            for_rows(
                &mut out[..n],
                width,
                #[inline(always)]
                |r, out| {
                    for (o, &u) in out.iter_mut().zip(x.row(r)) {
                        *o += u;
                    }
                },
            );
            return Tensor::from_primitive::<Flex>(b);
        }
    }
    let b = Rows::new(b);
    let out = fill_rows(
        x.count(),
        x.width,
        #[inline(always)]
        |r, out| {
            for ((o, &u), &v) in out.iter_mut().zip(x.row(r)).zip(b.row(r)) {
                *o = u + v;
            }
        },
    );
    tensor(out, shape)
}

/// HF's `LlamaRMSNorm` over the last axis: `x / sqrt(mean(x²) + eps) · w`, the mean in f32.
pub(crate) fn rms_norm<const D: usize>(x: Tensor<D>, weight: &Tensor<1>, eps: f64) -> Tensor<D> {
    let shape = x.dims();
    let rows = Rows::new(primitive(x));
    let w = dense(weight);
    let w = values(&w);
    let width = rows.width;
    assert_eq!(
        w.len(),
        width,
        "rms_norm: weight length must equal the last axis"
    );
    let eps = eps as f32;
    let out = fill_rows(
        rows.count(),
        width,
        #[inline(always)]
        |r, out| {
            let x = rows.row(r);
            let mean_sq = sum_squares(x) / width as f32;
            let inv = (mean_sq + eps).sqrt().recip();
            for ((o, &v), &g) in out.iter_mut().zip(x).zip(w) {
                *o = v * inv * g;
            }
        },
    );
    tensor(out, shape)
}

/// Σ x² in eight interleaved partial sums (a fixed order, vectorisable).
#[inline(always)]
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += v * v;
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|v| v * v).sum();
    acc.iter().sum::<f32>() + tail
}

/// `act(gate) · up` for `gate_up` = `[…, gate | up]` (each `d_ff` wide) → `[…, d_ff]`.
pub(crate) fn gated<const D: usize>(gate_up: Tensor<D>, d_ff: usize, act: ActFn) -> Tensor<D> {
    match act {
        ActFn::Silu => gated_by(gate_up, d_ff, silu),
        ActFn::Gelu => gated_by(gate_up, d_ff, gelu),
        ActFn::GeluTanh => gated_by(gate_up, d_ff, gelu_tanh),
        ActFn::Relu => gated_by(gate_up, d_ff, relu),
    }
}

fn gated_by<const D: usize>(
    gate_up: Tensor<D>,
    d_ff: usize,
    act: impl Fn(f32) -> f32 + Sync,
) -> Tensor<D> {
    let mut shape = gate_up.dims();
    let rows = Rows::new(primitive(gate_up));
    assert_eq!(rows.width, 2 * d_ff, "gated: last axis must be gate | up");
    shape[D - 1] = d_ff;
    let out = fill_rows(
        rows.count(),
        d_ff,
        #[inline(always)]
        |r, out| {
            let (gate, up) = rows.row(r).split_at(d_ff);
            for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
                *o = act(g) * u;
            }
        },
    );
    tensor(out, shape)
}

/// `act(x)` elementwise.
pub(crate) fn activation<const D: usize>(x: Tensor<D>, act: ActFn) -> Tensor<D> {
    match act {
        ActFn::Silu => activation_by(x, silu),
        ActFn::Gelu => activation_by(x, gelu),
        ActFn::GeluTanh => activation_by(x, gelu_tanh),
        ActFn::Relu => activation_by(x, relu),
    }
}

fn activation_by<const D: usize>(x: Tensor<D>, act: impl Fn(f32) -> f32 + Sync) -> Tensor<D> {
    let shape = x.dims();
    let rows = Rows::new(primitive(x));
    let out = fill_rows(
        rows.count(),
        rows.width,
        #[inline(always)]
        |r, out| {
            for (o, &v) in out.iter_mut().zip(rows.row(r)) {
                *o = act(v);
            }
        },
    );
    tensor(out, shape)
}

// The activations as burn computes them.

/// `silu(x) = x · sigmoid(x)`.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x / (1.0 + exp(-x))
}

/// Erf GELU, `0.5 x (1 + erf(x / √2))`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + burn_flex::ops::unary::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Tanh GELU, `0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))`, with `0.5 (1 + tanh z)` written as
/// `sigmoid(2z)`: no cancellation where `tanh z` is near −1.
#[inline(always)]
fn gelu_tanh(x: f32) -> f32 {
    let inner = 0.797_884_6 * (x + 0.044_715 * x * x * x);
    x / (1.0 + exp(-2.0 * inner))
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    x.max(0.0)
}

/// `e^x` in f32 to within 2 ulp over the whole range (Cephes `expf`: `x = n ln 2 + r`,
/// a degree-6 polynomial in `r`, `2^n` from the exponent bits), written with no library call
/// or rounding instruction so that loops over it vectorise. Saturates to `0` below −87.3 and
/// to `f32::MAX`-scale values above 88.7, keeps NaN.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5 · 2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.336_55, 88.722_83);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // n ∈ [−126, 128]: 2^n as exponent bits (2^128 as 2 · 2^127). `t` lies in [2^23, 2^24),
    // where one unit is one ulp, so `n` is the difference of the bits (`n as i32` would not
    // vectorise: a saturating conversion is a scalar instruction and two branches a lane).
    let n = (t.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let half = n >> 1;
    let scale_a = f32::from_bits(((half + 127) as u32) << 23);
    let scale_b = f32::from_bits(((n - half + 127) as u32) << 23);
    y * scale_a * scale_b
}

/// Attention heads `[b, h, t, d]` (any layout with a unit-stride last axis) as the
/// `[b, t, h·d]` rows the output projection reads: each output row gathers its token's heads,
/// in one pass across the pool (no serial transposition).
pub(crate) fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, t, d] = x.dims();
    let heads = Rows::new(primitive(x));
    let out = fill_rows(
        b * t,
        h * d,
        #[inline(always)]
        |r, out| {
            let (batch, token) = (r / t, r % t);
            for (head, o) in out.chunks_exact_mut(d).enumerate() {
                o.copy_from_slice(heads.row((batch * h + head) * t + token));
            }
        },
    );
    tensor(out, [b, t, h * d])
}

/// Rotary embedding of the first `rot` dims of every head of `x` (`[b, h, t, d]`, any layout
/// with a unit-stride last axis), as [`crate::RopeTables::apply`]: `x·cos + rotate_half(x)·sin`
/// with `sin` carrying `rotate_half`'s sign; `cos`, `sin` are `[b, 1, t, rot]`.
pub(crate) fn rope(x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>, rot: usize) -> Tensor<4> {
    let shape @ [_, h, t, d] = x.dims();
    let rows = Rows::new(primitive(x));
    let (cos, sin) = (dense(cos), dense(sin));
    let (cos, sin) = (values(&cos), values(&sin));
    let half = rot / 2;
    let out = fill_rows(
        rows.count(),
        d,
        #[inline(always)]
        |r, out| {
            let x = rows.row(r);
            // Row r is (batch, head, token); the tables are indexed by (batch, token).
            let table = (r / (h * t)) * t + r % t;
            let (c, s) = (
                &cos[table * rot..(table + 1) * rot],
                &sin[table * rot..(table + 1) * rot],
            );
            let (x1, x2) = x[..rot].split_at(half);
            let ((c1, c2), (s1, s2)) = (c.split_at(half), s.split_at(half));
            let (o1, rest) = out.split_at_mut(half);
            let (o2, pass) = rest.split_at_mut(half);
            for ((((o, &a), &b), &c), &s) in o1.iter_mut().zip(x1).zip(x2).zip(c1).zip(s1) {
                *o = a * c + b * s;
            }
            for ((((o, &a), &b), &c), &s) in o2.iter_mut().zip(x1).zip(x2).zip(c2).zip(s2) {
                *o = b * c + a * s;
            }
            pass.copy_from_slice(&x[rot..]);
        },
    );
    tensor(out, shape)
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Distribution, Tensor, TensorData};

    use super::exp;
    use crate::mlp::ActFn;
    use crate::norm::RmsNorm;
    use crate::rope::{Rope, RopeConfig};

    /// ndarray, where the blocks run their generic (unfused) path.
    fn generic_device() -> Device {
        strata_core::Backend::Ndarray.device()
    }

    /// `t` copied to [`generic_device`].
    fn generic<const D: usize>(t: &Tensor<D>) -> Tensor<D> {
        Tensor::from_data(t.to_data(), &generic_device())
    }

    fn assert_close<const D: usize>(fused: Tensor<D>, reference: Tensor<D>, tol: f32, what: &str) {
        assert_eq!(fused.dims(), reference.dims(), "{what}: shape");
        let (f, r) = (
            fused.try_into_vec_as::<f32>().unwrap(),
            reference.try_into_vec_as::<f32>().unwrap(),
        );
        for (i, (a, b)) in f.iter().zip(&r).enumerate() {
            assert!(
                (a - b).abs() <= tol * (1.0 + b.abs()),
                "{what}: element {i}: fused {a}, generic {b}"
            );
        }
    }

    /// A `[2, 3, 70, 16]` view of heads as attention makes them (`narrow` of a wider tensor,
    /// `reshape`, `swap_dims`), large enough to be split across threads.
    fn heads(device: &Device) -> Tensor<4> {
        let wide = Tensor::<3>::random([2, 70, 80], Distribution::Normal(0.0, 2.0), device);
        wide.narrow(2, 16, 48)
            .reshape([2, 70, 3, 16])
            .swap_dims(1, 2)
    }

    #[test]
    fn fused_kernels_equal_the_generic_path() {
        let flex = Device::flex();
        let x = Tensor::<3>::random([3, 50, 300], Distribution::Normal(0.0, 3.0), &flex);
        let w = Tensor::<1>::random([300], Distribution::Normal(1.0, 0.5), &flex);
        let norm = RmsNorm::new(w.clone(), 1e-6);
        let reference = RmsNorm::new(generic(&w), 1e-6);
        assert_close(
            norm.forward(x.clone()),
            reference.forward(generic(&x)),
            1e-5,
            "rms_norm",
        );
        let h = heads(&flex);
        let w16 = Tensor::<1>::random([16], Distribution::Normal(1.0, 0.5), &flex);
        assert_close(
            RmsNorm::new(w16.clone(), 1e-6).forward(h.clone()),
            RmsNorm::new(generic(&w16), 1e-6).forward(generic(&h)),
            1e-5,
            "rms_norm over a strided view",
        );

        for act in [ActFn::Silu, ActFn::Gelu, ActFn::GeluTanh, ActFn::Relu] {
            let what = format!("{act:?}");
            assert_close(act.apply(x.clone()), act.apply(generic(&x)), 1e-6, &what);
            let (gate, up) = (x.clone().narrow(2, 0, 150), x.clone().narrow(2, 150, 150));
            let reference = act.apply(generic(&gate)) * generic(&up);
            assert_close(super::gated(x.clone(), 150, act), reference, 1e-6, &what);
        }

        let positions: Vec<Vec<usize>> = vec![(0..70).collect(), (5..75).collect()];
        for partial in [1.0, 0.5] {
            let cfg = RopeConfig {
                partial_rotary_factor: partial,
                ..RopeConfig::default()
            };
            let rope = Rope::new(&cfg, 16).unwrap();
            let fused = rope.tables(&positions, &flex).apply(h.clone());
            let reference = rope
                .tables(&positions, &generic_device())
                .apply(generic(&h));
            assert_close(fused, reference, 1e-6, &format!("rope, partial {partial}"));
        }
    }

    #[test]
    fn products_and_residual_adds_equal_the_generic_path() {
        let flex = Device::flex();
        // One row and few rows (split by output columns), and a product gemm parallelises.
        for (m, k, n) in [(1, 96, 700), (5, 33, 260), (300, 200, 700), (2, 7, 3)] {
            let x = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &flex);
            let w = Tensor::<2>::random([n, k], Distribution::Normal(0.0, 1.0), &flex);
            let b = Tensor::<1>::random([n], Distribution::Normal(0.0, 1.0), &flex);
            let reference = generic(&x).matmul(generic(&w).transpose());
            assert_close(
                super::linear(x.clone(), &w, None),
                reference.clone(),
                1e-4,
                &format!("linear {m}×{k}×{n}"),
            );
            assert_close(
                super::linear(x.clone(), &w, Some(&b)),
                reference + generic(&b).unsqueeze::<2>(),
                1e-4,
                &format!("linear {m}×{k}×{n} with bias"),
            );
        }
        // A strided input is read as its values.
        let wide = Tensor::<2>::random([40, 90], Distribution::Normal(0.0, 1.0), &flex);
        let w = Tensor::<2>::random([150, 30], Distribution::Normal(0.0, 1.0), &flex);
        let x = wide.narrow(1, 10, 30);
        assert_close(
            super::linear(x.clone(), &w, None),
            generic(&x).matmul(generic(&w).transpose()),
            1e-4,
            "linear of a view",
        );

        let x = Tensor::<3>::random([4, 70, 130], Distribution::Normal(0.0, 1.0), &flex);
        let y = Tensor::<3>::random([4, 70, 130], Distribution::Normal(0.0, 1.0), &flex);
        let reference = generic(&x) + generic(&y);
        // `y` held elsewhere (a capture): a new buffer, `y` unchanged.
        let kept = y.clone();
        assert_close(
            crate::residual(x.clone(), y.clone()),
            reference.clone(),
            0.0,
            "add",
        );
        assert_close(kept, generic(&y), 0.0, "the shared operand");
        // `y` held only here: added in place.
        assert_close(
            crate::residual(x.clone(), y),
            reference.clone(),
            0.0,
            "add in place",
        );
        let view = Tensor::<3>::random([4, 130, 70], Distribution::Normal(0.0, 1.0), &flex)
            .swap_dims(1, 2);
        assert_close(
            crate::residual(x.clone(), view.clone()),
            generic(&x) + generic(&view),
            0.0,
            "add of a view",
        );
    }

    #[test]
    fn merged_heads_equal_the_transposition() {
        let flex = Device::flex();
        // A strided view, as `swap_dims` leaves it: batch 3, 5 heads of 16, 21 tokens.
        let view = Tensor::<4>::random([3, 21, 5, 16], Distribution::Normal(0.0, 1.0), &flex)
            .swap_dims(1, 2);
        let reference = generic(&view).swap_dims(1, 2).reshape([3, 21, 80]);
        assert_close(super::merge_heads(view), reference, 0.0, "merge_heads");
    }

    #[test]
    fn one_row_runs_on_the_calling_thread() {
        let flex = Device::flex();
        let x = Tensor::<3>::from_data(TensorData::new(vec![3.0f32, -4.0], [1, 1, 2]), &flex);
        let w = Tensor::<1>::from_data(TensorData::new(vec![1.0f32, 2.0], [2]), &flex);
        // rms = sqrt((9 + 16) / 2) = 3.5355…
        let out = RmsNorm::new(w, 0.0)
            .forward(x)
            .try_into_vec_as::<f32>()
            .unwrap();
        let r = (12.5f32).sqrt();
        assert!((out[0] - 3.0 / r).abs() < 1e-6 && (out[1] + 8.0 / r).abs() < 1e-6);
    }

    #[test]
    fn exp_is_within_two_ulp_of_the_library_over_the_whole_range() {
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), (x as f64).exp());
            let ulp = (want as f32).to_bits().abs_diff(got.to_bits());
            assert!(ulp <= 2, "exp({x}) = {got}, want {want} ({ulp} ulp)");
            x += 0.0137;
        }
        assert_eq!(exp(-200.0), exp(-87.336_55));
        assert!(exp(-200.0) < 1e-37);
        assert!(exp(200.0) > 1e38);
        assert!(exp(f32::NAN).is_nan());
        assert_eq!(exp(0.0), 1.0);
    }
}

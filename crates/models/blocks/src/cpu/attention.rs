//! Masked softmax attention in f32, the mixture written straight into the `[b, t, h·d]` rows
//! the output projection reads.
//!
//! Work is split into tasks of one key/value head and one block of [`QUERY_BLOCK`] queries,
//! spread over the pool; each task runs its query heads one after the other: scores by gemm
//! (`q·kᵀ`, the scale folded into gemm's product factor), the masked softmax of each score row
//! in one vectorised pass, then the mixture by gemm into its output columns. Queries, keys and
//! values are read in place (any layout with a unit-stride last axis), so the heads split from
//! the fused projection and the cached keys/values are not copied. Under a causal mask a block
//! scores only the keys up to its last query: the later ones are hidden from all of it.
//!
//! The arithmetic is flex's `attention` (burn-flex 0.22's naive path: scores, `−∞` for hidden
//! keys, `exp(s − max)`, normalised before the mixture), which this replaces because that path
//! runs its softmax one element at a time through libm's `expf` and copies strided inputs
//! first. A row whose keys are all hidden (a padding query) gets a zero mixture, as there.

use burn::tensor::{Bool, Tensor};
use burn_flex::{Flex, FlexTensor};
use rayon::prelude::*;

use super::{Out, exp, primitive, run_rows, tensor};

/// Queries per task. Smaller blocks skip more of the causal upper triangle (a block of `n`
/// queries scores `n/2` hidden keys per query on average) but make gemm's products thinner.
pub(crate) const QUERY_BLOCK: usize = 64;

/// Multiply–adds below which the tasks run on the calling thread (a decoding step's attention).
const PARALLEL_MACS: usize = 1 << 20;

/// A `[b, h, t, d]` flex tensor read in place through its strides.
struct Heads {
    t: FlexTensor,
    offset: usize,
    /// Strides of the batch, head and token axes (the last axis is unit-stride).
    strides: [usize; 3],
}

impl Heads {
    fn new(t: FlexTensor) -> Self {
        let layout = t.layout();
        let (dims, s) = (layout.shape().to_vec(), layout.strides().to_vec());
        if (dims[3] > 1 && s[3] != 1) || s.iter().any(|&s| s < 0) {
            return Self::new(t.to_contiguous());
        }
        let offset = layout.start_offset();
        Self {
            t,
            offset,
            strides: [s[0] as usize, s[1] as usize, s[2] as usize],
        }
    }

    /// Where row `token` of head `head` of batch row `batch` starts.
    fn at(&self, batch: usize, head: usize, token: usize) -> *const f32 {
        let [sb, sh, st] = self.strides;
        let i = self.offset + batch * sb + head * sh + token * st;
        self.t.storage::<f32>()[i..].as_ptr()
    }

    /// Distance between consecutive tokens.
    fn token_stride(&self) -> isize {
        self.strides[2] as isize
    }
}

/// `softmax(scale · q·kᵀ, hidden keys excluded) · v` for queries `q` `[b, h, t, d]`, keys and
/// values `[b, h_kv, t_k, d]` (`h_kv` divides `h`; query head `i` reads key/value head
/// `i / (h / h_kv)`) and `blocked` `[b, 1 or h, t, t_k]` (`true` = key hidden). `causal`: the
/// mask hides every key after `t_k − t + i` from query `i`, so blocks skip those keys.
/// Returns the mixture as `[b, t, h·d]`.
pub(crate) fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    blocked: Tensor<4, Bool>,
    scale: f64,
    causal: bool,
) -> Tensor<3> {
    let [b, nh, t, d] = q.dims();
    let [kb, nkv, tk, kd] = k.dims();
    assert_eq!(
        v.dims(),
        [kb, nkv, tk, kd],
        "attention: keys and values differ"
    );
    assert_eq!((kb, kd), (b, d), "attention: queries and keys differ");
    assert!(
        nkv > 0 && nh.is_multiple_of(nkv) && tk >= t,
        "attention: {nh} query heads over {nkv} key/value heads, {t} queries over {tk} keys"
    );
    let [mb, mh, mt, mk] = blocked.dims();
    assert!(
        mb == b && (mh == 1 || mh == nh) && (mt, mk) == (t, tk),
        "attention: mask [{mb}, {mh}, {mt}, {mk}] for [{b}, {nh}, {t}, {tk}] scores"
    );
    let width = nh * d;
    let mut out: Vec<f32> = Vec::with_capacity(b * t * width);
    if out.capacity() == 0 {
        return tensor(out, [b, t, width]);
    }
    let (q, k, v) = (
        Heads::new(primitive(q)),
        Heads::new(primitive(k)),
        Heads::new(primitive(v)),
    );
    let mask = blocked
        .try_into_primitive::<Flex>()
        .expect("cpu kernels run on flex tensors only (checked by `flex_f32`)")
        .to_contiguous();
    let mask_offset = mask.layout().start_offset();
    let mask = &mask.storage::<u8>()[mask_offset..];
    let mask_row = |batch: usize, head: usize, query: usize| {
        let head = if mh == 1 { 0 } else { head };
        let start = ((batch * mh + head) * t + query) * tk;
        &mask[start..start + tk]
    };

    let rep = nh / nkv;
    let first = tk - t;
    let blocks = t.div_ceil(QUERY_BLOCK);
    // (batch row, key/value head, query block), the blocks with the most keys first.
    let tasks: Vec<(usize, usize, usize)> = (0..blocks)
        .rev()
        .flat_map(|blk| (0..b).flat_map(move |bi| (0..nkv).map(move |g| (bi, g, blk))))
        .collect();
    // Queries and keys of a block.
    let extent = |blk: usize| {
        let (start, end) = (blk * QUERY_BLOCK, ((blk + 1) * QUERY_BLOCK).min(t));
        (start, end - start, if causal { first + end } else { tk })
    };
    let dst = Out(out.as_mut_ptr());
    let run = |scores: &mut Vec<f32>, &(bi, g, blk): &(usize, usize, usize)| {
        let (q0, len, keys) = extent(blk);
        scores.resize(len * keys, 0.0);
        for head in g * rep..(g + 1) * rep {
            // SAFETY: `q` holds `len` rows of `d` from `q0` for this head, `k` and `v` hold
            // `keys ≤ tk` rows of `d` for head `g`, `scores` holds `len × keys`.
            unsafe {
                gemm::gemm(
                    len,
                    keys,
                    d,
                    scores.as_mut_ptr(),
                    1,
                    keys as isize,
                    false,
                    q.at(bi, head, q0),
                    1,
                    q.token_stride(),
                    k.at(bi, g, 0),
                    k.token_stride(),
                    1,
                    0.0,
                    scale as f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            run_rows(
                0,
                scores,
                keys,
                #[inline(always)]
                |i, row| softmax_row(row, &mask_row(bi, head, q0 + i)[..keys]),
            );
            // SAFETY: the output has room for `b × t` rows of `width`; this task writes rows
            // `q0..q0 + len` of batch row `bi`, columns `head·d..(head + 1)·d`, which no other
            // task writes; gemm writes every one of them (`read_dst` is false).
            unsafe {
                gemm::gemm(
                    len,
                    d,
                    keys,
                    dst.ptr().add((bi * t + q0) * width + head * d),
                    1,
                    width as isize,
                    false,
                    scores.as_ptr(),
                    1,
                    keys as isize,
                    v.at(bi, g, 0),
                    1,
                    v.token_stride(),
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
        }
    };
    let macs: usize = tasks
        .iter()
        .map(|&(_, _, blk)| {
            let (_, len, keys) = extent(blk);
            2 * len * keys * rep * d
        })
        .sum();
    if macs < PARALLEL_MACS || tasks.len() == 1 {
        let mut scores = Vec::new();
        tasks.iter().for_each(|task| run(&mut scores, task));
    } else {
        tasks.par_iter().for_each_init(Vec::new, run);
    }
    // SAFETY: the tasks cover every (batch row, query block, head), so every output was written.
    unsafe { out.set_len(b * t * width) };
    tensor(out, [b, t, width])
}

/// The probabilities of one row of scores, in place: hidden keys (`hidden[j] != 0`) get 0, the
/// rest `exp(s − max) / Σ exp(s − max)` over the visible keys; all zero when none is visible.
#[inline(always)]
fn softmax_row(row: &mut [f32], hidden: &[u8]) {
    const LANES: usize = 16;
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut rows = row.chunks_exact_mut(LANES);
    let mut masks = hidden.chunks_exact(LANES);
    for (r, m) in (&mut rows).zip(&mut masks) {
        for ((s, &h), top) in r.iter_mut().zip(m).zip(&mut max) {
            *s = if h != 0 { f32::NEG_INFINITY } else { *s };
            *top = top.max(*s);
        }
    }
    for (s, &h) in rows.into_remainder().iter_mut().zip(masks.remainder()) {
        *s = if h != 0 { f32::NEG_INFINITY } else { *s };
        max[0] = max[0].max(*s);
    }
    let max = max.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = [0.0f32; LANES];
    let mut rows = row.chunks_exact_mut(LANES);
    for r in &mut rows {
        for (s, acc) in r.iter_mut().zip(&mut sum) {
            // `exp` saturates instead of reaching 0, so hidden keys are zeroed explicitly.
            *s = if *s == f32::NEG_INFINITY {
                0.0
            } else {
                exp(*s - max)
            };
            *acc += *s;
        }
    }
    for s in rows.into_remainder() {
        *s = if *s == f32::NEG_INFINITY {
            0.0
        } else {
            exp(*s - max)
        };
        sum[0] += *s;
    }
    let inv = 1.0 / sum.iter().sum::<f32>();
    for s in row.iter_mut() {
        *s *= inv;
    }
}

//! Multi-head attention with grouped keys/values, masks, interventions and pattern capture.

use burn::tensor::activation::softmax;
use burn::tensor::{Bool, Tensor};
use strata_core::intervention::attention_block_mask;
use strata_core::{Error, Recorder, Result, Site};

use crate::kv_cache::LayerKv;
use crate::layout::AttentionLayout;
use crate::linear::Linear;
use crate::loader::WeightLoader;
use crate::norm::RmsNorm;
use crate::rope::RopeTables;

/// Head geometry and score scale of an attention layer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionConfig {
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (`n_heads` for MHA, fewer for GQA, 1 for MQA); divides `n_heads`.
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Multiplies `q·k` before the softmax: `1/sqrt(head_dim)` unless the model says otherwise
    /// (Gemma: `query_pre_attn_scalar^-0.5`).
    pub scale: f64,
}

impl AttentionConfig {
    /// A config with the default scale `1/sqrt(head_dim)`; errors unless `n_kv_heads` divides
    /// `n_heads` and every size is positive.
    pub fn new(n_heads: usize, n_kv_heads: usize, head_dim: usize) -> Result<Self> {
        if n_heads == 0 || n_kv_heads == 0 || head_dim == 0 || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(Error::Unsupported(format!(
                "attention with {n_heads} query heads, {n_kv_heads} key/value heads and head \
                 width {head_dim}: the key/value heads must divide the query heads"
            )));
        }
        Ok(Self {
            n_heads,
            n_kv_heads,
            head_dim,
            scale: 1.0 / (head_dim as f64).sqrt(),
        })
    }

    /// The same config with another score scale.
    pub fn with_scale(self, scale: f64) -> Self {
        Self { scale, ..self }
    }
}

/// What one forward call shares between attention layers: the slot layout, the structural mask
/// (from [`AttentionLayout::mask`]) and the rotary tables, if the model rotates.
#[derive(Debug, Clone, Copy)]
pub struct AttentionContext<'a> {
    /// Slots of this call.
    pub layout: &'a AttentionLayout,
    /// `[batch, 1, n_query, n_key]`, `true` = key hidden.
    pub mask: &'a Tensor<4, Bool>,
    /// The mask hides every future key (it was built from a causal [`crate::MaskSpec`]), so
    /// long query blocks may skip the keys after their last query.
    pub causal: bool,
    /// Applied to queries and keys (after the optional q/k norms).
    pub rope: Option<&'a RopeTables>,
}

/// Heads `[b, h, t, d]` as `[b, t, h·d]` (the fused CPU gather on flex).
fn merge_heads(heads: Tensor<4>) -> Tensor<3> {
    if crate::cpu::flex_f32(&heads) {
        return crate::cpu::merge_heads(heads);
    }
    let [b, h, t, d] = heads.dims();
    heads.swap_dims(1, 2).reshape([b, t, h * d])
}

/// Multi-head self-attention: fused q|k|v projection, optional per-head q/k RMSNorms (Gemma 3),
/// optional rotary embedding, grouped keys/values, masked softmax, output projection.
///
/// Masking: the structural mask of the context (padding keys, causality, sliding window) is
/// OR'ed with the plan's attention-key interventions for this layer
/// ([`strata_core::intervention::attention_block_mask`]); blocked scores are set to `f32::MIN`
/// (like HF's `finfo.min`), so blocked probabilities are exactly 0, the rest of each row is the
/// softmax over the visible keys, and a row with no visible key stays finite.
#[derive(Debug, Clone)]
pub struct Attention {
    cfg: AttentionConfig,
    qkv: Linear,
    o: Linear,
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
}

impl Attention {
    /// An attention layer from separate q, k, v and output projections (fused here).
    pub fn new(cfg: AttentionConfig, q: Linear, k: Linear, v: Linear, o: Linear) -> Self {
        Self::from_fused(cfg, Linear::concat(vec![q, k, v]), o)
    }

    /// An attention layer from a fused projection whose outputs are all query heads, then all
    /// key heads, then all value heads (GPT-2's `c_attn` layout).
    pub fn from_fused(cfg: AttentionConfig, qkv: Linear, o: Linear) -> Self {
        assert_eq!(
            qkv.out_features(),
            (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim,
            "Attention: fused projection width does not match the heads"
        );
        Self {
            cfg,
            qkv,
            o,
            q_norm: None,
            k_norm: None,
        }
    }

    /// Adds RMSNorms over `head_dim` applied to every query and key head before the rotary
    /// embedding (Gemma 3's `q_norm`/`k_norm`).
    pub fn with_qk_norms(self, q_norm: RmsNorm, k_norm: RmsNorm) -> Self {
        Self {
            q_norm: Some(q_norm),
            k_norm: Some(k_norm),
            ..self
        }
    }

    /// Loads HF's `{prefix}.q_proj`, `k_proj`, `v_proj` (biases when `qkv_bias`) and `o_proj`
    /// (bias when `o_bias`), the naming of Llama, Qwen2, Mistral and Gemma.
    pub fn load(
        loader: &mut WeightLoader<'_>,
        prefix: &str,
        d_model: usize,
        cfg: AttentionConfig,
        qkv_bias: bool,
        o_bias: bool,
    ) -> Result<Self> {
        let (q_width, kv_width) = (cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
        let mut proj = |name: &str, i: usize, o: usize, bias: bool| {
            Linear::load(loader, &format!("{prefix}.{name}"), i, o, bias)
        };
        let q = proj("q_proj", d_model, q_width, qkv_bias)?;
        let k = proj("k_proj", d_model, kv_width, qkv_bias)?;
        let v = proj("v_proj", d_model, kv_width, qkv_bias)?;
        let o = proj("o_proj", q_width, d_model, o_bias)?;
        Ok(Self::new(cfg, q, k, v, o))
    }

    /// The head geometry.
    pub fn config(&self) -> &AttentionConfig {
        &self.cfg
    }

    /// Attends over `x` (`[batch, n_query, d_model]`) → `[batch, n_query, d_model]`, the branch
    /// output before it joins the residual.
    ///
    /// With `kv`, this call's keys and values are appended to the layer's cache first and the
    /// queries attend over everything cached (the context's layout must come from
    /// [`crate::KvCache::begin`]). The probabilities are reported to `rec` as
    /// `attn_pattern.{layer}` only when the plan asks for them.
    pub fn forward(
        &self,
        x: Tensor<3>,
        layer: usize,
        ctx: &AttentionContext<'_>,
        rec: &mut Recorder<'_>,
        kv: Option<&mut LayerKv>,
    ) -> Result<Tensor<3>> {
        let AttentionConfig {
            n_heads: nh,
            n_kv_heads: nkv,
            head_dim: hd,
            scale,
        } = self.cfg;
        let [b, t, _] = x.dims();
        let device = x.device();
        // Heads split as views of the projection (reshaped first, so that nothing is copied).
        let qkv = self.qkv.forward(x).reshape([b, t, nh + 2 * nkv, hd]);
        let heads = |first: usize, n: usize| qkv.clone().narrow(2, first, n).swap_dims(1, 2);
        let (mut q, mut k, v) = (heads(0, nh), heads(nh, nkv), heads(nh + nkv, nkv));
        if let Some(norm) = &self.q_norm {
            q = norm.forward(q);
        }
        if let Some(norm) = &self.k_norm {
            k = norm.forward(k);
        }
        if let Some(rope) = ctx.rope {
            q = rope.apply(q);
            k = rope.apply(k);
        }
        let (k, v) = match kv {
            Some(cache) => cache.append(k, v),
            None => (k, v),
        };
        let tk = k.dims()[2];
        debug_assert_eq!((t, tk), (ctx.layout.n_query(), ctx.layout.n_key()));

        let geometry = ctx.layout.geometry(nh);
        let blocked =
            match attention_block_mask(rec.plan().interventions(), layer, geometry, &device) {
                Some(extra) => {
                    let mh = extra.dims()[1];
                    ctx.mask.clone().expand([b, mh, t, tk]).bool_or(extra)
                }
                None => ctx.mask.clone(),
            };
        if !rec.wants(Site::AttnPattern(layer)) && crate::cpu::flex_f32(&q) {
            // Nothing reads the probabilities: the fused CPU attention (gemm scores, one
            // vectorised masked softmax per row, the mixture written straight into the output
            // projection's rows; causal query blocks skip the keys after their last query)
            // never materialises the `[batch, heads, query, key]` scores.
            let mixed = crate::cpu::attention::attention(q, k, v, blocked, scale, ctx.causal);
            return Ok(self.o.forward(mixed));
        }

        // Grouped-query attention without materialising repeated keys/values: the `rep` query
        // heads sharing a key/value head are stacked along the query axis.
        let rep = nh / nkv;
        let scores = q
            .reshape([b, nkv, rep * t, hd])
            .matmul(k.swap_dims(2, 3))
            .mul_scalar(scale)
            .reshape([b, nh, t, tk]);
        let probs = softmax(
            scores.mask_fill(blocked.expand([b, nh, t, tk]), f32::MIN),
            3,
        );
        if rec.wants(Site::AttnPattern(layer)) {
            rec.pattern(layer, &probs)?;
        }
        let mixed = probs
            .reshape([b, nkv, rep * t, tk])
            .matmul(v)
            .reshape([b, nh, t, hd]);
        Ok(self.o.forward(merge_heads(mixed)))
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};
    use strata_core::{
        AttentionBlock, CapturePlan, Edit, Intervention, Layers, PadSide, Positions, Recorder,
        Site, TokenBatch,
    };

    use super::{Attention, AttentionConfig, AttentionContext};
    use crate::kv_cache::KvCache;
    use crate::layout::{AttentionLayout, MaskSpec};
    use crate::linear::Linear;
    use crate::rope::{Rope, RopeConfig};

    const B: usize = 2;
    const T: usize = 5;
    const D: usize = 8;
    const NH: usize = 4;
    const NKV: usize = 2;
    const HD: usize = 2;

    /// Deterministic values in [-1, 1).
    fn fill(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    struct Fixture {
        device: Device,
        x: Vec<f32>,
        wq: Vec<f32>,
        wk: Vec<f32>,
        wv: Vec<f32>,
        wo: Vec<f32>,
        attn: Attention,
        batch: TokenBatch,
    }

    fn fixture() -> Fixture {
        let device = Device::flex();
        let (wq, wk, wv, wo) = (
            fill(D * NH * HD, 1),
            fill(D * NKV * HD, 2),
            fill(D * NKV * HD, 3),
            fill(NH * HD * D, 4),
        );
        let lin = |w: &Vec<f32>, i: usize, o: usize| {
            Linear::new(
                Tensor::from_data(TensorData::new(w.clone(), [i, o]), &device),
                None,
            )
        };
        let cfg = AttentionConfig::new(NH, NKV, HD).unwrap();
        let attn = Attention::new(
            cfg,
            lin(&wq, D, NH * HD),
            lin(&wk, D, NKV * HD),
            lin(&wv, D, NKV * HD),
            lin(&wo, NH * HD, D),
        );
        let batch = TokenBatch::new(vec![vec![7; T]; B]).unwrap();
        Fixture {
            x: fill(B * T * D, 5),
            wq,
            wk,
            wv,
            wo,
            attn,
            batch,
            device,
        }
    }

    /// Runs layer 0 under `plan`: (probabilities `[B, NH, T, T]`, output `[B, T, D]`).
    fn run(f: &Fixture, plan: &CapturePlan) -> (Vec<f32>, Vec<f32>) {
        let layout = AttentionLayout::for_batch(&f.batch);
        let mask = layout.mask(MaskSpec::CAUSAL, &f.device);
        let ctx = AttentionContext {
            layout: &layout,
            mask: &mask,
            causal: true,
            rope: None,
        };
        let plan = plan.clone().with(Site::AttnPattern(0), Positions::All);
        let mut rec = Recorder::new(&plan, &f.batch);
        let x = Tensor::<3>::from_data(TensorData::new(f.x.clone(), [B, T, D]), &f.device);
        let out = f.attn.forward(x, 0, &ctx, &mut rec, None).unwrap();
        let probs = rec
            .finish()
            .pattern(Site::AttnPattern(0))
            .unwrap()
            .to_data();
        (
            probs.convert::<f32>().try_into_vec().unwrap(),
            out.try_into_vec_as::<f32>().unwrap(),
        )
    }

    /// `x · W` for one token, in f64 (`W` is `[D, width]`).
    fn project(x: &[f32], w: &[f32], width: usize) -> Vec<f64> {
        (0..width)
            .map(|o| (0..D).map(|c| x[c] as f64 * w[c * width + o] as f64).sum())
            .collect()
    }

    /// The attention computed by hand in f64: softmax over the keys `visible(b, h, i, j)`
    /// allows, then the output projection.
    fn by_hand(
        f: &Fixture,
        visible: impl Fn(usize, usize, usize, usize) -> bool,
    ) -> (Vec<f64>, Vec<f64>) {
        let mut probs = vec![0.0; B * NH * T * T];
        let mut out = vec![0.0; B * T * D];
        for b in 0..B {
            let tok = |i: usize| &f.x[(b * T + i) * D..(b * T + i + 1) * D];
            let q: Vec<Vec<f64>> = (0..T).map(|i| project(tok(i), &f.wq, NH * HD)).collect();
            let k: Vec<Vec<f64>> = (0..T).map(|i| project(tok(i), &f.wk, NKV * HD)).collect();
            let v: Vec<Vec<f64>> = (0..T).map(|i| project(tok(i), &f.wv, NKV * HD)).collect();
            for i in 0..T {
                let mut mixed = [0.0; NH * HD];
                for h in 0..NH {
                    let g = h / (NH / NKV); // the key/value head this query head reads
                    let score = |j: usize| {
                        (0..HD)
                            .map(|e| q[i][h * HD + e] * k[j][g * HD + e])
                            .sum::<f64>()
                            / (HD as f64).sqrt()
                    };
                    let keys: Vec<usize> = (0..T).filter(|&j| visible(b, h, i, j)).collect();
                    let max = keys
                        .iter()
                        .map(|&j| score(j))
                        .fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = keys.iter().map(|&j| (score(j) - max).exp()).sum();
                    for &j in &keys {
                        let p = (score(j) - max).exp() / z;
                        probs[((b * NH + h) * T + i) * T + j] = p;
                        for e in 0..HD {
                            mixed[h * HD + e] += p * v[j][g * HD + e];
                        }
                    }
                }
                for o in 0..D {
                    out[(b * T + i) * D + o] = (0..NH * HD)
                        .map(|c| mixed[c] * f.wo[c * D + o] as f64)
                        .sum();
                }
            }
        }
        (probs, out)
    }

    fn assert_close(what: &str, actual: &[f32], expected: &[f64], tol: f64) {
        for (n, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            assert!((a as f64 - e).abs() <= tol, "{what}[{n}]: {a} vs {e}");
        }
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    #[test]
    fn causal_gqa_attention_matches_the_hand_computation() {
        let f = fixture();
        let (probs, out) = run(&f, &CapturePlan::new());
        let (want_p, want_out) = by_hand(&f, |_, _, i, j| j <= i);
        assert_close("probs", &probs, &want_p, 1e-6);
        assert_close("out", &out, &want_out, 1e-5);
    }

    /// Acceptance: blocked probabilities are exactly 0, the others are the softmax over the
    /// unblocked scores (computed by hand), and they equal the unblocked probabilities
    /// renormalised over the visible keys.
    #[test]
    fn blocked_keys_get_exactly_zero_and_the_rest_is_renormalised() {
        let f = fixture();
        // Row 0, head 1 only: several pairs; every row and head: query 4 → key 0.
        let per_head = AttentionBlock {
            layers: Layers::Only(vec![0]),
            heads: Some(vec![1]),
            rows: Some(vec![0]),
            blocked: vec![(3, 0), (3, 2), (4, 4), (2, 1), (1, 3)],
        };
        let everywhere = AttentionBlock {
            blocked: vec![(4, 0)],
            ..AttentionBlock::default()
        };
        let blocked = |b: usize, h: usize, i: usize, j: usize| {
            (b == 0 && h == 1 && per_head.blocked.contains(&(i, j))) || (i, j) == (4, 0)
        };
        let plan = CapturePlan::new()
            .intervene(Intervention::BlockAttention(per_head.clone()))
            .intervene(Intervention::BlockAttention(everywhere));
        let (probs, out) = run(&f, &plan);
        let (base, _) = run(&f, &CapturePlan::new());
        let (want_p, want_out) = by_hand(&f, |b, h, i, j| j <= i && !blocked(b, h, i, j));
        assert_close("probs", &probs, &want_p, 1e-6);
        assert_close("out", &out, &want_out, 1e-5);
        let mut n_blocked = 0;
        for b in 0..B {
            for h in 0..NH {
                for i in 0..T {
                    let at = |j: usize| ((b * NH + h) * T + i) * T + j;
                    let visible: Vec<usize> = (0..=i).filter(|&j| !blocked(b, h, i, j)).collect();
                    let mass: f64 = visible.iter().map(|&j| base[at(j)] as f64).sum();
                    for j in 0..T {
                        if visible.contains(&j) {
                            let renormalised = base[at(j)] as f64 / mass;
                            assert!(
                                (probs[at(j)] as f64 - renormalised).abs() <= 1e-6,
                                "b{b} h{h} q{i} k{j}"
                            );
                        } else {
                            assert_eq!(
                                probs[at(j)].to_bits(),
                                0.0f32.to_bits(),
                                "b{b} h{h} q{i} k{j} must be exactly 0"
                            );
                            n_blocked += usize::from(j <= i);
                        }
                    }
                    let total: f32 = (0..T).map(|j| probs[at(j)]).sum();
                    assert!((total - 1.0).abs() < 1e-6);
                }
            }
        }
        // 4 of the 5 per-head pairs are causal (query 1 → key 3 is already hidden), plus query
        // 4 → key 0 in 2 rows × 4 heads.
        assert_eq!(n_blocked, 4 + B * NH);
    }

    /// Acceptance: an intervention list without a mask for this layer — empty, another layer's
    /// mask, an empty mask, an edit elsewhere — leaves probabilities and output bit-identical.
    #[test]
    fn interventions_that_block_nothing_change_nothing() {
        let f = fixture();
        let (probs, out) = run(&f, &CapturePlan::new());
        let noops = [
            CapturePlan::new().intervene(Intervention::BlockAttention(AttentionBlock {
                layers: Layers::Only(vec![1]),
                blocked: vec![(4, 0), (3, 3)],
                ..AttentionBlock::default()
            })),
            CapturePlan::new().intervene(Intervention::BlockAttention(AttentionBlock::default())),
            CapturePlan::new().intervene(Intervention::Edit {
                site: Site::MlpOut(0),
                positions: Positions::All,
                edit: Edit::Zero,
            }),
        ];
        for (n, plan) in noops.iter().enumerate() {
            let (p, o) = run(&f, plan);
            assert_eq!(bits(&p), bits(&probs), "plan {n}: probabilities changed");
            assert_eq!(bits(&o), bits(&out), "plan {n}: output changed");
        }
    }

    #[test]
    fn a_query_with_every_key_blocked_stays_finite() {
        let f = fixture();
        let plan = CapturePlan::new().intervene(Intervention::BlockAttention(AttentionBlock {
            blocked: vec![(0, 0)],
            ..AttentionBlock::default()
        }));
        let (probs, out) = run(&f, &plan);
        assert!(probs.iter().chain(&out).all(|v| v.is_finite()));
    }

    #[test]
    fn cached_steps_equal_the_full_pass() {
        let f = fixture();
        let rope = Rope::new(&RopeConfig::default(), HD).unwrap();
        let x = Tensor::<3>::from_data(TensorData::new(f.x.clone(), [B, T, D]), &f.device);
        let full = {
            let layout = AttentionLayout::for_batch(&f.batch);
            let (mask, tables) = (
                layout.mask(MaskSpec::CAUSAL, &f.device),
                rope.tables(layout.position_ids(), &f.device),
            );
            let ctx = AttentionContext {
                layout: &layout,
                mask: &mask,
                causal: true,
                rope: Some(&tables),
            };
            let plan = CapturePlan::new();
            f.attn
                .forward(
                    x.clone(),
                    0,
                    &ctx,
                    &mut Recorder::new(&plan, &f.batch),
                    None,
                )
                .unwrap()
        };
        let mut cache = KvCache::new(1);
        let mut steps = Vec::new();
        for (start, len) in [(0, 3), (3, 1), (4, 1)] {
            let batch = TokenBatch::new(vec![vec![7; len]; B]).unwrap();
            let layout = cache.begin(&batch).unwrap();
            let (mask, tables) = (
                layout.mask(MaskSpec::CAUSAL, &f.device),
                rope.tables(layout.position_ids(), &f.device),
            );
            let ctx = AttentionContext {
                layout: &layout,
                mask: &mask,
                causal: true,
                rope: Some(&tables),
            };
            let plan = CapturePlan::new();
            let mut rec = Recorder::new(&plan, &batch);
            let step = x.clone().narrow(1, start, len);
            steps.push(
                f.attn
                    .forward(step, 0, &ctx, &mut rec, Some(cache.layer_mut(0)))
                    .unwrap(),
            );
            cache.commit(&layout);
        }
        assert_eq!((cache.len(), cache.next_positions()), (T, &[T, T][..]));
        let cached = Tensor::cat(steps, 1).try_into_vec_as::<f32>().unwrap();
        let full = full.try_into_vec_as::<f32>().unwrap();
        let worst = cached
            .iter()
            .zip(&full)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "worst deviation {worst}");
    }

    #[test]
    fn long_causal_blocks_equal_the_explicit_softmax_path() {
        // 300 queries: the fused path runs them in blocks over growing key prefixes; the
        // explicit path (probabilities captured) attends over every key. A left-padded row
        // checks that the blocks cut the mask with the queries and keys; the second plan
        // blocks keys of one head of one row (a per-head mask) in several query blocks.
        let f = fixture();
        let long = 300;
        let rows = vec![vec![7; long], vec![7; long - 37]];
        let batch = TokenBatch::with_padding(rows, PadSide::Left, 0).unwrap();
        let layout = AttentionLayout::for_batch(&batch);
        let mask = layout.mask(MaskSpec::CAUSAL, &f.device);
        let ctx = AttentionContext {
            layout: &layout,
            mask: &mask,
            causal: true,
            rope: None,
        };
        let x = Tensor::<3>::from_data(
            TensorData::new(fill(B * long * D, 9), [B, long, D]),
            &f.device,
        );
        let out = |plan: &CapturePlan| {
            let mut rec = Recorder::new(plan, &batch);
            let y = f.attn.forward(x.clone(), 0, &ctx, &mut rec, None).unwrap();
            y.try_into_vec_as::<f32>().unwrap()
        };
        let per_head = CapturePlan::new().intervene(Intervention::BlockAttention(AttentionBlock {
            layers: Layers::Only(vec![0]),
            heads: Some(vec![1]),
            rows: Some(vec![0]),
            blocked: vec![(70, 70), (100, 3), (250, 200), (299, 0), (299, 298)],
        }));
        for plan in [CapturePlan::new(), per_head] {
            let fused = out(&plan);
            let explicit = out(&plan.clone().with(Site::AttnPattern(0), Positions::All));
            // Real query slots only (row 1's first 37 slots are padding).
            let real = |i: usize| i / (long * D) == 0 || (i / D) % long >= 37;
            let worst = fused
                .iter()
                .zip(&explicit)
                .enumerate()
                .filter(|(i, _)| real(*i))
                .map(|(_, (a, b))| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 1e-5, "worst deviation {worst}");
        }
    }
}

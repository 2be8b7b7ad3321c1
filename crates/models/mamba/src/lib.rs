//! `strata-model-mamba`: Mamba-1 selective state-space language models (HF `model_type`
//! `mamba`, `MambaForCausalLM`), loaded from a Hugging Face config and HF-named weights.
//!
//! Block `l`: `x += mixer(norm(x))` (RMSNorm), then `norm_f` and the head (tied to
//! `backbone.embeddings` unless the checkpoint has `lm_head.weight`) after the last block. The
//! mixer, as HF's `MambaMixer.slow_forward` computes it in float32:
//!
//! 1. `in_proj` → `x`, `z` (`d_inner` each);
//! 2. causal depthwise conv1d over the tokens (kernel `conv_kernel`, left padding
//!    `conv_kernel − 1`, plus bias when `use_conv_bias`), then `hidden_act` (SiLU);
//! 3. `x_proj` → `dt` (`time_step_rank`), `B`, `C` (`state_size` each);
//!    `dt = softplus(dt_proj(dt))` (`dt_proj` always has a bias); `A = −exp(A_log)`;
//! 4. the selective scan `h_t = exp(A·dt_t)·h_{t−1} + dt_t·B_t·x_t`, `y_t = C_t·h_t + D·x_t`;
//! 5. `out_proj(y · act(z))`. `use_bias` adds biases to `in_proj` and `out_proj`.
//!
//! `residual_in_fp32` only changes anything for half-precision weights: Strata reads every weight
//! as float32, so the residual is float32 either way (HF's float32 result exactly).
//!
//! **Canonical sites.** `embed` (token embeddings), `attn_out.l` (the mixer output, before the
//! residual add: Mamba's token-mixing sublayer), `resid_post.l`, `final_norm`, `logits`. Mamba has
//! no MLP sublayer and no attention probabilities: `mlp_out` and `attn_pattern` captures, edits
//! at `mlp_out` and attention-key masks are rejected as invalid requests. HF's `hidden_states` is
//! `[resid_post.0, …, resid_post.{L-2}, final_norm]` ([`HiddenStatesLayout::BlocksOnly`]).
//!
//! **The scan's cost.** The scan is `O(T · d_inner · d_state)` per row and layer (plus the
//! `O(T · d_model · d_inner)` projections, which dominate for real model sizes). The projections
//! and the convolution (`conv_kernel` shifted multiply-adds over the whole sequence, no loop over
//! tokens) run as burn tensor ops on the model's device; the recurrence itself reads `dt`, `x`,
//! `B`, `C` back once per layer and runs as one host loop over contiguous `f32` buffers in HF's
//! sequential order (no per-token kernel launches, no `[T, d_inner, d_state]` intermediate),
//! then uploads `y`. One device round trip per layer. Measured on the tiny fixture (flex, 2-core
//! machine, whole `strata capture … --capture logits --positions last` process, ~0.03 s of it
//! start-up): T = 12 → 0.04 s, T = 96 → 0.07 s, T = 768 (64×) → 0.26 s, i.e. the cost grows
//! linearly in T (the RWKV crate: 0.04 s, 0.04 s, 0.12 s).
//!
//! **Padding and decoding.** Pad slots of a padded batch are zeroed before the convolution and
//! after it and skipped by the scan, so they never reach the state: a left- or right-padded row
//! gives at its real positions what it gives alone. The [`DecodeCache`] is the recurrent state of
//! every layer: the last `conv_kernel − 1` convolution inputs and the `[d_inner, d_state]` SSM
//! state per row; one step costs `O(d_inner · d_state)` per layer, whatever the length so far.
//! Models are recurrent: there is no position limit (`context_length` is `usize::MAX`).

mod scan;

use burn::tensor::activation::softplus;
use burn::tensor::{Device, Tensor};
use serde::Deserialize;
use strata_blocks::recurrent::{
    LayerRows, RealMask, RecurrentState, check_step, from_host, to_host,
};
use strata_blocks::{ActFn, Embedding, Linear, RmsNorm, WeightLoader};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, Error, HiddenStatesLayout, Intervention,
    LanguageModel, ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, SiteKind, TokenBatch,
};

use crate::scan::{ScanDims, ScanInputs, selective_scan};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "mamba",
        description: "Mamba-1 selective state-space models (HF MambaForCausalLM; recurrent decoding)",
        model_types: &["mamba"],
        gguf_architectures: &[],
        from_gguf: None,
        load,
    }
}

/// `time_step_rank`: a number, or `"auto"` (`ceil(hidden_size / 16)`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TimeStepRank {
    Rank(usize),
    Named(String),
}

/// The `config.json` fields this family reads; defaults as in HF's `MambaConfig`.
#[derive(Debug, Deserialize)]
struct MambaConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    /// Defaults to `expand · hidden_size`.
    #[serde(default)]
    intermediate_size: Option<usize>,
    #[serde(default = "default_expand")]
    expand: usize,
    #[serde(default = "default_state_size")]
    state_size: usize,
    #[serde(default = "default_conv_kernel")]
    conv_kernel: usize,
    #[serde(default)]
    time_step_rank: Option<TimeStepRank>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_true")]
    use_conv_bias: bool,
    #[serde(default)]
    use_bias: bool,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
}

fn default_expand() -> usize {
    2
}
fn default_state_size() -> usize {
    16
}
fn default_conv_kernel() -> usize {
    4
}
fn default_eps() -> f64 {
    1e-5
}
fn default_hidden_act() -> String {
    "silu".into()
}
fn default_true() -> bool {
    true
}

/// One Mamba mixer.
struct Mixer {
    in_proj: Linear,
    /// Tap `k` of the depthwise convolution as `[1, 1, d_inner]`; it multiplies the input
    /// `conv_kernel − 1 − k` tokens back.
    conv_taps: Vec<Tensor<3>>,
    conv_bias: Option<Tensor<3>>,
    x_proj: Linear,
    dt_proj: Linear,
    /// `A = −exp(A_log)`, `[d_inner, d_state]`, on the host (the scan runs there).
    a: Vec<f32>,
    /// `[1, 1, d_inner]`.
    d: Tensor<3>,
    out_proj: Linear,
    act: ActFn,
    d_inner: usize,
    d_state: usize,
    dt_rank: usize,
}

/// One layer's recurrent state.
#[derive(Debug, Clone)]
struct LayerState {
    /// The last `conv_kernel − 1` convolution inputs, `[batch, conv_kernel − 1, d_inner]`.
    window: Tensor<3>,
    /// The SSM state, `[batch, d_inner, d_state]`, row-major on the host.
    ssm: Vec<f32>,
}

impl LayerRows for LayerState {
    fn repeat_rows(&self, rows: usize, n: usize) -> Self {
        Self {
            window: strata_blocks::repeat_rows(&self.window, n),
            ssm: strata_blocks::repeat_host_rows(&self.ssm, rows, n),
        }
    }
}

/// The decoding state of a Mamba model (what its [`DecodeCache`] holds).
type MambaState = RecurrentState<LayerState>;

impl Mixer {
    fn load(
        w: &mut WeightLoader<'_>,
        p: &str,
        d: usize,
        cfg: &Dims,
        use_bias: bool,
        use_conv_bias: bool,
        act: ActFn,
    ) -> Result<Self> {
        let (di, n, r, k) = (cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.conv_kernel);
        let in_proj = Linear::load(w, &format!("{p}.in_proj"), d, 2 * di, use_bias)?;
        let conv = w
            .tensor(&format!("{p}.conv1d.weight"), [di, 1, k])?
            .reshape([di, k]);
        let conv_taps = (0..k)
            .map(|tap| conv.clone().narrow(1, tap, 1).reshape([1, 1, di]))
            .collect();
        let conv_bias = if use_conv_bias {
            Some(
                w.tensor::<1>(&format!("{p}.conv1d.bias"), [di])?
                    .reshape([1, 1, di]),
            )
        } else {
            None
        };
        let x_proj = Linear::load(w, &format!("{p}.x_proj"), di, r + 2 * n, false)?;
        let dt_proj = Linear::load(w, &format!("{p}.dt_proj"), r, di, true)?;
        let a_name = format!("{p}.A_log");
        let a = to_host(w.tensor::<2>(&a_name, [di, n])?.exp().neg(), &a_name)?;
        let d_skip = w.tensor::<1>(&format!("{p}.D"), [di])?.reshape([1, 1, di]);
        let out_proj = Linear::load(w, &format!("{p}.out_proj"), di, d, use_bias)?;
        Ok(Self {
            in_proj,
            conv_taps,
            conv_bias,
            x_proj,
            dt_proj,
            a,
            d: d_skip,
            out_proj,
            act,
            d_inner: di,
            d_state: n,
            dt_rank: r,
        })
    }

    /// The mixer over `u` (`[batch, tokens, d_model]`, already normed), continuing `prev` (a
    /// fresh zero state when `None`). Returns the output and the state after the last slot.
    fn forward(
        &self,
        u: Tensor<3>,
        mask: Option<&RealMask>,
        prev: Option<&LayerState>,
    ) -> Result<(Tensor<3>, LayerState)> {
        let [b, t, _] = u.dims();
        let (di, n, r) = (self.d_inner, self.d_state, self.dt_rank);
        let device = u.device();
        let xz = self.in_proj.forward(u);
        let x = RealMask::zero_pads(mask, xz.clone().narrow(2, 0, di));
        let z = xz.narrow(2, di, di);

        // Causal depthwise convolution: `conv_kernel` shifted multiply-adds over the sequence
        // with the previous inputs (zeros for a fresh state) in front.
        let k = self.conv_taps.len();
        let before = match prev {
            Some(s) => s.window.clone(),
            None => Tensor::zeros([b, k - 1, di], &device),
        };
        let padded = Tensor::cat(vec![before, x], 1);
        let mut conv = padded.clone().narrow(1, 0, t) * self.conv_taps[0].clone();
        for (tap, w) in self.conv_taps.iter().enumerate().skip(1) {
            conv = conv + padded.clone().narrow(1, tap, t) * w.clone();
        }
        if let Some(bias) = &self.conv_bias {
            conv = conv + bias.clone();
        }
        let window = padded.narrow(1, t, k - 1);
        let x = RealMask::zero_pads(mask, self.act.apply(conv));

        let x_dbl = self.x_proj.forward(x.clone());
        let dt = softplus(self.dt_proj.forward(x_dbl.clone().narrow(2, 0, r)), 1.0);
        let b_sel = x_dbl.clone().narrow(2, r, n);
        let c_sel = x_dbl.narrow(2, r + n, n);

        let host_dt = to_host(dt, "mamba dt")?;
        let host_x = to_host(x.clone(), "mamba conv output")?;
        let host_b = to_host(b_sel, "mamba B")?;
        let host_c = to_host(c_sel, "mamba C")?;
        let mut ssm = match prev {
            Some(s) => s.ssm.clone(),
            None => vec![0.0; b * di * n],
        };
        let y = selective_scan(
            ScanDims {
                batch: b,
                tokens: t,
                d_inner: di,
                d_state: n,
            },
            &ScanInputs {
                a: &self.a,
                dt: &host_dt,
                x: &host_x,
                b: &host_b,
                c: &host_c,
            },
            &mut ssm,
            |row, j| RealMask::is_real(mask, row, j, t),
        );
        let y = from_host(y, [b, t, di], &device) + x * self.d.clone();
        let out = self.out_proj.forward(y * self.act.apply(z));
        Ok((out, LayerState { window, ssm }))
    }
}

/// Mixer sizes, from the config.
struct Dims {
    d_inner: usize,
    d_state: usize,
    dt_rank: usize,
    conv_kernel: usize,
}

/// One residual block.
struct Block {
    norm: RmsNorm,
    mixer: Mixer,
}

/// A loaded Mamba model.
pub struct Mamba {
    info: ModelInfo,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    norm_f: RmsNorm,
    lm_head: Linear,
}

/// Loads a Mamba model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    Mamba::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

impl Mamba {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: MambaConfig = files.config()?;
        let bad = |msg: String| Error::model(path, msg);
        let d = cfg.hidden_size;
        if d == 0 || cfg.num_hidden_layers == 0 || cfg.vocab_size == 0 || cfg.state_size == 0 {
            return Err(bad(
                "`hidden_size`, `num_hidden_layers`, `vocab_size` and `state_size` must be positive"
                    .into(),
            ));
        }
        if cfg.conv_kernel < 2 {
            return Err(bad(format!(
                "field `conv_kernel`: {} (expected at least 2)",
                cfg.conv_kernel
            )));
        }
        let dt_rank = match &cfg.time_step_rank {
            None => d.div_ceil(16),
            Some(TimeStepRank::Rank(r)) => *r,
            Some(TimeStepRank::Named(s)) if s == "auto" => d.div_ceil(16),
            Some(TimeStepRank::Named(s)) => {
                return Err(bad(format!(
                    "field `time_step_rank`: `{s}` (expected a number or \"auto\")"
                )));
            }
        };
        let d_inner = cfg.intermediate_size.unwrap_or(cfg.expand * d);
        if dt_rank == 0 || d_inner == 0 {
            return Err(bad(
                "`time_step_rank` and `intermediate_size` must be positive".into(),
            ));
        }
        let dims = Dims {
            d_inner,
            d_state: cfg.state_size,
            dt_rank,
            conv_kernel: cfg.conv_kernel,
        };
        let act = ActFn::from_hf(&cfg.hidden_act, path)?;
        let eps = cfg.layer_norm_epsilon;

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        // HF's `load_hook` accepts the older `backbone.embedding` name too.
        let embed_name = if !w.contains("backbone.embeddings.weight")
            && w.contains("backbone.embedding.weight")
        {
            "backbone.embedding"
        } else {
            "backbone.embeddings"
        };
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let (embed, lm_head) = if tied {
            let head = Linear::load(&mut w, embed_name, d, cfg.vocab_size, false)?;
            (Embedding::tied_to(&head), head)
        } else {
            let embed =
                Embedding::load(&mut w, &format!("{embed_name}.weight"), cfg.vocab_size, d)?;
            (
                embed,
                Linear::load(&mut w, "lm_head", d, cfg.vocab_size, false)?,
            )
        };
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("backbone.layers.{l}");
            blocks.push(Block {
                norm: RmsNorm::load(&mut w, &format!("{p}.norm.weight"), d, eps, false)?,
                mixer: Mixer::load(
                    &mut w,
                    &format!("{p}.mixer"),
                    d,
                    &dims,
                    cfg.use_bias,
                    cfg.use_conv_bias,
                    act,
                )?,
            });
        }
        let norm_f = RmsNorm::load(&mut w, "backbone.norm_f.weight", d, eps, false)?;

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "mamba".into(),
            model_type: cfg.model_type.clone(),
            n_layers: cfg.num_hidden_layers,
            d_model: d,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            d_ff: d_inner,
            vocab_size: cfg.vocab_size,
            context_length: usize::MAX,
            norm: NormKind::RmsNorm {
                eps,
                unit_offset: false,
            },
            hidden_states: HiddenStatesLayout::BlocksOnly,
            has_attention: false,
            causal: true,
            has_lm_head: true,
            n_params: w.n_params(),
        };
        Ok(Self {
            info,
            device: device.clone(),
            embed,
            blocks,
            norm_f,
            lm_head,
        })
    }

    /// Mamba blocks have no MLP sublayer: capturing or editing `mlp_out` is an invalid request
    /// rather than a capture that silently never appears.
    fn reject_mlp_sites(&self, plan: &CapturePlan) -> Result<()> {
        let edited = plan.interventions().iter().filter_map(|i| match i {
            Intervention::Edit { site, .. } => Some(*site),
            Intervention::BlockAttention(_) => None,
        });
        match plan
            .sites()
            .map(|(s, _)| *s)
            .chain(edited)
            .find(|s| s.kind() == SiteKind::MlpOut)
        {
            Some(site) => Err(Error::InvalidRequest(format!(
                "`{site}`: `{}` (mamba) has no MLP sublayer; its mixer output is `attn_out`",
                self.info.name
            ))),
            None => Ok(()),
        }
    }

    /// The forward pass, from a fresh state or continuing `cache`.
    fn run(
        &self,
        batch: &TokenBatch,
        plan: &CapturePlan,
        cache: Option<&mut MambaState>,
    ) -> Result<Captures> {
        plan.validate(&self.info)?;
        self.reject_mlp_sites(plan)?;
        if let Some(c) = cache.as_deref() {
            check_step(batch, c.rows)?;
        }
        let n_layers = self.info.n_layers;
        // A cache must hold every layer; otherwise stop after the deepest block the plan needs.
        let n_blocks = if cache.is_some() {
            n_layers
        } else {
            plan.blocks_needed(n_layers)
        };
        let mask = RealMask::of(batch, &self.device);
        let mut rec = Recorder::new(plan, batch);
        let mut x = rec.point(
            Site::Embed,
            self.embed.forward_batch(batch, &self.info.name)?,
        )?;
        let mut states = Vec::with_capacity(n_blocks);
        for (l, block) in self.blocks[..n_blocks].iter().enumerate() {
            let prev = cache.as_deref().and_then(|c| c.layers.get(l));
            let (out, state) =
                block
                    .mixer
                    .forward(block.norm.forward(x.clone()), mask.as_ref(), prev)?;
            let out = rec.point(Site::AttnOut(l), out)?;
            x = rec.point(Site::ResidPost(l), x + out)?;
            states.push(state);
        }
        strata_blocks::final_norm_and_logits(
            &mut rec,
            x,
            |x| self.norm_f.forward(x),
            |x| self.lm_head.forward(x),
        )?;
        // Only a step that completed on every layer changes the cache.
        if let Some(c) = cache {
            c.rows = Some(batch.batch_size());
            c.layers = states;
        }
        Ok(rec.finish())
    }
}

strata_blocks::language_model!(Mamba, MambaState, |_| MambaState::default());

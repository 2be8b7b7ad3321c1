//! `strata-model-rwkv`: RWKV-4 recurrent language models (HF `model_type` `rwkv`,
//! `RwkvForCausalLM`), loaded from a Hugging Face config and HF-named weights.
//!
//! Block `l` (block 0 first applies `pre_ln` to the embeddings):
//! `x += time_mix(ln1(x))`, `x += channel_mix(ln2(x))`; then `ln_out` and the untied `head`
//! after the last block. Both mixes use *token shift*: `shifted_t = input_{t−1}` (zeros before
//! the first token), and each projection reads `input·μ + shifted·(1 − μ)` with its own
//! `time_mix_*` weights μ.
//!
//! - time mix: `k = key(·)`, `v = value(·)`, `r = sigmoid(receptance(·))`,
//!   `output(r · wkv(k, v))` with `w = −exp(time_decay)`, `u = time_first` and the WKV recurrence
//!   computed in float32 with the running-maximum trick exactly as HF's CPU path
//!   (`rwkv_linear_attention_cpu`, see [`wkv::wkv`]);
//! - channel mix: `sigmoid(receptance(·)) · value(relu(key(·))²)`.
//!
//! `rescale_every` (HF default 6 when the config omits it; 0 disables it) is honoured as HF does in
//! inference mode: block `l`'s `attention.output` and `feed_forward.value` weights are divided by
//! `2^(l / rescale_every)` at load time, and the hidden state is halved after every block `l` with
//! `(l + 1) % rescale_every == 0`. `ln_out` uses LayerNorm's default eps (1e-5) as HF's does; the
//! block norms use `layer_norm_epsilon`.
//!
//! **Canonical sites.** `embed` (token embeddings, before `pre_ln`), `attn_out.l` (the time-mix
//! output before the residual add: what HF returns as RWKV's "attentions"), `mlp_out.l` (the
//! channel-mix output before the residual add), `resid_post.l` (block output, after any
//! rescaling halving), `final_norm` (`ln_out`), `logits`. There are no attention probabilities:
//! `attn_pattern` captures and attention-key masks are rejected as invalid requests. HF's
//! `hidden_states` is `[resid_post.0, …, resid_post.{L-2}, final_norm]`
//! ([`HiddenStatesLayout::BlocksOnly`]).
//!
//! **Cost.** The projections run as burn tensor ops over the whole sequence; the WKV recurrence
//! (`O(T · attention_hidden_size)` per row and layer) reads `k` and `v` back once per layer and
//! runs as one host loop over contiguous `f32` buffers, then uploads the result.
//!
//! **Padding and decoding.** Pad slots are zeroed before the token shift and skipped by the WKV
//! recurrence, so a left- or right-padded row gives at its real positions what it gives alone.
//! The [`DecodeCache`] is the recurrent state of every layer: the last token's `ln1` and `ln2`
//! outputs (the token-shift inputs) and the WKV numerator, denominator and maximum per channel.
//! Models are recurrent: there is no position limit (`context_length` is `usize::MAX`; the
//! config's `context_length` only sizes HF's CUDA kernel).

mod wkv;

use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor};
use serde::Deserialize;
use strata_blocks::recurrent::{
    LayerRows, RealMask, RecurrentState, check_step, from_host, to_host,
};
use strata_blocks::{Embedding, LayerNorm, Linear, WeightLoader};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, Error, HiddenStatesLayout, LanguageModel,
    ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, TokenBatch,
};

use crate::wkv::{WkvState, wkv};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "rwkv",
        description: "RWKV-4 recurrent language models (HF RwkvForCausalLM; time/channel mix, recurrent decoding)",
        model_types: &["rwkv"],
        gguf_architectures: &[],
        from_gguf: None,
        load,
    }
}

/// The `config.json` fields this family reads; defaults as in HF's `RwkvConfig`.
#[derive(Debug, Deserialize)]
struct RwkvConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    /// Defaults to `hidden_size`.
    #[serde(default)]
    attention_hidden_size: Option<usize>,
    /// Defaults to `4 · hidden_size`.
    #[serde(default)]
    intermediate_size: Option<usize>,
    #[serde(default = "default_eps")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_rescale_every")]
    rescale_every: usize,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_rescale_every() -> usize {
    6
}

/// `ln_out` is `nn.LayerNorm(hidden_size)` in HF: PyTorch's default eps, whatever the config.
const LN_OUT_EPS: f64 = 1e-5;

/// Token-shift mixing weights: `x·μ + shifted·(1 − μ)`, both `[1, 1, width]`.
struct ShiftMix {
    mix: Tensor<3>,
    rest: Tensor<3>,
}

impl ShiftMix {
    fn load(w: &mut WeightLoader<'_>, name: &str, d: usize) -> Result<Self> {
        let mix = w.tensor::<3>(name, [1, 1, d])?;
        let rest = mix.clone().neg().add_scalar(1.0);
        Ok(Self { mix, rest })
    }

    fn apply(&self, x: &Tensor<3>, shifted: &Tensor<3>) -> Tensor<3> {
        x.clone() * self.mix.clone() + shifted.clone() * self.rest.clone()
    }
}

/// `shifted_t = x_{t−1}`, with `first` (the previous step's last input, or zeros) at `t = 0`.
fn token_shift(x: &Tensor<3>, first: Option<&Tensor<3>>) -> Tensor<3> {
    let [b, t, d] = x.dims();
    let first = first
        .cloned()
        .unwrap_or_else(|| Tensor::zeros([b, 1, d], &x.device()));
    if t == 1 {
        first
    } else {
        Tensor::cat(vec![first, x.clone().narrow(1, 0, t - 1)], 1)
    }
}

/// The last slot of `x` (`[batch, 1, width]`): the next step's token-shift input.
fn last_slot(x: &Tensor<3>) -> Tensor<3> {
    let t = x.dims()[1];
    x.clone().narrow(1, t - 1, 1)
}

/// RWKV's time mix (its "attention").
struct TimeMix {
    mix_k: ShiftMix,
    mix_v: ShiftMix,
    mix_r: ShiftMix,
    key: Linear,
    value: Linear,
    receptance: Linear,
    output: Linear,
    /// `w = −exp(time_decay)` and `u = time_first`, `[attention_hidden_size]`, on the host.
    w: Vec<f32>,
    u: Vec<f32>,
}

/// RWKV's channel mix (its MLP).
struct ChannelMix {
    mix_k: ShiftMix,
    mix_r: ShiftMix,
    key: Linear,
    receptance: Linear,
    value: Linear,
}

/// One layer's recurrent state.
#[derive(Debug, Clone)]
struct LayerState {
    /// The last token's `ln1` output, `[batch, 1, hidden]`.
    att_shift: Tensor<3>,
    /// The last token's `ln2` output, `[batch, 1, hidden]`.
    ffn_shift: Tensor<3>,
    /// `[batch, attention_hidden_size]`.
    wkv: Vec<WkvState>,
}

impl LayerRows for LayerState {
    fn repeat_rows(&self, rows: usize, n: usize) -> Self {
        Self {
            att_shift: strata_blocks::repeat_rows(&self.att_shift, n),
            ffn_shift: strata_blocks::repeat_rows(&self.ffn_shift, n),
            wkv: strata_blocks::repeat_host_rows(&self.wkv, rows, n),
        }
    }
}

/// The decoding state of an RWKV model (what its [`DecodeCache`] holds).
type RwkvState = RecurrentState<LayerState>;

impl TimeMix {
    fn load(w: &mut WeightLoader<'_>, p: &str, d: usize, a: usize, out_scale: f32) -> Result<Self> {
        let decay_name = format!("{p}.time_decay");
        let decay = w.tensor::<1>(&decay_name, [a])?.exp().neg();
        let first_name = format!("{p}.time_first");
        let first = w.tensor::<1>(&first_name, [a])?;
        let output = Linear::load(w, &format!("{p}.output"), a, d, false)?;
        Ok(Self {
            mix_k: ShiftMix::load(w, &format!("{p}.time_mix_key"), d)?,
            mix_v: ShiftMix::load(w, &format!("{p}.time_mix_value"), d)?,
            mix_r: ShiftMix::load(w, &format!("{p}.time_mix_receptance"), d)?,
            key: Linear::load(w, &format!("{p}.key"), d, a, false)?,
            value: Linear::load(w, &format!("{p}.value"), d, a, false)?,
            receptance: Linear::load(w, &format!("{p}.receptance"), d, a, false)?,
            output: rescaled(output, out_scale),
            w: to_host(decay, &decay_name)?,
            u: to_host(first, &first_name)?,
        })
    }

    /// The time mix over `x` (`[batch, tokens, hidden]`, `ln1` output with pads zeroed),
    /// continuing `prev`. Returns the output and the new shift input and WKV state.
    fn forward(
        &self,
        x: &Tensor<3>,
        mask: Option<&RealMask>,
        prev: Option<&LayerState>,
    ) -> Result<(Tensor<3>, Vec<WkvState>)> {
        let [b, t, _] = x.dims();
        let a = self.w.len();
        let shifted = token_shift(x, prev.map(|s| &s.att_shift));
        let k = self.key.forward(self.mix_k.apply(x, &shifted));
        let v = self.value.forward(self.mix_v.apply(x, &shifted));
        let r = sigmoid(self.receptance.forward(self.mix_r.apply(x, &shifted)));
        let mut state = match prev {
            Some(s) => s.wkv.clone(),
            None => vec![WkvState::FRESH; b * a],
        };
        let out = wkv(
            (b, t, a),
            &self.w,
            &self.u,
            &to_host(k, "rwkv key")?,
            &to_host(v, "rwkv value")?,
            &mut state,
            |row, j| RealMask::is_real(mask, row, j, t),
        );
        let out = from_host(out, [b, t, a], &x.device());
        Ok((self.output.forward(r * out), state))
    }
}

impl ChannelMix {
    fn load(
        w: &mut WeightLoader<'_>,
        p: &str,
        d: usize,
        d_ff: usize,
        out_scale: f32,
    ) -> Result<Self> {
        let value = Linear::load(w, &format!("{p}.value"), d_ff, d, false)?;
        Ok(Self {
            mix_k: ShiftMix::load(w, &format!("{p}.time_mix_key"), d)?,
            mix_r: ShiftMix::load(w, &format!("{p}.time_mix_receptance"), d)?,
            key: Linear::load(w, &format!("{p}.key"), d, d_ff, false)?,
            receptance: Linear::load(w, &format!("{p}.receptance"), d, d, false)?,
            value: rescaled(value, out_scale),
        })
    }

    /// The channel mix over `x` (`ln2` output with pads zeroed), continuing `prev`.
    fn forward(&self, x: &Tensor<3>, prev: Option<&LayerState>) -> Tensor<3> {
        let shifted = token_shift(x, prev.map(|s| &s.ffn_shift));
        let k = relu(self.key.forward(self.mix_k.apply(x, &shifted))).square();
        let r = sigmoid(self.receptance.forward(self.mix_r.apply(x, &shifted)));
        r * self.value.forward(k)
    }
}

/// `lin` with its weight divided by `scale` (HF's inference-time rescaling; 1 leaves it alone).
fn rescaled(lin: Linear, scale: f32) -> Linear {
    if scale == 1.0 {
        lin
    } else {
        Linear::new(lin.weight().div_scalar(scale), lin.bias().cloned())
    }
}

/// One residual block.
struct Block {
    pre_ln: Option<LayerNorm>,
    ln1: LayerNorm,
    att: TimeMix,
    ln2: LayerNorm,
    ffn: ChannelMix,
    /// Halve the hidden state after this block (`rescale_every`).
    halve: bool,
}

/// A loaded RWKV-4 model.
pub struct Rwkv {
    info: ModelInfo,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    ln_out: LayerNorm,
    head: Linear,
}

/// Loads an RWKV model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    Rwkv::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

impl Rwkv {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: RwkvConfig = files.config()?;
        let d = cfg.hidden_size;
        let a = cfg.attention_hidden_size.unwrap_or(d);
        let d_ff = cfg.intermediate_size.unwrap_or(4 * d);
        if d == 0 || a == 0 || d_ff == 0 || cfg.num_hidden_layers == 0 || cfg.vocab_size == 0 {
            return Err(Error::model(
                path,
                "`hidden_size`, `attention_hidden_size`, `intermediate_size`, \
                 `num_hidden_layers` and `vocab_size` must be positive",
            ));
        }
        let eps = cfg.layer_norm_epsilon;
        let every = cfg.rescale_every;

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        let (embed, head) = if cfg.tie_word_embeddings {
            let head = Linear::load(&mut w, "rwkv.embeddings", d, cfg.vocab_size, false)?;
            (Embedding::tied_to(&head), head)
        } else {
            let embed = Embedding::load(&mut w, "rwkv.embeddings.weight", cfg.vocab_size, d)?;
            (
                embed,
                Linear::load(&mut w, "head", d, cfg.vocab_size, false)?,
            )
        };
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("rwkv.blocks.{l}");
            let out_scale = match l.checked_div(every) {
                Some(halvings) => 2f32.powi(i32::try_from(halvings).unwrap_or(i32::MAX)),
                None => 1.0,
            };
            blocks.push(Block {
                pre_ln: if l == 0 {
                    Some(LayerNorm::load(&mut w, &format!("{p}.pre_ln"), d, eps)?)
                } else {
                    None
                },
                ln1: LayerNorm::load(&mut w, &format!("{p}.ln1"), d, eps)?,
                att: TimeMix::load(&mut w, &format!("{p}.attention"), d, a, out_scale)?,
                ln2: LayerNorm::load(&mut w, &format!("{p}.ln2"), d, eps)?,
                ffn: ChannelMix::load(&mut w, &format!("{p}.feed_forward"), d, d_ff, out_scale)?,
                halve: every > 0 && (l + 1) % every == 0,
            });
        }
        let ln_out = LayerNorm::load(&mut w, "rwkv.ln_out", d, LN_OUT_EPS)?;

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "rwkv".into(),
            model_type: cfg.model_type.clone(),
            n_layers: cfg.num_hidden_layers,
            d_model: d,
            n_heads: 0,
            n_kv_heads: 0,
            head_dim: 0,
            d_ff,
            vocab_size: cfg.vocab_size,
            context_length: usize::MAX,
            norm: NormKind::LayerNorm { eps: LN_OUT_EPS },
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
            ln_out,
            head,
        })
    }

    /// The forward pass, from a fresh state or continuing `cache`.
    fn run(
        &self,
        batch: &TokenBatch,
        plan: &CapturePlan,
        cache: Option<&mut RwkvState>,
    ) -> Result<Captures> {
        plan.validate(&self.info)?;
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
        let mask = mask.as_ref();
        let mut rec = Recorder::new(plan, batch);
        let mut x = rec.point(
            Site::Embed,
            self.embed.forward_batch(batch, &self.info.name)?,
        )?;
        let mut states = Vec::with_capacity(n_blocks);
        for (l, block) in self.blocks[..n_blocks].iter().enumerate() {
            let prev = cache.as_deref().and_then(|c| c.layers.get(l));
            if let Some(pre_ln) = &block.pre_ln {
                x = pre_ln.forward(x);
            }
            let att_in = RealMask::zero_pads(mask, block.ln1.forward(x.clone()));
            let (att, wkv) = block.att.forward(&att_in, mask, prev)?;
            let att = rec.point(Site::AttnOut(l), att)?;
            x = x + att;
            let ffn_in = RealMask::zero_pads(mask, block.ln2.forward(x.clone()));
            let ffn = rec.point(Site::MlpOut(l), block.ffn.forward(&ffn_in, prev))?;
            x = x + ffn;
            if block.halve {
                x = x.div_scalar(2.0);
            }
            x = rec.point(Site::ResidPost(l), x)?;
            states.push(LayerState {
                att_shift: last_slot(&att_in),
                ffn_shift: last_slot(&ffn_in),
                wkv,
            });
        }
        strata_blocks::final_norm_and_logits(
            &mut rec,
            x,
            |x| self.ln_out.forward(x),
            |x| self.head.forward(x),
        )?;
        // Only a step that completed on every layer changes the cache.
        if let Some(c) = cache {
            c.rows = Some(batch.batch_size());
            c.layers = states;
        }
        Ok(rec.finish())
    }
}

strata_blocks::language_model!(Rwkv, RwkvState, |_| RwkvState::default());

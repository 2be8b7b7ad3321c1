//! `strata-model-gpt2`: GPT-2-family decoders (GPT-2 of every size, DistilGPT2; `model_type`
//! `gpt2`) loaded from a Hugging Face config and HF-named weights.
//!
//! Block `l` (pre-norm): `x += attn(ln_1(x))`, `x += mlp(ln_2(x))`, then `ln_f` and the head
//! after the last block. Every projection is a `Conv1D` (weights stored `[in, out]`, with
//! biases); `c_attn` packs q|k|v along its output; positions are learned (`wpe`); the head is
//! tied to `wte` unless the checkpoint has its own `lm_head.weight` and the config unties it.
//!
//! Canonical capture points: `embed` (`wte[ids] + wpe[pos]`), `attn_out.l` / `mlp_out.l` (branch
//! outputs before the residual add), `resid_post.l` (block output), `final_norm` (`ln_f`),
//! `logits`. HF's `hidden_states` is `[embed, resid_post.0, …, resid_post.{L-2}, final_norm]`.
//!
//! Tensor names: the transformers port's `transformer.h.0.attn.c_attn.weight`, and the bare
//! `h.0.attn.c_attn.weight` of OpenAI's checkpoints as published on the hub (`gpt2`,
//! `distilgpt2`); the prefix is detected from the token embedding.

use burn::tensor::{Bool, Device, Int, Tensor, TensorData};
use serde::Deserialize;
use strata_blocks::{
    ActFn, Attention, AttentionConfig, AttentionContext, AttentionLayout, Embedding, KvCache,
    LayerNorm, Linear, MaskSpec, Mlp, WeightLoader,
};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, Error, HiddenStatesLayout, LanguageModel,
    ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, TokenBatch,
};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "gpt2",
        description: "GPT-2-family decoders: GPT-2 (all sizes), DistilGPT2 (Conv1D weights, learned positions, tied head)",
        model_types: &["gpt2"],
        gguf_architectures: &[],
        from_gguf: None,
        load,
    }
}

/// The `config.json` fields this family reads (HF `GPT2Config`, whose `attribute_map` also
/// accepts the generic names given as aliases). Sizes are required; flags default as in HF.
#[derive(Debug, Deserialize)]
struct Gpt2Config {
    vocab_size: usize,
    #[serde(alias = "hidden_size")]
    n_embd: usize,
    #[serde(alias = "num_hidden_layers")]
    n_layer: usize,
    #[serde(alias = "num_attention_heads")]
    n_head: usize,
    /// Defaults to `4 · n_embd`.
    #[serde(default)]
    n_inner: Option<usize>,
    #[serde(alias = "max_position_embeddings", default = "default_n_positions")]
    n_positions: usize,
    #[serde(default = "default_layer_norm_epsilon")]
    layer_norm_epsilon: f64,
    #[serde(default = "default_activation_function")]
    activation_function: String,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
    /// Scores are divided by `sqrt(head_dim)`.
    #[serde(default = "yes")]
    scale_attn_weights: bool,
    /// Scores of layer `l` are further divided by `l + 1`.
    #[serde(default)]
    scale_attn_by_inverse_layer_idx: bool,
}

fn default_n_positions() -> usize {
    1024
}

fn default_layer_norm_epsilon() -> f64 {
    1e-5
}

fn default_activation_function() -> String {
    "gelu_new".into()
}

fn yes() -> bool {
    true
}

/// One decoder block.
struct Block {
    ln_1: LayerNorm,
    attn: Attention,
    ln_2: LayerNorm,
    mlp: Mlp,
}

/// A loaded GPT-2-family model.
pub struct Gpt2 {
    info: ModelInfo,
    device: Device,
    wte: Embedding,
    wpe: Embedding,
    blocks: Vec<Block>,
    ln_f: LayerNorm,
    lm_head: Linear,
}

/// Loads a GPT-2-family model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    Gpt2::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

impl Gpt2 {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: Gpt2Config = files.config()?;
        let bad = |msg: String| Error::model(path, msg);
        let (d, n_heads, vocab) = (cfg.n_embd, cfg.n_head, cfg.vocab_size);
        if n_heads == 0 || cfg.n_layer == 0 || d == 0 || vocab == 0 || cfg.n_positions == 0 {
            return Err(bad(
                "`n_embd`, `n_head`, `n_layer`, `n_positions` and `vocab_size` must be positive"
                    .into(),
            ));
        }
        if !d.is_multiple_of(n_heads) {
            return Err(bad(format!(
                "`n_embd` {d} is not a multiple of `n_head` {n_heads}"
            )));
        }
        let head_dim = d / n_heads;
        let d_ff = cfg.n_inner.unwrap_or(4 * d);
        let attn_cfg = AttentionConfig::new(n_heads, n_heads, head_dim)
            .map_err(|e| bad(format!("field `n_head`: {e}")))?;
        let act = ActFn::from_hf_field(&cfg.activation_function, "activation_function", path)?;

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        let prefix = if w.contains("transformer.wte.weight") {
            "transformer."
        } else if w.contains("wte.weight") {
            ""
        } else {
            return Err(Error::model(
                w.origin(),
                "no token embedding: neither `transformer.wte.weight` nor `wte.weight` is in the \
                 checkpoint",
            ));
        };
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let (wte, lm_head) = if tied {
            let head = Linear::load(&mut w, &format!("{prefix}wte"), d, vocab, false)?;
            (Embedding::tied_to(&head), head)
        } else {
            let wte = Embedding::load(&mut w, &format!("{prefix}wte.weight"), vocab, d)?;
            (wte, Linear::load(&mut w, "lm_head", d, vocab, false)?)
        };
        let wpe = Embedding::load(&mut w, &format!("{prefix}wpe.weight"), cfg.n_positions, d)?;
        let eps = cfg.layer_norm_epsilon;
        let mut blocks = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let p = format!("{prefix}h.{l}");
            let mut scale = if cfg.scale_attn_weights {
                attn_cfg.scale
            } else {
                1.0
            };
            if cfg.scale_attn_by_inverse_layer_idx {
                scale /= (l + 1) as f64;
            }
            let c_attn = Linear::load_conv1d(&mut w, &format!("{p}.attn.c_attn"), d, 3 * d, true)?;
            let c_proj = Linear::load_conv1d(&mut w, &format!("{p}.attn.c_proj"), d, d, true)?;
            let c_fc = Linear::load_conv1d(&mut w, &format!("{p}.mlp.c_fc"), d, d_ff, true)?;
            let mlp_proj = Linear::load_conv1d(&mut w, &format!("{p}.mlp.c_proj"), d_ff, d, true)?;
            blocks.push(Block {
                ln_1: LayerNorm::load(&mut w, &format!("{p}.ln_1"), d, eps)?,
                attn: Attention::from_fused(attn_cfg.with_scale(scale), c_attn, c_proj),
                ln_2: LayerNorm::load(&mut w, &format!("{p}.ln_2"), d, eps)?,
                mlp: Mlp::new(c_fc, mlp_proj, act),
            });
        }
        let ln_f = LayerNorm::load(&mut w, &format!("{prefix}ln_f"), d, eps)?;

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "gpt2".into(),
            model_type: "gpt2".into(),
            n_layers: cfg.n_layer,
            d_model: d,
            n_heads,
            n_kv_heads: n_heads,
            head_dim,
            d_ff,
            vocab_size: vocab,
            context_length: cfg.n_positions,
            norm: NormKind::LayerNorm { eps },
            hidden_states: HiddenStatesLayout::EmbedThenBlocks,
            has_attention: true,
            causal: true,
            has_lm_head: true,
            n_params: w.n_params(),
        };
        Ok(Self {
            info,
            device: device.clone(),
            wte,
            wpe,
            blocks,
            ln_f,
            lm_head,
        })
    }

    /// `wte[ids] + wpe[pos]`, each slot at its own position id (padding slots are never read).
    fn embed(&self, batch: &TokenBatch, layout: &AttentionLayout) -> Result<Tensor<3>> {
        let tokens = self.wte.forward_batch(batch, &self.info.name)?;
        let positions = layout.position_ids();
        let shape = [positions.len(), layout.n_query()];
        let ids: Vec<i64> = positions.iter().flatten().map(|&p| p as i64).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, shape), &self.device);
        Ok(tokens + self.wpe.forward(ids))
    }

    /// The forward pass, with or without a cache.
    fn run(
        &self,
        batch: &TokenBatch,
        plan: &CapturePlan,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Captures> {
        let (layout, n_blocks) =
            strata_blocks::begin_attention_forward(&self.info, plan, batch, cache.as_deref())?;
        let mut rec = Recorder::new(plan, batch);
        let mut x = rec.point(Site::Embed, self.embed(batch, &layout)?)?;

        let mask: Tensor<4, Bool> = layout.mask(MaskSpec::CAUSAL, &self.device);
        let ctx = AttentionContext {
            layout: &layout,
            mask: &mask,
            causal: true,
            rope: None,
        };
        for (l, block) in self.blocks[..n_blocks].iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| c.layer_mut(l));
            let attn = block
                .attn
                .forward(block.ln_1.forward(x.clone()), l, &ctx, &mut rec, kv)?;
            x = strata_blocks::residual(x, rec.point(Site::AttnOut(l), attn)?);
            let mlp = rec.point(
                Site::MlpOut(l),
                block.mlp.forward(block.ln_2.forward(x.clone())),
            )?;
            x = rec.point(Site::ResidPost(l), strata_blocks::residual(x, mlp))?;
        }

        strata_blocks::final_norm_and_logits(
            &mut rec,
            x,
            |x| self.ln_f.forward(x),
            |x| self.lm_head.forward(x),
        )?;
        if let Some(c) = cache {
            c.commit(&layout);
        }
        Ok(rec.finish())
    }
}

strata_blocks::language_model!(Gpt2, KvCache, |m| KvCache::new(m.info.n_layers));

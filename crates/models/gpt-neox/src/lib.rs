//! `strata-model-gpt-neox`: GPT-NeoX-family decoders (Pythia, GPT-NeoX; `model_type`
//! `gpt_neox`) loaded from a Hugging Face config and HF-named weights.
//!
//! Block `l` with `use_parallel_residual` (Pythia, the default):
//! `x + attn(input_layernorm(x)) + mlp(post_attention_layernorm(x))`; without it, sequential:
//! `x += attn(input_layernorm(x))`, `x += mlp(post_attention_layernorm(x))`. Then
//! `final_layer_norm` and the untied `embed_out` head after the last block.
//!
//! `query_key_value` is interleaved per head (its output is `[heads, 3, head_dim]` per token);
//! it is regrouped once at load time into the q|k|v layout of the shared attention block. Rotary
//! embeddings (HF `rotate_half`) cover the first `rotary_pct` / `partial_rotary_factor` of each
//! head; both config forms (`rope_parameters`, or top-level `rotary_pct`, `rotary_emb_base` /
//! `rope_theta`) are read.
//!
//! Canonical capture points: `embed` (`embed_in[ids]`), `attn_out.l` / `mlp_out.l` (branch
//! outputs before they join the residual), `resid_post.l` (block output), `final_norm`,
//! `logits`. HF's `hidden_states` is `[embed, resid_post.0, …, resid_post.{L-2}, final_norm]`.

use burn::tensor::{Bool, Device, Tensor};
use serde::Deserialize;
use strata_blocks::{
    ActFn, Attention, AttentionConfig, AttentionContext, Embedding, KvCache, LayerNorm, Linear,
    MaskSpec, Mlp, Rope, RopeConfig, WeightLoader,
};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, Error, HiddenStatesLayout, LanguageModel,
    ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, TokenBatch,
};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "gpt-neox",
        description: "GPT-NeoX-family decoders: Pythia, GPT-NeoX (parallel residual, partial rotary, interleaved qkv)",
        model_types: &["gpt_neox"],
        gguf_architectures: &[],
        from_gguf: None,
        load,
    }
}

/// The `config.json` fields this family reads (HF `GPTNeoXConfig`; the rotary settings are read
/// by [`RopeConfig::from_hf_config`]). Sizes are required; flags default as in HF.
#[derive(Debug, Deserialize)]
struct NeoxConfig {
    vocab_size: usize,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "yes")]
    use_parallel_residual: bool,
    /// Biases on `query_key_value` and `dense`.
    #[serde(default = "yes")]
    attention_bias: bool,
    #[serde(default)]
    tie_word_embeddings: bool,
}

fn default_hidden_act() -> String {
    "gelu".into()
}

fn default_layer_norm_eps() -> f64 {
    1e-5
}

fn default_max_position_embeddings() -> usize {
    2048
}

fn yes() -> bool {
    true
}

/// One decoder layer.
struct Block {
    input_norm: LayerNorm,
    attn: Attention,
    post_norm: LayerNorm,
    mlp: Mlp,
}

/// A loaded GPT-NeoX-family model.
pub struct GptNeox {
    info: ModelInfo,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    final_norm: LayerNorm,
    embed_out: Linear,
    rope: Rope,
    parallel_residual: bool,
}

/// Loads a GPT-NeoX-family model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    GptNeox::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

/// Regroups NeoX's per-head interleaved `query_key_value` (outputs ordered head, then q/k/v,
/// then dim) into all query heads, then all key heads, then all value heads.
fn regroup_qkv(qkv: Linear, n_heads: usize, head_dim: usize) -> Linear {
    let width = 3 * n_heads * head_dim;
    let d_in = qkv.in_features();
    let device = qkv.weight().device();
    let weight = qkv
        .weight()
        .reshape([d_in, n_heads, 3, head_dim])
        .swap_dims(1, 2)
        .reshape([d_in, width]);
    // A contiguous copy, so that every forward multiplies a plain row-major matrix.
    let weight = Tensor::from_data(weight.into_data(), &device);
    let bias = qkv.bias().map(|b| {
        b.clone()
            .reshape([n_heads, 3, head_dim])
            .swap_dims(0, 1)
            .reshape([width])
    });
    Linear::new(weight, bias)
}

impl GptNeox {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: NeoxConfig = files.config()?;
        let bad = |msg: String| Error::model(path, msg);
        let (d, n_heads, vocab) = (cfg.hidden_size, cfg.num_attention_heads, cfg.vocab_size);
        if n_heads == 0 || cfg.num_hidden_layers == 0 || d == 0 || vocab == 0 {
            return Err(bad(
                "`hidden_size`, `num_attention_heads`, `num_hidden_layers` and `vocab_size` must be positive".into(),
            ));
        }
        if !d.is_multiple_of(n_heads) {
            return Err(bad(format!(
                "`hidden_size` {d} is not a multiple of `num_attention_heads` {n_heads}"
            )));
        }
        let head_dim = d / n_heads;
        let attn_cfg = AttentionConfig::new(n_heads, n_heads, head_dim)
            .map_err(|e| bad(format!("field `num_attention_heads`: {e}")))?;
        let act = ActFn::from_hf(&cfg.hidden_act, path)?;
        let rope = Rope::new(&RopeConfig::from_hf_config(&files.config, path)?, head_dim)
            .map_err(|e| bad(e.to_string()))?;

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        let (embed, embed_out) = if cfg.tie_word_embeddings {
            let head = Linear::load(&mut w, "gpt_neox.embed_in", d, vocab, false)?;
            (Embedding::tied_to(&head), head)
        } else {
            let embed = Embedding::load(&mut w, "gpt_neox.embed_in.weight", vocab, d)?;
            (embed, Linear::load(&mut w, "embed_out", d, vocab, false)?)
        };
        let (eps, bias, d_ff) = (
            cfg.layer_norm_eps,
            cfg.attention_bias,
            cfg.intermediate_size,
        );
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("gpt_neox.layers.{l}");
            let qkv = Linear::load(
                &mut w,
                &format!("{p}.attention.query_key_value"),
                d,
                3 * d,
                bias,
            )?;
            let dense = Linear::load(&mut w, &format!("{p}.attention.dense"), d, d, bias)?;
            let fc = Linear::load(&mut w, &format!("{p}.mlp.dense_h_to_4h"), d, d_ff, true)?;
            let proj = Linear::load(&mut w, &format!("{p}.mlp.dense_4h_to_h"), d_ff, d, true)?;
            blocks.push(Block {
                input_norm: LayerNorm::load(&mut w, &format!("{p}.input_layernorm"), d, eps)?,
                attn: Attention::from_fused(attn_cfg, regroup_qkv(qkv, n_heads, head_dim), dense),
                post_norm: LayerNorm::load(
                    &mut w,
                    &format!("{p}.post_attention_layernorm"),
                    d,
                    eps,
                )?,
                mlp: Mlp::new(fc, proj, act),
            });
        }
        let final_norm = LayerNorm::load(&mut w, "gpt_neox.final_layer_norm", d, eps)?;

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "gpt-neox".into(),
            model_type: "gpt_neox".into(),
            n_layers: cfg.num_hidden_layers,
            d_model: d,
            n_heads,
            n_kv_heads: n_heads,
            head_dim,
            d_ff,
            vocab_size: vocab,
            context_length: cfg.max_position_embeddings,
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
            embed,
            blocks,
            final_norm,
            embed_out,
            rope,
            parallel_residual: cfg.use_parallel_residual,
        })
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
        let mut x = rec.point(
            Site::Embed,
            self.embed.forward_batch(batch, &self.info.name)?,
        )?;

        let blocks = &self.blocks[..n_blocks];
        let rope =
            (!blocks.is_empty()).then(|| self.rope.tables(layout.position_ids(), &self.device));
        let mask: Tensor<4, Bool> = layout.mask(MaskSpec::CAUSAL, &self.device);
        let ctx = AttentionContext {
            layout: &layout,
            mask: &mask,
            causal: true,
            rope: rope.as_ref(),
        };
        for (l, block) in blocks.iter().enumerate() {
            let kv = cache.as_deref_mut().map(|c| c.layer_mut(l));
            let attn =
                block
                    .attn
                    .forward(block.input_norm.forward(x.clone()), l, &ctx, &mut rec, kv)?;
            let attn = rec.point(Site::AttnOut(l), attn)?;
            x = if self.parallel_residual {
                // HF: mlp_output + attn_output + residual, both branches reading the block input.
                let mlp = rec.point(
                    Site::MlpOut(l),
                    block.mlp.forward(block.post_norm.forward(x.clone())),
                )?;
                mlp + attn + x
            } else {
                let x = attn + x;
                let mlp = rec.point(
                    Site::MlpOut(l),
                    block.mlp.forward(block.post_norm.forward(x.clone())),
                )?;
                mlp + x
            };
            x = rec.point(Site::ResidPost(l), x)?;
        }

        strata_blocks::final_norm_and_logits(
            &mut rec,
            x,
            |x| self.final_norm.forward(x),
            |x| self.embed_out.forward(x),
        )?;
        if let Some(c) = cache {
            c.commit(&layout);
        }
        Ok(rec.finish())
    }
}

strata_blocks::language_model!(GptNeox, KvCache, |m| KvCache::new(m.info.n_layers));

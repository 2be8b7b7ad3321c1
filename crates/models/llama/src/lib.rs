//! `strata-model-llama`: Llama-family decoders — Llama 1-3, Mistral, SmolLM/SmolLM2 (`llama`
//! configs), Qwen2/2.5 — loaded from a Hugging Face config and HF-named weights.
//!
//! Block `l` (pre-norm): `x += attn(input_layernorm(x))`, `x += mlp(post_attention_layernorm(x))`,
//! then `norm` and `lm_head` after the last block. Canonical capture points: `embed` (token
//! embeddings), `attn_out.l` / `mlp_out.l` (branch outputs before the residual add),
//! `resid_post.l` (block output), `final_norm`, `logits`. HF's `hidden_states` is
//! `[embed, resid_post.0, …, resid_post.{L-2}, final_norm]`.
//!
//! Family differences handled by the config: GQA (`num_key_value_heads`), explicit `head_dim`,
//! `attention_bias` (q/k/v/o) and `mlp_bias` (Llama), q/k/v biases without an o bias (Qwen2),
//! sliding windows (Mistral `sliding_window`; Qwen2 `use_sliding_window` with
//! `max_window_layers` or `layer_types`), RoPE scaling (`linear`, `llama3`), tied embeddings
//! (`tie_word_embeddings`, or no `lm_head.weight` in the checkpoint).

mod gguf;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Bool, Device, Tensor};
use serde::Deserialize;
use strata_blocks::{
    ActFn, Attention, AttentionConfig, AttentionContext, Embedding, GatedMlp, KvCache, Linear,
    MaskSpec, RmsNorm, Rope, RopeConfig, WeightLoader,
};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, Error, HiddenStatesLayout, LanguageModel,
    ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, TokenBatch,
};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "llama",
        description: "Llama-family decoders: Llama 1-3, Mistral, SmolLM/SmolLM2, Qwen2/2.5 (GQA, RoPE scaling, sliding windows)",
        model_types: &["llama", "mistral", "qwen2"],
        gguf_architectures: gguf::ARCHITECTURES,
        from_gguf: Some(gguf::from_gguf),
        load,
    }
}

/// The `config.json` fields this family reads. Sizes are required; flags default as in HF's
/// `LlamaConfig` / `MistralConfig` / `Qwen2Config`.
#[derive(Debug, Deserialize)]
struct LlamaConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (MHA).
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    /// Defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    head_dim: Option<usize>,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default)]
    tie_word_embeddings: bool,
    /// Llama: biases on q, k, v and o.
    #[serde(default)]
    attention_bias: bool,
    /// Llama: biases on gate, up and down.
    #[serde(default)]
    mlp_bias: bool,
    /// Mistral: every layer; Qwen2: the layers `layer_types` marks as sliding.
    #[serde(default)]
    sliding_window: Option<usize>,
    /// Qwen2: whether `sliding_window` is used at all.
    #[serde(default)]
    use_sliding_window: bool,
    /// Qwen2 (without `layer_types`): layers from this index on slide.
    #[serde(default)]
    max_window_layers: Option<usize>,
    /// Per-layer `full_attention` / `sliding_attention` (transformers 5).
    #[serde(default)]
    layer_types: Option<Vec<String>>,
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_max_position_embeddings() -> usize {
    2048
}

fn default_hidden_act() -> String {
    "silu".into()
}

impl LlamaConfig {
    /// The sliding window of each layer (`None` = full causal attention), as HF decides it.
    fn windows(&self, path: &Path) -> Result<Vec<Option<usize>>> {
        let n = self.num_hidden_layers;
        match self.model_type.as_str() {
            "mistral" => Ok(vec![self.sliding_window; n]),
            "qwen2" => {
                let window = self.sliding_window.filter(|_| self.use_sliding_window);
                let sliding: Vec<bool> = match &self.layer_types {
                    Some(types) => {
                        if types.len() != n {
                            return Err(Error::model(
                                path,
                                format!(
                                    "field `layer_types`: {} entries for {n} layers",
                                    types.len()
                                ),
                            ));
                        }
                        types
                            .iter()
                            .map(|t| match t.as_str() {
                                "full_attention" => Ok(false),
                                "sliding_attention" => Ok(true),
                                other => Err(Error::model(
                                    path,
                                    format!(
                                        "field `layer_types`: unknown layer type `{other}` \
                                         (expected full_attention or sliding_attention)"
                                    ),
                                )),
                            })
                            .collect::<Result<_>>()?
                    }
                    None => {
                        let first = self.max_window_layers.unwrap_or(28);
                        (0..n).map(|l| l >= first).collect()
                    }
                };
                Ok(sliding
                    .into_iter()
                    .map(|s| if s { window } else { None })
                    .collect())
            }
            _ => Ok(vec![None; n]),
        }
    }
}

/// One decoder block.
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_norm: RmsNorm,
    mlp: GatedMlp,
    mask: MaskSpec,
}

/// A loaded Llama-family model.
pub struct Llama {
    info: ModelInfo,
    device: Device,
    embed: Embedding,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope: Rope,
}

/// Loads a Llama-family model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    Llama::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

impl Llama {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: LlamaConfig = files.config()?;
        let bad = |msg: String| Error::model(path, msg);
        let (d, n_heads) = (cfg.hidden_size, cfg.num_attention_heads);
        if n_heads == 0 || cfg.num_hidden_layers == 0 || d == 0 || cfg.vocab_size == 0 {
            return Err(bad(
                "`hidden_size`, `num_attention_heads`, `num_hidden_layers` and `vocab_size` must be positive".into(),
            ));
        }
        let head_dim = match cfg.head_dim {
            Some(h) => h,
            None if d % n_heads == 0 => d / n_heads,
            None => {
                return Err(bad(format!(
                    "`hidden_size` {d} is not a multiple of `num_attention_heads` {n_heads} and \
                     `head_dim` is not given"
                )));
            }
        };
        let n_kv_heads = cfg.num_key_value_heads.unwrap_or(n_heads);
        let attn_cfg = AttentionConfig::new(n_heads, n_kv_heads, head_dim).map_err(|e| {
            bad(format!(
                "fields `num_attention_heads`/`num_key_value_heads`: {e}"
            ))
        })?;
        let act = ActFn::from_hf(&cfg.hidden_act, path)?;
        let rope = Rope::new(&RopeConfig::from_hf_config(&files.config, path)?, head_dim)
            .map_err(|e| bad(e.to_string()))?;
        let windows = cfg.windows(path)?;
        let (qkv_bias, o_bias) = match cfg.model_type.as_str() {
            "qwen2" => (true, false),
            "mistral" => (false, false),
            _ => (cfg.attention_bias, cfg.attention_bias),
        };

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let (embed, lm_head) = if tied {
            let head = Linear::load(&mut w, "model.embed_tokens", d, cfg.vocab_size, false)?;
            (Embedding::tied_to(&head), head)
        } else {
            let embed = Embedding::load(&mut w, "model.embed_tokens.weight", cfg.vocab_size, d)?;
            (
                embed,
                Linear::load(&mut w, "lm_head", d, cfg.vocab_size, false)?,
            )
        };
        let eps = cfg.rms_norm_eps;
        let mut blocks = Vec::with_capacity(windows.len());
        for (l, &window) in windows.iter().enumerate() {
            let p = format!("model.layers.{l}");
            blocks.push(Block {
                input_norm: RmsNorm::load(
                    &mut w,
                    &format!("{p}.input_layernorm.weight"),
                    d,
                    eps,
                    false,
                )?,
                attn: Attention::load(
                    &mut w,
                    &format!("{p}.self_attn"),
                    d,
                    attn_cfg,
                    qkv_bias,
                    o_bias,
                )?,
                post_norm: RmsNorm::load(
                    &mut w,
                    &format!("{p}.post_attention_layernorm.weight"),
                    d,
                    eps,
                    false,
                )?,
                mlp: GatedMlp::load(
                    &mut w,
                    &format!("{p}.mlp"),
                    d,
                    cfg.intermediate_size,
                    act,
                    cfg.mlp_bias,
                )?,
                mask: MaskSpec {
                    causal: true,
                    window,
                },
            });
        }
        let norm = RmsNorm::load(&mut w, "model.norm.weight", d, eps, false)?;

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "llama".into(),
            model_type: cfg.model_type.clone(),
            n_layers: cfg.num_hidden_layers,
            d_model: d,
            n_heads,
            n_kv_heads,
            head_dim,
            d_ff: cfg.intermediate_size,
            vocab_size: cfg.vocab_size,
            context_length: cfg.max_position_embeddings,
            norm: NormKind::RmsNorm {
                eps,
                unit_offset: false,
            },
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
            norm,
            lm_head,
            rope,
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
        let mut masks: BTreeMap<MaskSpec, Tensor<4, Bool>> = BTreeMap::new();
        for block in blocks {
            masks
                .entry(block.mask)
                .or_insert_with(|| layout.mask(block.mask, &self.device));
        }
        for (l, block) in blocks.iter().enumerate() {
            let ctx = AttentionContext {
                layout: &layout,
                mask: &masks[&block.mask],
                causal: block.mask.causal,
                rope: rope.as_ref(),
            };
            let kv = cache.as_deref_mut().map(|c| c.layer_mut(l));
            let attn =
                block
                    .attn
                    .forward(block.input_norm.forward(x.clone()), l, &ctx, &mut rec, kv)?;
            let attn = rec.point(Site::AttnOut(l), attn)?;
            x = strata_blocks::residual(x, attn);
            let mlp = rec.point(
                Site::MlpOut(l),
                block.mlp.forward(block.post_norm.forward(x.clone())),
            )?;
            x = rec.point(Site::ResidPost(l), strata_blocks::residual(x, mlp))?;
        }

        strata_blocks::final_norm_and_logits(
            &mut rec,
            x,
            |x| self.norm.forward(x),
            |x| self.lm_head.forward(x),
        )?;
        if let Some(c) = cache {
            c.commit(&layout);
        }
        Ok(rec.finish())
    }
}

strata_blocks::language_model!(Llama, KvCache, |m| KvCache::new(m.info.n_layers));

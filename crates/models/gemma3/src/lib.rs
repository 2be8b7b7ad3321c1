//! `strata-model-gemma3`: Gemma 3 text decoders (`model_type = "gemma3_text"`, e.g.
//! Gemma-3-270M/1B, and the text tower of GGUF `gemma3` files), loaded from a Hugging Face
//! config and HF-named weights.
//!
//! The computation, as HF's `Gemma3ForCausalLM` does it:
//!
//! * `embed = embed_tokens[ids] · sqrt(hidden_size)` (the factor rounded to f32, the weights'
//!   dtype);
//! * block `l` (sandwich norms): `x += post_attention_layernorm(attn(input_layernorm(x)))`, then
//!   `x += post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))`;
//! * every RMSNorm multiplies by `(1 + w)` (the checkpoint stores `w`);
//! * attention: per-head `q_norm`/`k_norm` before RoPE, scale `query_pre_attn_scalar^-0.5`,
//!   MQA/GQA, `head_dim` independent of `hidden_size / num_attention_heads`;
//! * layers are `sliding_attention` (query `i` sees keys `i - sliding_window < j <= i`) or
//!   `full_attention` (`layer_types`, or every `sliding_window_pattern`-th layer full), each
//!   kind with its own RoPE (`rope_parameters.{sliding_attention,full_attention}`, or the older
//!   `rope_local_base_freq` for sliding layers and `rope_theta`/`rope_scaling` for full ones);
//! * MLP `down(gelu_tanh(gate(x)) · up(x))`; final `norm`; the head tied to the embeddings unless
//!   the checkpoint has its own `lm_head.weight`.
//!
//! Canonical capture points: `embed` (scaled embeddings, = HF `hidden_states[0]`), `attn_out.l`
//! and `mlp_out.l` (the branch outputs *after* their post-norm, i.e. exactly what joins the
//! residual), `resid_post.l`, `final_norm`, `logits`. HF's `hidden_states` is
//! `[embed, resid_post.0, …, resid_post.{L-2}, final_norm]`.
//!
//! Not supported (clear errors): logit soft-capping (Gemma 2's `attn_logit_softcapping` /
//! `final_logit_softcapping`, `null` in Gemma 3) and bidirectional attention
//! (`use_bidirectional_attention`, EmbeddingGemma).

mod gguf;

use std::collections::BTreeMap;
use std::path::Path;

use burn::tensor::{Bool, Device, Tensor};
use serde::Deserialize;
use serde_json::Value;
use strata_blocks::{
    ActFn, Attention, AttentionConfig, AttentionContext, Embedding, GatedMlp, KvCache, Linear,
    MaskSpec, RmsNorm, Rope, RopeConfig, RopeTables, WeightLoader,
};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, Error, HiddenStatesLayout, LanguageModel,
    ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, TokenBatch,
};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "gemma3",
        description: "Gemma 3 text decoders: sliding-window and full layers, q/k norms, sandwich norms, (1 + w) RMSNorms, MQA",
        model_types: &["gemma3_text"],
        gguf_architectures: gguf::ARCHITECTURES,
        from_gguf: Some(gguf::from_gguf),
        load,
    }
}

/// The `config.json` fields this family reads. Sizes are required; the rest default as in HF's
/// `Gemma3TextConfig`.
#[derive(Debug, Deserialize)]
struct Gemma3Config {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    /// Defaults to `num_attention_heads` (MHA).
    #[serde(default)]
    num_key_value_heads: Option<usize>,
    #[serde(default = "default_head_dim")]
    head_dim: usize,
    #[serde(default = "default_rms_norm_eps")]
    rms_norm_eps: f64,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    /// Gemma's name for the MLP activation; older configs say `hidden_act`.
    #[serde(default)]
    hidden_activation: Option<String>,
    #[serde(default)]
    hidden_act: Option<String>,
    #[serde(default = "default_query_pre_attn_scalar")]
    query_pre_attn_scalar: f64,
    #[serde(default = "default_sliding_window")]
    sliding_window: usize,
    /// Per-layer `sliding_attention` / `full_attention`.
    #[serde(default)]
    layer_types: Option<Vec<String>>,
    /// Without `layer_types`: every `n`-th layer is full (transformers 5 writes
    /// `_sliding_window_pattern`, older configs `sliding_window_pattern`).
    #[serde(default, alias = "_sliding_window_pattern")]
    sliding_window_pattern: Option<usize>,
    /// Older configs: the rotary base of the sliding layers.
    #[serde(default)]
    rope_local_base_freq: Option<f64>,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default = "default_true")]
    tie_word_embeddings: bool,
    #[serde(default)]
    attn_logit_softcapping: Option<f64>,
    #[serde(default)]
    final_logit_softcapping: Option<f64>,
    #[serde(default)]
    use_bidirectional_attention: Option<bool>,
}

fn default_head_dim() -> usize {
    256
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

fn default_max_position_embeddings() -> usize {
    131_072
}

fn default_query_pre_attn_scalar() -> f64 {
    256.0
}

fn default_sliding_window() -> usize {
    4096
}

fn default_true() -> bool {
    true
}

/// HF's default `sliding_window_pattern`: five sliding layers, then one full.
const DEFAULT_PATTERN: usize = 6;
/// HF's default `rope_local_base_freq`.
const DEFAULT_LOCAL_THETA: f64 = 10_000.0;

/// The two attention kinds of a Gemma 3 layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LayerKind {
    Sliding,
    Full,
}

impl Gemma3Config {
    /// The kind of every layer, from `layer_types` or the sliding-window pattern.
    fn layer_kinds(&self, path: &Path) -> Result<Vec<LayerKind>> {
        let n = self.num_hidden_layers;
        match &self.layer_types {
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
                        "sliding_attention" => Ok(LayerKind::Sliding),
                        "full_attention" => Ok(LayerKind::Full),
                        other => Err(Error::model(
                            path,
                            format!(
                                "field `layer_types`: unknown layer type `{other}` (expected \
                                 sliding_attention or full_attention)"
                            ),
                        )),
                    })
                    .collect()
            }
            None => {
                let pattern = self.sliding_window_pattern.unwrap_or(DEFAULT_PATTERN);
                if pattern == 0 {
                    return Err(Error::model(
                        path,
                        "field `sliding_window_pattern`: must be positive",
                    ));
                }
                // HF: sliding iff (i + 1) % pattern != 0.
                Ok((0..n)
                    .map(|i| {
                        if (i + 1) % pattern == 0 {
                            LayerKind::Full
                        } else {
                            LayerKind::Sliding
                        }
                    })
                    .collect())
            }
        }
    }

    /// The MLP activation (`hidden_activation`, else `hidden_act`, else `gelu_pytorch_tanh`).
    fn activation(&self, path: &Path) -> Result<ActFn> {
        match (&self.hidden_activation, &self.hidden_act) {
            (Some(name), _) => ActFn::from_hf_field(name, "hidden_activation", path),
            (None, Some(name)) => ActFn::from_hf(name, path),
            (None, None) => Ok(ActFn::GeluTanh),
        }
    }
}

/// The rotary settings of (sliding, full) layers: the transformers-5 per-layer-type
/// `rope_parameters`, or the older top-level form (`rope_theta`/`rope_scaling` for full layers,
/// `rope_local_base_freq` unscaled for sliding ones).
fn rope_configs(config: &Value, local_theta: Option<f64>, path: &Path) -> Result<[RopeConfig; 2]> {
    let per_type = config
        .get("rope_parameters")
        .and_then(Value::as_object)
        .is_some_and(|p| p.contains_key("sliding_attention") || p.contains_key("full_attention"));
    if per_type {
        return Ok([
            RopeConfig::from_hf_config_entry(config, path, "sliding_attention")?,
            RopeConfig::from_hf_config_entry(config, path, "full_attention")?,
        ]);
    }
    let full = RopeConfig::from_hf_config(config, path)?;
    let theta = local_theta.unwrap_or(DEFAULT_LOCAL_THETA);
    if !(theta > 0.0 && theta.is_finite()) {
        return Err(Error::model(
            path,
            format!("field `rope_local_base_freq` = {theta}: expected a positive number"),
        ));
    }
    let sliding = RopeConfig {
        theta,
        ..RopeConfig::default()
    };
    Ok([sliding, full])
}

/// One decoder block.
struct Block {
    input_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: RmsNorm,
    pre_ff_norm: RmsNorm,
    mlp: GatedMlp,
    post_ff_norm: RmsNorm,
    kind: LayerKind,
    mask: MaskSpec,
}

/// A loaded Gemma 3 text model.
pub struct Gemma3 {
    info: ModelInfo,
    device: Device,
    embed: Embedding,
    /// `sqrt(hidden_size)` rounded to f32.
    embed_scale: f32,
    blocks: Vec<Block>,
    norm: RmsNorm,
    lm_head: Linear,
    rope_sliding: Rope,
    rope_full: Rope,
}

/// Loads a Gemma 3 model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    Gemma3::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

impl Gemma3 {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: Gemma3Config = files.config()?;
        let bad = |msg: String| Error::model(path, msg);
        let (d, n_heads, head_dim) = (cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim);
        if n_heads == 0 || cfg.num_hidden_layers == 0 || d == 0 || cfg.vocab_size == 0 {
            return Err(bad(
                "`hidden_size`, `num_attention_heads`, `num_hidden_layers` and `vocab_size` must be positive".into(),
            ));
        }
        for (field, value) in [
            ("attn_logit_softcapping", cfg.attn_logit_softcapping),
            ("final_logit_softcapping", cfg.final_logit_softcapping),
        ] {
            if let Some(v) = value {
                return Err(Error::Unsupported(format!(
                    "{}: field `{field}` = {v}: logit soft-capping is not supported (Gemma 3 \
                     checkpoints set it to null)",
                    path.display()
                )));
            }
        }
        if cfg.use_bidirectional_attention == Some(true) {
            return Err(Error::Unsupported(format!(
                "{}: field `use_bidirectional_attention` = true: bidirectional Gemma 3 encoders \
                 are not supported",
                path.display()
            )));
        }
        if !(cfg.query_pre_attn_scalar > 0.0 && cfg.query_pre_attn_scalar.is_finite()) {
            return Err(bad(format!(
                "field `query_pre_attn_scalar` = {}: expected a positive number",
                cfg.query_pre_attn_scalar
            )));
        }
        if cfg.sliding_window == 0 {
            return Err(bad("field `sliding_window`: must be positive".into()));
        }
        let n_kv_heads = cfg.num_key_value_heads.unwrap_or(n_heads);
        let attn_cfg = AttentionConfig::new(n_heads, n_kv_heads, head_dim)
            .map_err(|e| {
                bad(format!(
                    "fields `num_attention_heads`/`num_key_value_heads`/`head_dim`: {e}"
                ))
            })?
            .with_scale(cfg.query_pre_attn_scalar.powf(-0.5));
        let act = cfg.activation(path)?;
        let kinds = cfg.layer_kinds(path)?;
        let [sliding, full] = rope_configs(&files.config, cfg.rope_local_base_freq, path)?;
        let rope_err =
            |kind: &str, e: Error| bad(format!("rotary embedding of {kind} layers: {e}"));
        let rope_sliding = Rope::new(&sliding, head_dim).map_err(|e| rope_err("sliding", e))?;
        let rope_full = Rope::new(&full, head_dim).map_err(|e| rope_err("full", e))?;

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        let tied = cfg.tie_word_embeddings || !w.contains("lm_head.weight");
        let (embed, lm_head) = if tied {
            let head = Linear::load(&mut w, "model.embed_tokens", d, cfg.vocab_size, false)?;
            (Embedding::tied_to(&head), head)
        } else {
            let embed = Embedding::load(&mut w, "model.embed_tokens.weight", cfg.vocab_size, d)?;
            let head = Linear::load(&mut w, "lm_head", d, cfg.vocab_size, false)?;
            (embed, head)
        };
        let eps = cfg.rms_norm_eps;
        let norm = |w: &mut WeightLoader<'_>, name: String, width: usize| {
            RmsNorm::load(w, &name, width, eps, true)
        };
        let mut blocks = Vec::with_capacity(kinds.len());
        for (l, &kind) in kinds.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let input_norm = norm(&mut w, format!("{p}.input_layernorm.weight"), d)?;
            let attn = Attention::load(
                &mut w,
                &format!("{p}.self_attn"),
                d,
                attn_cfg,
                cfg.attention_bias,
                cfg.attention_bias,
            )?;
            let q_norm = norm(&mut w, format!("{p}.self_attn.q_norm.weight"), head_dim)?;
            let k_norm = norm(&mut w, format!("{p}.self_attn.k_norm.weight"), head_dim)?;
            let post_attn_norm = norm(&mut w, format!("{p}.post_attention_layernorm.weight"), d)?;
            let pre_ff_norm = norm(&mut w, format!("{p}.pre_feedforward_layernorm.weight"), d)?;
            let mlp = GatedMlp::load(
                &mut w,
                &format!("{p}.mlp"),
                d,
                cfg.intermediate_size,
                act,
                false,
            )?;
            let post_ff_norm = norm(&mut w, format!("{p}.post_feedforward_layernorm.weight"), d)?;
            blocks.push(Block {
                input_norm,
                attn: attn.with_qk_norms(q_norm, k_norm),
                post_attn_norm,
                pre_ff_norm,
                mlp,
                post_ff_norm,
                kind,
                mask: MaskSpec {
                    causal: true,
                    window: (kind == LayerKind::Sliding).then_some(cfg.sliding_window),
                },
            });
        }
        let final_norm = norm(&mut w, "model.norm.weight".into(), d)?;

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "gemma3".into(),
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
                unit_offset: true,
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
            embed_scale: (d as f64).sqrt() as f32,
            blocks,
            norm: final_norm,
            lm_head,
            rope_sliding,
            rope_full,
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
        let embedded = self
            .embed
            .forward_batch(batch, &self.info.name)?
            .mul_scalar(self.embed_scale);
        let mut x = rec.point(Site::Embed, embedded)?;

        let blocks = &self.blocks[..n_blocks];
        let tables = |kind: LayerKind| -> Option<RopeTables> {
            blocks.iter().any(|b| b.kind == kind).then(|| {
                let rope = match kind {
                    LayerKind::Sliding => &self.rope_sliding,
                    LayerKind::Full => &self.rope_full,
                };
                rope.tables(layout.position_ids(), &self.device)
            })
        };
        let (sliding_tables, full_tables) = (tables(LayerKind::Sliding), tables(LayerKind::Full));
        let mut masks: BTreeMap<MaskSpec, Tensor<4, Bool>> = BTreeMap::new();
        for block in blocks {
            masks
                .entry(block.mask)
                .or_insert_with(|| layout.mask(block.mask, &self.device));
        }
        for (l, block) in blocks.iter().enumerate() {
            let rope = match block.kind {
                LayerKind::Sliding => sliding_tables.as_ref(),
                LayerKind::Full => full_tables.as_ref(),
            };
            let ctx = AttentionContext {
                layout: &layout,
                mask: &masks[&block.mask],
                causal: block.mask.causal,
                rope,
            };
            let kv = cache.as_deref_mut().map(|c| c.layer_mut(l));
            let attn =
                block
                    .attn
                    .forward(block.input_norm.forward(x.clone()), l, &ctx, &mut rec, kv)?;
            let attn = rec.point(Site::AttnOut(l), block.post_attn_norm.forward(attn))?;
            x = strata_blocks::residual(x, attn);
            let mlp = block.mlp.forward(block.pre_ff_norm.forward(x.clone()));
            let mlp = rec.point(Site::MlpOut(l), block.post_ff_norm.forward(mlp))?;
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

strata_blocks::language_model!(Gemma3, KvCache, |m| KvCache::new(m.info.n_layers));

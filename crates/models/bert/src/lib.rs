//! `strata-model-bert`: BERT-family encoders (`model_type = "bert"`: BERT, MiniLM such as
//! all-MiniLM-L6-v2), loaded from a Hugging Face config and HF-named weights (`BertModel`
//! naming, optionally under a `bert.` prefix as in `BertForMaskedLM` checkpoints).
//!
//! The computation, as HF's `BertModel` does it (post-LN):
//!
//! * `embed = LayerNorm(word[ids] + position[pos] + token_type[0])` — every token has type 0;
//!   positions are each row's real-token positions `0..len`, so a padded row computes what it
//!   computes alone;
//! * block `l`: `x = LayerNorm(x + attn(x))` (`attention.output.LayerNorm`), then
//!   `x = LayerNorm(x + down(gelu(up(x))))` (`output.LayerNorm`); attention is bidirectional,
//!   padding keys are hidden;
//! * no final norm and no language-model head; the pooler `tanh(dense(h[:, 0]))` is
//!   [`Bert::pooler`] (no canonical capture site is a pooled vector).
//!
//! Canonical capture points: `embed` (after the embedding LayerNorm, = HF `hidden_states[0]`),
//! `attn_out.l` (attention output projection, before the residual add and its LayerNorm),
//! `mlp_out.l` (output projection, before the residual add and its LayerNorm), `resid_post.l`
//! (block output, = HF `hidden_states[l + 1]`), `attn_pattern.l`. `final_norm` is the last block
//! output (BERT has no final norm, so what any head would see is `resid_post.{L-1}`, HF's
//! `last_hidden_state`). `logits` is an [`Error::InvalidRequest`], and so is incremental decoding.

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;
use strata_blocks::{
    ActFn, Attention, AttentionConfig, AttentionContext, AttentionLayout, Embedding, LayerNorm,
    Linear, MaskSpec, Mlp, WeightLoader,
};
use strata_core::{
    ArchitectureRegistration, CapturePlan, Captures, DecodeCache, Error, HiddenStatesLayout,
    LanguageModel, ModelFiles, ModelInfo, NormKind, Recorder, Result, Site, TokenBatch,
};

strata_core::inventory::submit! {
    ArchitectureRegistration {
        id: "bert",
        description: "BERT-family encoders: BERT, MiniLM (post-LN, bidirectional attention, pooler; no LM head)",
        model_types: &["bert"],
        gguf_architectures: &[],
        from_gguf: None,
        load,
    }
}

/// The `config.json` fields this family reads. Sizes are required; the rest default as in HF's
/// `BertConfig`.
#[derive(Debug, Deserialize)]
struct BertConfig {
    model_type: String,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    #[serde(default = "default_hidden_act")]
    hidden_act: String,
    #[serde(default = "default_max_position_embeddings")]
    max_position_embeddings: usize,
    #[serde(default = "default_type_vocab_size")]
    type_vocab_size: usize,
    #[serde(default = "default_layer_norm_eps")]
    layer_norm_eps: f64,
    #[serde(default)]
    position_embedding_type: Option<String>,
    #[serde(default)]
    is_decoder: bool,
}

fn default_hidden_act() -> String {
    "gelu".into()
}

fn default_max_position_embeddings() -> usize {
    512
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

/// One encoder block.
struct Block {
    attn: Attention,
    attn_norm: LayerNorm,
    mlp: Mlp,
    out_norm: LayerNorm,
}

/// A loaded BERT encoder.
pub struct Bert {
    info: ModelInfo,
    device: Device,
    word: Embedding,
    position: Embedding,
    token_type: Embedding,
    embed_norm: LayerNorm,
    blocks: Vec<Block>,
    pooler: Option<Linear>,
}

/// Loads a BERT model from HF files (the registry's entry point).
pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Box<dyn LanguageModel>> {
    Bert::load(files, name, device).map(|m| Box::new(m) as Box<dyn LanguageModel>)
}

impl Bert {
    /// Loads the model `files` describe onto `device`; `name` is the user's name for it.
    pub fn load(files: &ModelFiles, name: &str, device: &Device) -> Result<Self> {
        let path = files.config_path.as_path();
        let cfg: BertConfig = files.config()?;
        let bad = |msg: String| Error::model(path, msg);
        let (d, n_heads) = (cfg.hidden_size, cfg.num_attention_heads);
        if n_heads == 0 || cfg.num_hidden_layers == 0 || d == 0 || cfg.vocab_size == 0 {
            return Err(bad(
                "`hidden_size`, `num_attention_heads`, `num_hidden_layers` and `vocab_size` must be positive".into(),
            ));
        }
        if !d.is_multiple_of(n_heads) {
            return Err(bad(format!(
                "`hidden_size` {d} is not a multiple of `num_attention_heads` {n_heads}"
            )));
        }
        if cfg.type_vocab_size == 0 {
            return Err(bad("field `type_vocab_size`: must be positive".into()));
        }
        if cfg.is_decoder {
            return Err(Error::Unsupported(format!(
                "{}: field `is_decoder` = true: BERT decoders are not supported (encoders only)",
                path.display()
            )));
        }
        match cfg.position_embedding_type.as_deref() {
            None | Some("absolute") => {}
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "{}: field `position_embedding_type` = `{other}` is not supported (only \
                     `absolute`)",
                    path.display()
                )));
            }
        }
        let head_dim = d / n_heads;
        let attn_cfg = AttentionConfig::new(n_heads, n_heads, head_dim)
            .map_err(|e| bad(format!("field `num_attention_heads`: {e}")))?;
        let act = ActFn::from_hf(&cfg.hidden_act, path)?;
        let eps = cfg.layer_norm_eps;

        let mut w = WeightLoader::new(files.weights.as_ref(), device);
        // `BertForMaskedLM`-style checkpoints put the encoder under `bert.`.
        let root = if !w.contains("embeddings.word_embeddings.weight")
            && w.contains("bert.embeddings.word_embeddings.weight")
        {
            "bert."
        } else {
            ""
        };
        let e = format!("{root}embeddings");
        let word = Embedding::load(
            &mut w,
            &format!("{e}.word_embeddings.weight"),
            cfg.vocab_size,
            d,
        )?;
        let position = Embedding::load(
            &mut w,
            &format!("{e}.position_embeddings.weight"),
            cfg.max_position_embeddings,
            d,
        )?;
        let token_type = Embedding::load(
            &mut w,
            &format!("{e}.token_type_embeddings.weight"),
            cfg.type_vocab_size,
            d,
        )?;
        let embed_norm = LayerNorm::load(&mut w, &format!("{e}.LayerNorm"), d, eps)?;
        let mut blocks = Vec::with_capacity(cfg.num_hidden_layers);
        for l in 0..cfg.num_hidden_layers {
            let p = format!("{root}encoder.layer.{l}");
            let linear = |w: &mut WeightLoader<'_>, name: &str, i: usize, o: usize| {
                Linear::load(w, &format!("{p}.{name}"), i, o, true)
            };
            let q = linear(&mut w, "attention.self.query", d, d)?;
            let k = linear(&mut w, "attention.self.key", d, d)?;
            let v = linear(&mut w, "attention.self.value", d, d)?;
            let o = linear(&mut w, "attention.output.dense", d, d)?;
            let attn_norm =
                LayerNorm::load(&mut w, &format!("{p}.attention.output.LayerNorm"), d, eps)?;
            let up = linear(&mut w, "intermediate.dense", d, cfg.intermediate_size)?;
            let down = linear(&mut w, "output.dense", cfg.intermediate_size, d)?;
            let out_norm = LayerNorm::load(&mut w, &format!("{p}.output.LayerNorm"), d, eps)?;
            blocks.push(Block {
                attn: Attention::new(attn_cfg, q, k, v, o),
                attn_norm,
                mlp: Mlp::new(up, down, act),
                out_norm,
            });
        }
        let pooler_name = format!("{root}pooler.dense");
        let pooler = if w.contains(&format!("{pooler_name}.weight")) {
            Some(Linear::load(&mut w, &pooler_name, d, d, true)?)
        } else {
            None
        };

        let info = ModelInfo {
            name: name.to_string(),
            architecture: "bert".into(),
            model_type: cfg.model_type.clone(),
            n_layers: cfg.num_hidden_layers,
            d_model: d,
            n_heads,
            n_kv_heads: n_heads,
            head_dim,
            d_ff: cfg.intermediate_size,
            vocab_size: cfg.vocab_size,
            context_length: cfg.max_position_embeddings,
            norm: NormKind::LayerNorm { eps },
            hidden_states: HiddenStatesLayout::EmbedThenAllBlocks,
            has_attention: true,
            causal: false,
            has_lm_head: false,
            n_params: w.n_params(),
        };
        Ok(Self {
            info,
            device: device.clone(),
            word,
            position,
            token_type,
            embed_norm,
            blocks,
            pooler,
        })
    }

    /// HF's `pooler_output`: `tanh(dense(h[:, 0]))` of a `[batch, tokens, d]` last hidden state
    /// (`resid_post.{L-1}` captured at every position, or at least the first) → `[batch, d]`.
    /// Errors when the checkpoint has no pooler (`pooler.dense.*`).
    pub fn pooler(&self, last_hidden: &Tensor<3>) -> Result<Tensor<2>> {
        let dense = self.pooler.as_ref().ok_or_else(|| {
            Error::InvalidRequest(format!(
                "`{}` has no pooler (its checkpoint lacks `pooler.dense.weight`)",
                self.info.name
            ))
        })?;
        let [b, _, d] = last_hidden.dims();
        let first = last_hidden.clone().narrow(1, 0, 1).reshape([b, d]);
        Ok(dense.forward(first).tanh())
    }

    /// `LayerNorm(word + position + token_type[0])`.
    fn embed(&self, batch: &TokenBatch, layout: &AttentionLayout) -> Result<Tensor<3>> {
        let words = self.word.forward_batch(batch, &self.info.name)?;
        let [b, t, _] = words.dims();
        let positions: Vec<i64> = layout
            .position_ids()
            .iter()
            .flatten()
            .map(|&p| p as i64)
            .collect();
        let positions =
            Tensor::<2, Int>::from_data(TensorData::new(positions, [b, t]), &self.device);
        let types = Tensor::<2, Int>::zeros([b, t], &self.device);
        let sum = words + self.position.forward(positions) + self.token_type.forward(types);
        Ok(self.embed_norm.forward(sum))
    }

    /// The forward pass ([`LanguageModel::forward`] runs it on the thread pool).
    fn run(&self, batch: &TokenBatch, plan: &CapturePlan) -> Result<Captures> {
        plan.validate(&self.info)?;
        let layout = AttentionLayout::for_batch(batch);
        layout.check_context(self.info.context_length, &self.info.name)?;
        let n_blocks = plan.blocks_needed(self.info.n_layers);
        let mut rec = Recorder::new(plan, batch);
        let mut x = rec.point(Site::Embed, self.embed(batch, &layout)?)?;
        let mask = layout.mask(MaskSpec::BIDIRECTIONAL, &self.device);
        let ctx = AttentionContext {
            layout: &layout,
            mask: &mask,
            causal: false,
            rope: None,
        };
        for (l, block) in self.blocks[..n_blocks].iter().enumerate() {
            let attn = block.attn.forward(x.clone(), l, &ctx, &mut rec, None)?;
            let attn = rec.point(Site::AttnOut(l), attn)?;
            x = block.attn_norm.forward(strata_blocks::residual(x, attn));
            let mlp = rec.point(Site::MlpOut(l), block.mlp.forward(x.clone()))?;
            x = rec.point(
                Site::ResidPost(l),
                block.out_norm.forward(strata_blocks::residual(x, mlp)),
            )?;
        }
        if plan.wants(Site::FinalNorm) {
            rec.point(Site::FinalNorm, x)?;
        }
        Ok(rec.finish())
    }
}

impl LanguageModel for Bert {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn device(&self) -> &Device {
        &self.device
    }

    fn forward(&self, batch: &TokenBatch, plan: &CapturePlan) -> Result<Captures> {
        strata_blocks::on_the_pool(&self.device, || self.run(batch, plan))
    }

    /// BERT keeps no decoding state; [`LanguageModel::forward_cached`] refuses to run.
    fn new_cache(&self) -> DecodeCache {
        DecodeCache::new(())
    }

    fn forward_cached(
        &self,
        _batch: &TokenBatch,
        _plan: &CapturePlan,
        _cache: &mut DecodeCache,
    ) -> Result<Captures> {
        Err(Error::InvalidRequest(format!(
            "`{}` (bert) is a bidirectional encoder: it has no incremental decoding and cannot \
             generate text",
            self.info.name
        )))
    }
}

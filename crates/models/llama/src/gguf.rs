//! GGUF files of the Llama family (`general.architecture` `llama` or `qwen2`): llama.cpp's
//! metadata keys become an HF `config.json`, its tensor names HF's.
//!
//! llama.cpp's converter permutes the rows of Llama's `attn_q`/`attn_k` for its interleaved
//! RoPE; HF's `rotate_half` needs them un-permuted (as `transformers` does when it loads a GGUF).
//! Qwen2 files are written unpermuted. Without `output.weight` the embeddings are tied.

use serde_json::{Value, json};
use strata_core::gguf::{GgufFile, GgufTranslation, TensorMap, Transform};
use strata_core::{Error, Result};

/// The GGUF architectures this crate reads.
pub const ARCHITECTURES: &[&str] = &["llama", "qwen2"];

/// Reads a `llama` or `qwen2` GGUF file into an HF config and tensor names.
pub fn from_gguf(file: &GgufFile) -> Result<GgufTranslation> {
    let arch = file.architecture()?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(Error::model(
            file.path(),
            format!(
                "metadata `general.architecture` = `{arch}`: expected one of {}",
                ARCHITECTURES.join(", ")
            ),
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let n_layers = file.usize(&key("block_count"))?;
    let d = file.usize(&key("embedding_length"))?;
    let n_heads = file.usize(&key("attention.head_count"))?;
    let n_kv_heads = file
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(n_heads);
    let vocab_size = match file.opt_usize(&key("vocab_size"))? {
        Some(v) => v,
        None => file.strings("tokenizer.ggml.tokens")?.len(),
    };
    let rope = rope_parameters(file, &key)?;
    let tensor = |name: &str| file.tensor(name).is_some();
    let tied = !tensor("output.weight");
    let attention_bias = tensor("blk.0.attn_q.bias");
    let mut config = json!({
        "model_type": arch,
        "vocab_size": vocab_size,
        "hidden_size": d,
        "intermediate_size": file.usize(&key("feed_forward_length"))?,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "hidden_act": "silu",
        "rms_norm_eps": file.f64(&key("attention.layer_norm_rms_epsilon"))?,
        "max_position_embeddings": file.opt_usize(&key("context_length"))?.unwrap_or(2048),
        "rope_parameters": rope,
        "tie_word_embeddings": tied,
        "mlp_bias": tensor("blk.0.ffn_up.bias"),
    });
    if let Some(head_dim) = file.opt_usize(&key("attention.key_length"))? {
        config["head_dim"] = Value::from(head_dim);
    }
    if arch == "llama" {
        config["attention_bias"] = Value::from(attention_bias);
    }

    // llama.cpp permutes Llama's q/k rows (and biases); Qwen2 files are stored as HF has them.
    let (q_transform, k_transform) = if arch == "llama" {
        (
            Transform::UnpermuteRope { n_heads },
            Transform::UnpermuteRope {
                n_heads: n_kv_heads,
            },
        )
    } else {
        (Transform::None, Transform::None)
    };
    let mut tensors = vec![
        TensorMap::new("model.embed_tokens.weight", "token_embd.weight"),
        TensorMap::new("model.norm.weight", "output_norm.weight"),
    ];
    if !tied {
        tensors.push(TensorMap::new("lm_head.weight", "output.weight"));
    }
    for l in 0..n_layers {
        let (hf, gg) = (format!("model.layers.{l}"), format!("blk.{l}"));
        let attn = [
            ("q_proj", "attn_q", q_transform),
            ("k_proj", "attn_k", k_transform),
            ("v_proj", "attn_v", Transform::None),
            ("o_proj", "attn_output", Transform::None),
        ];
        let mlp = [
            ("gate_proj", "ffn_gate"),
            ("up_proj", "ffn_up"),
            ("down_proj", "ffn_down"),
        ];
        let linears = attn
            .into_iter()
            .map(|(h, g, t)| (format!("{hf}.self_attn.{h}"), format!("{gg}.{g}"), t))
            .chain(mlp.into_iter().map(|(h, g)| {
                (
                    format!("{hf}.mlp.{h}"),
                    format!("{gg}.{g}"),
                    Transform::None,
                )
            }));
        for (hf_name, gguf_name, transform) in linears {
            tensors.push(TensorMap::with(
                format!("{hf_name}.weight"),
                format!("{gguf_name}.weight"),
                transform,
            ));
            let bias = format!("{gguf_name}.bias");
            if tensor(&bias) {
                tensors.push(TensorMap::with(format!("{hf_name}.bias"), bias, transform));
            }
        }
        tensors.push(TensorMap::new(
            format!("{hf}.input_layernorm.weight"),
            format!("{gg}.attn_norm.weight"),
        ));
        tensors.push(TensorMap::new(
            format!("{hf}.post_attention_layernorm.weight"),
            format!("{gg}.ffn_norm.weight"),
        ));
    }
    Ok(GgufTranslation { config, tensors })
}

/// HF's `rope_parameters` from `<arch>.rope.*`. Linear scaling translates; scaling the port
/// cannot rebuild from the metadata is an error rather than silently wrong numbers (Llama 3.1
/// stores its per-frequency factors as a `rope_freqs.weight` tensor).
fn rope_parameters(file: &GgufFile, key: &dyn Fn(&str) -> String) -> Result<Value> {
    let theta = file.opt_f64(&key("rope.freq_base"))?.unwrap_or(10000.0);
    let unsupported = |what: String| {
        Error::Unsupported(format!(
            "{}: {what} is not supported for GGUF files; load the Hugging Face checkpoint instead",
            file.path().display()
        ))
    };
    if file.tensor("rope_freqs.weight").is_some() {
        return Err(unsupported(
            "RoPE frequency factors (tensor `rope_freqs.weight`, Llama 3.1 style)".into(),
        ));
    }
    let scaling_key = key("rope.scaling.type");
    match file.opt_string(&scaling_key)? {
        None | Some("none") => Ok(json!({"rope_type": "default", "rope_theta": theta})),
        Some("linear") => Ok(json!({
            "rope_type": "linear",
            "rope_theta": theta,
            "factor": file.f64(&key("rope.scaling.factor"))?,
        })),
        Some(other) => Err(unsupported(format!(
            "RoPE scaling `{other}` (metadata `{scaling_key}`)"
        ))),
    }
}

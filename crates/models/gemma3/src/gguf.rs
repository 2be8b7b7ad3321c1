//! GGUF files of Gemma 3 (`general.architecture = gemma3`): llama.cpp's metadata becomes an HF
//! `gemma3_text` config, its tensor names HF's.
//!
//! What llama.cpp stores differently from HF, and what it leaves implicit (its `llama-model.cpp`
//! fills these in for `LLM_ARCH_GEMMA3`; `transformers`' GGUF loader does the same):
//!
//! * every norm weight (the four sandwich norms, `attn_q_norm`/`attn_k_norm`, `output_norm`) is
//!   stored as `1 + w`; HF stores `w`, so the translation subtracts 1;
//! * q/k rows are *not* permuted (Gemma uses HF's rotate-half layout in llama.cpp too);
//! * no `output.weight`: the head is tied to `token_embd.weight`;
//! * five sliding layers, then one full (the pattern 6 is not in the metadata), window
//!   `gemma3.attention.sliding_window`;
//! * sliding layers rotate with base 10000, unscaled; full layers with `gemma3.rope.freq_base`
//!   and the file's linear scaling, if any;
//! * the score scale is `1/sqrt(head_dim)` (`query_pre_attn_scalar = head_dim`), except for the
//!   62-layer 27B model, whose scalar is `hidden_size / num_attention_heads`.

use serde_json::{Value, json};
use strata_core::gguf::{GgufFile, GgufTranslation, TensorMap, Transform};
use strata_core::{Error, Result};

/// The GGUF architectures this crate reads.
pub const ARCHITECTURES: &[&str] = &["gemma3"];

/// llama.cpp's fixed sliding-window pattern for Gemma 3: every 6th layer is full.
const PATTERN: usize = 6;
/// llama.cpp's fixed rotary base of the sliding layers.
const LOCAL_THETA: f64 = 10_000.0;
/// The layer count llama.cpp recognises as Gemma 3 27B (another attention scale).
const LAYERS_27B: usize = 62;

/// Reads a `gemma3` GGUF file into an HF config and tensor names.
pub fn from_gguf(file: &GgufFile) -> Result<GgufTranslation> {
    let arch = file.architecture()?;
    if !ARCHITECTURES.contains(&arch) {
        return Err(Error::model(
            file.path(),
            format!("metadata `general.architecture` = `{arch}`: expected gemma3"),
        ));
    }
    let key = |k: &str| format!("{arch}.{k}");
    let n_layers = file.usize(&key("block_count"))?;
    let d = file.usize(&key("embedding_length"))?;
    let n_heads = file.usize(&key("attention.head_count"))?;
    if n_heads == 0 {
        return Err(Error::model(
            file.path(),
            format!(
                "metadata `{}` must be positive",
                key("attention.head_count")
            ),
        ));
    }
    let n_kv_heads = file
        .opt_usize(&key("attention.head_count_kv"))?
        .unwrap_or(n_heads);
    let head_dim = file
        .opt_usize(&key("attention.key_length"))?
        .unwrap_or(d / n_heads);
    let vocab_size = match file.opt_usize(&key("vocab_size"))? {
        Some(v) => v,
        None => file.strings("tokenizer.ggml.tokens")?.len(),
    };
    let query_pre_attn_scalar = if n_layers == LAYERS_27B {
        d / n_heads
    } else {
        head_dim
    };
    let layer_types: Vec<&str> = (0..n_layers)
        .map(|i| {
            if (i + 1) % PATTERN == 0 {
                "full_attention"
            } else {
                "sliding_attention"
            }
        })
        .collect();
    let tied = file.tensor("output.weight").is_none();
    let config = json!({
        "model_type": "gemma3_text",
        "vocab_size": vocab_size,
        "hidden_size": d,
        "intermediate_size": file.usize(&key("feed_forward_length"))?,
        "num_hidden_layers": n_layers,
        "num_attention_heads": n_heads,
        "num_key_value_heads": n_kv_heads,
        "head_dim": head_dim,
        "hidden_activation": "gelu_pytorch_tanh",
        "rms_norm_eps": file.f64(&key("attention.layer_norm_rms_epsilon"))?,
        "max_position_embeddings": file.opt_usize(&key("context_length"))?.unwrap_or(32768),
        "query_pre_attn_scalar": query_pre_attn_scalar,
        "sliding_window": file.usize(&key("attention.sliding_window"))?,
        "layer_types": layer_types,
        "rope_parameters": {
            "sliding_attention": {"rope_type": "default", "rope_theta": LOCAL_THETA},
            "full_attention": full_rope(file, &key)?,
        },
        "tie_word_embeddings": tied,
    });

    // llama.cpp stores every Gemma norm weight as `1 + w`.
    let norm = |hf: String, gg: String| TensorMap::with(hf, gg, Transform::AddScalar(-1.0));
    let mut tensors = vec![
        TensorMap::new("model.embed_tokens.weight", "token_embd.weight"),
        norm("model.norm.weight".into(), "output_norm.weight".into()),
    ];
    if !tied {
        tensors.push(TensorMap::new("lm_head.weight", "output.weight"));
    }
    for l in 0..n_layers {
        let (hf, gg) = (format!("model.layers.{l}"), format!("blk.{l}"));
        let linears = [
            ("self_attn.q_proj", "attn_q"),
            ("self_attn.k_proj", "attn_k"),
            ("self_attn.v_proj", "attn_v"),
            ("self_attn.o_proj", "attn_output"),
            ("mlp.gate_proj", "ffn_gate"),
            ("mlp.up_proj", "ffn_up"),
            ("mlp.down_proj", "ffn_down"),
        ];
        for (h, g) in linears {
            tensors.push(TensorMap::new(
                format!("{hf}.{h}.weight"),
                format!("{gg}.{g}.weight"),
            ));
        }
        let norms = [
            ("input_layernorm", "attn_norm"),
            ("self_attn.q_norm", "attn_q_norm"),
            ("self_attn.k_norm", "attn_k_norm"),
            ("post_attention_layernorm", "post_attention_norm"),
            ("pre_feedforward_layernorm", "ffn_norm"),
            ("post_feedforward_layernorm", "post_ffw_norm"),
        ];
        for (h, g) in norms {
            tensors.push(norm(format!("{hf}.{h}.weight"), format!("{gg}.{g}.weight")));
        }
    }
    Ok(GgufTranslation { config, tensors })
}

/// The full layers' `rope_parameters` entry from `gemma3.rope.*`: the base and, when present,
/// linear scaling (Gemma 3 4B+); scaling llama.cpp would apply differently is an error.
fn full_rope(file: &GgufFile, key: &dyn Fn(&str) -> String) -> Result<Value> {
    let theta = file.opt_f64(&key("rope.freq_base"))?.unwrap_or(1_000_000.0);
    let scaling_key = key("rope.scaling.type");
    match file.opt_string(&scaling_key)? {
        None | Some("none") => Ok(json!({"rope_type": "default", "rope_theta": theta})),
        Some("linear") => Ok(json!({
            "rope_type": "linear",
            "rope_theta": theta,
            "factor": file.f64(&key("rope.scaling.factor"))?,
        })),
        Some(other) => Err(Error::Unsupported(format!(
            "{}: RoPE scaling `{other}` (metadata `{scaling_key}`) is not supported for Gemma 3 \
             GGUF files",
            file.path().display()
        ))),
    }
}

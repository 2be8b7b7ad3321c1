//! GGUF tensors served under Hugging Face names, in HF layout.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::packed::{PackedRows, gather_rows};
use crate::weights::WeightSource;

/// What an architecture's `from_gguf` makes of a GGUF file: the model config in Hugging Face's
/// `config.json` form and where each HF tensor comes from.
#[derive(Debug, Clone)]
pub struct GgufTranslation {
    /// The config as the architecture's loader reads it (`model_type` included).
    pub config: serde_json::Value,
    /// One entry per HF tensor the file provides.
    pub tensors: Vec<TensorMap>,
}

/// One HF tensor and the GGUF tensor it is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorMap {
    /// The Hugging Face name (`model.layers.0.self_attn.q_proj.weight`).
    pub hf_name: String,
    /// The GGUF name (`blk.0.attn_q.weight`).
    pub gguf_name: String,
    /// What turns the GGUF values into the HF values.
    pub transform: Transform,
}

impl TensorMap {
    /// A tensor stored exactly as HF stores it.
    pub fn new(hf_name: impl Into<String>, gguf_name: impl Into<String>) -> Self {
        Self::with(hf_name, gguf_name, Transform::None)
    }

    /// A tensor that needs `transform`.
    pub fn with(
        hf_name: impl Into<String>,
        gguf_name: impl Into<String>,
        transform: Transform,
    ) -> Self {
        Self {
            hf_name: hf_name.into(),
            gguf_name: gguf_name.into(),
            transform,
        }
    }
}

/// How llama.cpp's storage of a tensor differs from Hugging Face's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transform {
    /// Identical.
    None,
    /// llama.cpp's converter permutes the rows of Llama's `q_proj`/`k_proj` (weights and
    /// biases) within each head from HF's `rotate_half` layout (`[2, head_dim/2]`) to its
    /// interleaved one (`[head_dim/2, 2]`); this undoes it. `n_heads` is the number of heads
    /// the tensor holds (key-value heads for `k_proj`).
    UnpermuteRope { n_heads: usize },
    /// Adds a constant to every value (Gemma: llama.cpp stores norm weights as `1 + w`, HF as
    /// `w`, so the translation adds `-1`).
    AddScalar(f32),
}

impl Transform {
    /// Applies the transform to row-major `values` of `shape` (PyTorch order).
    pub fn apply(self, values: Vec<f32>, shape: &[usize]) -> std::result::Result<Vec<f32>, String> {
        match self {
            Transform::None => Ok(values),
            Transform::AddScalar(c) => Ok(values.into_iter().map(|v| v + c).collect()),
            Transform::UnpermuteRope { n_heads } => unpermute_rope(&values, shape, n_heads),
        }
    }
}

/// Undoes llama.cpp's rope permutation: in each head, GGUF row `2·i + j` (`i < head_dim/2`,
/// `j < 2`) is HF row `j·head_dim/2 + i`.
fn unpermute_rope(
    values: &[f32],
    shape: &[usize],
    n_heads: usize,
) -> std::result::Result<Vec<f32>, String> {
    let rows = shape.first().copied().unwrap_or(0);
    let order = unpermuted_order(rows, n_heads)?;
    Ok(gather_rows(values, values.len() / rows.max(1), &order))
}

/// The GGUF row each HF row comes from under llama.cpp's rope permutation.
fn unpermuted_order(rows: usize, n_heads: usize) -> std::result::Result<Vec<usize>, String> {
    if n_heads == 0 || !rows.is_multiple_of(2 * n_heads) {
        return Err(format!(
            "cannot undo the rope permutation: {rows} rows do not split into {n_heads} heads of an even size"
        ));
    }
    let half = rows / n_heads / 2;
    let mut order = vec![0; rows];
    for h in 0..n_heads {
        for i in 0..half {
            for j in 0..2 {
                order[h * 2 * half + j * half + i] = h * 2 * half + 2 * i + j;
            }
        }
    }
    Ok(order)
}

/// A GGUF file's tensors under Hugging Face names ([`WeightSource`]), dequantised to f32 and
/// transformed on read.
pub struct GgufWeights {
    file: GgufFile,
    /// HF name → (GGUF name, transform).
    map: BTreeMap<String, (String, Transform)>,
}

impl GgufWeights {
    /// Serves `file`'s tensors under the names of `tensors`; every GGUF tensor named there must
    /// exist.
    pub fn new(file: GgufFile, tensors: Vec<TensorMap>) -> Result<Self> {
        let mut map = BTreeMap::new();
        for t in tensors {
            if file.tensor(&t.gguf_name).is_none() {
                return Err(Error::model(
                    file.path(),
                    format!(
                        "tensor `{}` (the model's `{}`) is not in the file",
                        t.gguf_name, t.hf_name
                    ),
                ));
            }
            map.insert(t.hf_name, (t.gguf_name, t.transform));
        }
        Ok(Self { file, map })
    }

    /// The underlying file.
    pub fn file(&self) -> &GgufFile {
        &self.file
    }
}

impl WeightSource for GgufWeights {
    fn origin(&self) -> &Path {
        self.file.path()
    }

    fn names(&self) -> Vec<String> {
        self.map.keys().cloned().collect()
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let (gguf_name, _) = self.map.get(name)?;
        self.file.tensor(gguf_name).map(|t| t.shape.clone())
    }

    fn read(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (gguf_name, transform) = self.map.get(name).ok_or_else(|| {
            Error::model(
                self.file.path(),
                format!("the model's tensor `{name}` has no GGUF counterpart"),
            )
        })?;
        let (values, shape) = self.file.read_f32(gguf_name)?;
        let values = transform.apply(values, &shape).map_err(|msg| {
            Error::model(self.file.path(), format!("tensor `{gguf_name}`: {msg}"))
        })?;
        Ok((values, shape))
    }

    fn packed(&self, name: &str) -> Result<Option<PackedRows>> {
        let Some((gguf_name, transform)) = self.map.get(name) else {
            return Ok(None);
        };
        let Some(packed) = self.file.packed(gguf_name)? else {
            return Ok(None);
        };
        let bad =
            |msg: String| Error::model(self.file.path(), format!("tensor `{gguf_name}`: {msg}"));
        match *transform {
            Transform::None => Ok(Some(packed)),
            Transform::UnpermuteRope { n_heads } => {
                let order = unpermuted_order(packed.rows(), n_heads).map_err(bad)?;
                packed.permute_rows(&order).map(Some).map_err(bad)
            }
            // Not a linear map's weight: no packed form.
            Transform::AddScalar(_) => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unpermute_inverts_llama_cpp_permutation() {
        // llama.cpp's `permute`: reshape(n_head, 2, rows/n_head/2, …).swapaxes(1, 2).
        let (n_heads, head_dim, cols) = (2, 4, 3);
        let rows = n_heads * head_dim;
        let hf: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..n_heads {
            for j in 0..2 {
                for i in 0..head_dim / 2 {
                    let src = h * head_dim + j * head_dim / 2 + i;
                    let dst = h * head_dim + 2 * i + j;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        let back = Transform::UnpermuteRope { n_heads }
            .apply(gguf, &[rows, cols])
            .unwrap();
        assert_eq!(back, hf);
        // Biases (1-D) permute the same way.
        let bias: Vec<f32> = vec![0.0, 2.0, 1.0, 3.0];
        assert_eq!(
            Transform::UnpermuteRope { n_heads: 1 }
                .apply(bias, &[4])
                .unwrap(),
            vec![0.0, 1.0, 2.0, 3.0]
        );
        assert!(
            Transform::UnpermuteRope { n_heads: 3 }
                .apply(vec![0.0; 8], &[8])
                .is_err()
        );
        assert_eq!(
            Transform::AddScalar(-1.0)
                .apply(vec![1.5, 2.0], &[2])
                .unwrap(),
            vec![0.5, 1.0]
        );
    }
}

//! Reading weights by their Hugging Face tensor names, as f32, from any container format.
//!
//! Model crates only ever see HF names and HF layouts; a container (safetensors here, GGUF in
//! its own module) maps its storage to them.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor, TensorData};
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};
use crate::packed::PackedRows;

/// Tensors by HF name.
pub trait WeightSource: Send + Sync {
    /// The file (or folder) errors should name.
    fn origin(&self) -> &Path;
    /// Every tensor name, sorted.
    fn names(&self) -> Vec<String>;
    /// The shape of `name` (PyTorch order), if present.
    fn shape(&self, name: &str) -> Option<Vec<usize>>;
    /// The values of `name` as f32, row-major, with its shape.
    fn read(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)>;
    /// Matrix `name` in the container's block-quantised storage, when it has one: the same
    /// values as [`Self::read`], 4–8 bits each. Float containers have none.
    fn packed(&self, _name: &str) -> Result<Option<PackedRows>> {
        Ok(None)
    }
}

impl dyn WeightSource + '_ {
    /// True when `name` exists.
    pub fn contains(&self, name: &str) -> bool {
        self.shape(name).is_some()
    }

    /// Loads `name` as a tensor of the expected shape, or says what is wrong.
    pub fn tensor<const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let (values, shape) = self.read(name)?;
        if shape != expected {
            return Err(Error::model(
                self.origin(),
                format!("tensor `{name}` has shape {shape:?}, but the config implies {expected:?}"),
            ));
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::model(
                self.origin(),
                format!(
                    "tensor `{name}` holds a non-finite value ({}) at flat index {i}",
                    values[i]
                ),
            ));
        }
        Ok(Tensor::from_data(TensorData::new(values, expected), device))
    }

    /// Like [`Self::tensor`] for an optional tensor: `Ok(None)` when absent.
    pub fn optional<const D: usize>(
        &self,
        name: &str,
        expected: [usize; D],
        device: &Device,
    ) -> Result<Option<Tensor<D>>> {
        if self.contains(name) {
            self.tensor(name, expected, device).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// One or more memory-mapped safetensors files (sharded checkpoints have an index).
pub struct SafetensorsWeights {
    origin: PathBuf,
    files: Vec<(PathBuf, Mmap)>,
    /// tensor name → file index
    index: HashMap<String, usize>,
}

impl SafetensorsWeights {
    /// Opens one `.safetensors` file.
    pub fn open(path: &Path) -> Result<Self> {
        let mut w = Self {
            origin: path.to_path_buf(),
            files: Vec::new(),
            index: HashMap::new(),
        };
        w.add_file(path)?;
        Ok(w)
    }

    /// Opens a sharded checkpoint from its `model.safetensors.index.json`.
    pub fn open_sharded(index_path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(index_path).map_err(|e| Error::io(index_path, e))?;
        let json: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::model(index_path, format!("invalid JSON: {e}")))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::model(index_path, "field `weight_map`: expected an object"))?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut shards: Vec<String> = map
            .values()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    Error::model(
                        index_path,
                        "field `weight_map`: expected file names as strings",
                    )
                })
            })
            .collect::<Result<_>>()?;
        shards.sort();
        shards.dedup();
        let mut w = Self {
            origin: index_path.to_path_buf(),
            files: Vec::new(),
            index: HashMap::new(),
        };
        for shard in shards {
            w.add_file(&dir.join(shard))?;
        }
        for name in map.keys() {
            if !w.index.contains_key(name) {
                return Err(Error::model(
                    index_path,
                    format!("`weight_map` lists `{name}`, but no shard contains it"),
                ));
            }
        }
        Ok(w)
    }

    /// The files this source reads.
    pub fn files(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the file is opened read-only and Strata never writes to weight files; as with
        // every mmap, another process truncating it while we read would be undefined behaviour.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let st = SafeTensors::deserialize(&mmap)
            .map_err(|e| Error::model(path, format!("not a valid safetensors file: {e}")))?;
        let i = self.files.len();
        for name in st.names() {
            self.index.insert(name.to_string(), i);
        }
        self.files.push((path.to_path_buf(), mmap));
        Ok(())
    }

    fn view(&self, name: &str) -> Option<(&Path, safetensors::tensor::TensorView<'_>)> {
        let &i = self.index.get(name)?;
        let (path, mmap) = &self.files[i];
        let st = SafeTensors::deserialize(mmap).ok()?;
        st.tensor(name).ok().map(|v| (path.as_path(), v))
    }
}

impl WeightSource for SafetensorsWeights {
    fn origin(&self) -> &Path {
        &self.origin
    }

    fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.index.keys().cloned().collect();
        names.sort();
        names
    }

    fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.view(name).map(|(_, v)| v.shape().to_vec())
    }

    fn read(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let (path, view) = self.view(name).ok_or_else(|| {
            Error::model(
                &self.origin,
                format!("tensor `{name}` is missing from the checkpoint"),
            )
        })?;
        let bytes = view.data();
        let values: Vec<f32> = match view.dtype() {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::model(
                    path,
                    format!("tensor `{name}` has dtype {other:?}; expected F32, F16 or BF16"),
                ));
            }
        };
        Ok((values, view.shape().to_vec()))
    }
}

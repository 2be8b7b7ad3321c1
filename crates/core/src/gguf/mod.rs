//! GGUF files (llama.cpp's single-file format): metadata, tensors dequantised to f32, and the
//! translation of an architecture's GGUF naming to the Hugging Face names and layouts model crates
//! load.
//!
//! Parsing and dequantisation are candle's (`candle_core::quantized`), which matches ggml
//! bit-exactly. Everything around it is checked here first, so a damaged or lying file is an
//! [`Error::Model`] naming the file and the tensor, never a panic or garbage: every tensor's
//! shape, type and byte range are validated against the file's length when it is opened, and a
//! type Strata does not dequantise is reported when that tensor is read.
//!
//! Architecture knowledge stays out of this module: an architecture registers
//! [`ArchitectureRegistration::from_gguf`](crate::ArchitectureRegistration::from_gguf), which
//! reads the `<arch>.*` keys into an HF `config.json` and maps tensor names
//! ([`GgufTranslation`]); [`GgufWeights`] then serves the HF names.

mod tokenizer;
mod weights;

pub use tokenizer::{TokenizerSummary, build_tokenizer};
pub use weights::{GgufTranslation, GgufWeights, TensorMap, Transform};

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::{GgmlDType, ggml_file};
use memmap2::{Mmap, UncheckedAdvice};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::packed::PackedRows;

/// A ggml tensor type (the storage type of one GGUF tensor): floats, the legacy block quants
/// (`Q4_0` … `Q8_1`, 32 values per block) and the k-quants (`Q2_K` … `Q8_K`, 256 per block).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

impl GgmlType {
    /// The types Strata dequantises (what llama.cpp stores model weights in; `Q8_1` and `Q8_K`
    /// are only ggml's intermediate formats for matrix products).
    pub const SUPPORTED: [GgmlType; 13] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ];

    /// ggml's name for the type (`Q4_K`), as llama.cpp and gguf-py print it.
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q5_0 => "Q5_0",
            GgmlType::Q5_1 => "Q5_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q8_1 => "Q8_1",
            GgmlType::Q2K => "Q2_K",
            GgmlType::Q3K => "Q3_K",
            GgmlType::Q4K => "Q4_K",
            GgmlType::Q5K => "Q5_K",
            GgmlType::Q6K => "Q6_K",
            GgmlType::Q8K => "Q8_K",
        }
    }

    /// Whether [`GgufFile::read_f32`] dequantises this type.
    pub fn is_supported(self) -> bool {
        Self::SUPPORTED.contains(&self)
    }

    /// Whether values are stored in blocks with their own scales (every type but the floats).
    pub fn is_block_quantised(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16)
    }

    fn from_candle(dtype: GgmlDType) -> Self {
        CANDLE_TYPES
            .iter()
            .find(|(_, d)| *d == dtype)
            .map(|(t, _)| *t)
            .expect("CANDLE_TYPES lists every candle GgmlDType")
    }

    pub(crate) fn to_candle(self) -> GgmlDType {
        CANDLE_TYPES
            .iter()
            .find(|(t, _)| *t == self)
            .map(|(_, d)| *d)
            .expect("CANDLE_TYPES lists every GgmlType")
    }

    fn supported_list() -> String {
        Self::SUPPORTED.map(Self::name).join(", ")
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Strata's type for each of candle's.
const CANDLE_TYPES: [(GgmlType, GgmlDType); 15] = [
    (GgmlType::F32, GgmlDType::F32),
    (GgmlType::F16, GgmlDType::F16),
    (GgmlType::BF16, GgmlDType::BF16),
    (GgmlType::Q4_0, GgmlDType::Q4_0),
    (GgmlType::Q4_1, GgmlDType::Q4_1),
    (GgmlType::Q5_0, GgmlDType::Q5_0),
    (GgmlType::Q5_1, GgmlDType::Q5_1),
    (GgmlType::Q8_0, GgmlDType::Q8_0),
    (GgmlType::Q8_1, GgmlDType::Q8_1),
    (GgmlType::Q2K, GgmlDType::Q2K),
    (GgmlType::Q3K, GgmlDType::Q3K),
    (GgmlType::Q4K, GgmlDType::Q4K),
    (GgmlType::Q5K, GgmlDType::Q5K),
    (GgmlType::Q6K, GgmlDType::Q6K),
    (GgmlType::Q8K, GgmlDType::Q8K),
];

/// ggml's name of a type id candle does not parse (the i-quants, ternary and MXFP4 types), for
/// error messages.
fn ggml_type_id_name(id: u32) -> Option<&'static str> {
    Some(match id {
        4 => "Q4_2 (removed from ggml)",
        5 => "Q4_3 (removed from ggml)",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

/// One tensor of a GGUF file, validated against the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GgufTensor {
    /// Storage type.
    pub ggml_type: GgmlType,
    /// Shape in PyTorch order (GGUF's `ne` reversed): a linear weight is `[out, in]`.
    pub shape: Vec<usize>,
    /// Number of elements.
    pub n_elements: u64,
    /// Absolute byte offset of the data in the file.
    pub start: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

/// An open GGUF file: metadata, validated tensor infos, and the memory-mapped data.
pub struct GgufFile {
    path: PathBuf,
    /// Shared with the [`PackedRows`] served from it.
    mmap: Arc<Mmap>,
    metadata: HashMap<String, Value>,
    tensors: BTreeMap<String, GgufTensor>,
    version: u32,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .finish()
    }
}

/// `bytes` of type `ty` and `shape` (PyTorch order) as f32, row-major, by candle: the one
/// dequantisation Strata runs, for f32 copies and as the definition of packed blocks.
pub(crate) fn dequantize(
    ty: GgmlType,
    bytes: &[u8],
    shape: &[usize],
) -> candle_core::Result<Vec<f32>> {
    let cpu = candle_core::Device::Cpu;
    ggml_file::qtensor_from_ggml(ty.to_candle(), bytes, shape.to_vec(), &cpu)
        .and_then(|q| q.dequantize(&cpu))
        .and_then(|x| x.flatten_all())
        .and_then(|x| x.to_vec1::<f32>())
}

impl Drop for GgufFile {
    /// Packed matrices outlive the file when a model keeps them: its pages, read while the
    /// model was loaded, are dropped from this process's memory (a later read brings them back
    /// from the file), so a model that never uses them does not hold the file resident.
    fn drop(&mut self) {
        if Arc::strong_count(&self.mmap) > 1 {
            // SAFETY: the mapping is read-only and file-backed, so discarding its pages only
            // makes the next access read them from the file again: no value changes.
            let _ = unsafe { self.mmap.unchecked_advise(UncheckedAdvice::DontNeed) };
        }
    }
}

impl GgufFile {
    /// True when `path` names a GGUF file by its extension (`.gguf`, any case).
    pub fn is_gguf_path(path: &Path) -> bool {
        path.extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
    }

    /// Opens and validates `path`: the header parses, and every tensor's type is known, its
    /// shape fits its type's blocks and its bytes lie inside the file.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: read-only mapping of a file Strata never writes; as with every mmap, another
        // process truncating it while it is read would be undefined behaviour.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let bad = |msg: String| Error::model(path, msg);
        if mmap.len() < 8 || &mmap[..4] != b"GGUF" {
            return Err(bad(
                "not a GGUF file (the first bytes are not the `GGUF` magic)".into(),
            ));
        }
        let version = u32::from_le_bytes([mmap[4], mmap[5], mmap[6], mmap[7]]);
        let mut cursor = Cursor::new(&mmap[..]);
        // candle validates lengths against the file size, but a few values it trusts (a zero
        // `general.alignment`) would make it divide by zero: contain that as an error too.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut cursor)));
        let content = match parsed {
            Ok(Ok(content)) => content,
            Ok(Err(e)) => {
                return Err(bad(header_error(
                    &mmap,
                    cursor.position(),
                    &candle_message(&e),
                )));
            }
            Err(_) => {
                return Err(bad(
                    "malformed GGUF header (the parser rejected its layout)".into(),
                ));
            }
        };
        let file_len = mmap.len() as u64;
        let mut tensors = BTreeMap::new();
        // In file order, so a truncated file names the first tensor it cuts.
        let mut infos: Vec<_> = content.tensor_infos.iter().collect();
        infos.sort_by_key(|(name, info)| (info.offset, name.as_str()));
        for (name, info) in infos {
            let ggml_type = GgmlType::from_candle(info.ggml_dtype);
            let shape = info.shape.dims().to_vec();
            let tensor = validate_tensor(
                name,
                ggml_type,
                shape,
                content.tensor_data_offset,
                info.offset,
                file_len,
            )
            .map_err(bad)?;
            tensors.insert(name.clone(), tensor);
        }
        Ok(Self {
            path: path.to_path_buf(),
            mmap: Arc::new(mmap),
            metadata: content.metadata,
            tensors,
            version,
        })
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The GGUF format version (1–3).
    pub fn version(&self) -> u32 {
        self.version
    }

    /// File size in bytes.
    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// `general.architecture` (`llama`, `qwen2`, `gemma3`, …).
    pub fn architecture(&self) -> Result<&str> {
        self.string("general.architecture")
    }

    /// Every metadata key, sorted.
    pub fn metadata_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.metadata.keys().map(String::as_str).collect();
        keys.sort_unstable();
        keys
    }

    /// True when the metadata holds `key`.
    pub fn has(&self, key: &str) -> bool {
        self.metadata.contains_key(key)
    }

    fn value(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::model(&self.path, format!("metadata key `{key}` is missing")))
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value) -> Error {
        Error::model(
            &self.path,
            format!(
                "metadata `{key}`: expected {expected}, found {}",
                describe(found)
            ),
        )
    }

    /// A non-negative integer (any GGUF integer type).
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.value(key)?;
        as_u64(v).ok_or_else(|| self.wrong_type(key, "a non-negative integer", v))
    }

    /// [`Self::u64`] as a `usize`, for sizes and counts.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.u64(key)?;
        usize::try_from(v)
            .map_err(|_| Error::model(&self.path, format!("metadata `{key}`: {v} is too large")))
    }

    /// [`Self::usize`], or `None` when the key is absent.
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        self.optional(key, Self::usize)
    }

    /// A float (`f32` or `f64`), widened to `f64` (an `f32` keeps its exact value).
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.value(key)?;
        match v {
            Value::F32(x) => Ok(f64::from(*x)),
            Value::F64(x) => Ok(*x),
            other => Err(self.wrong_type(key, "a float", other)),
        }
    }

    /// [`Self::f64`], or `None` when the key is absent.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        self.optional(key, Self::f64)
    }

    /// A boolean.
    pub fn bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            Value::Bool(b) => Ok(*b),
            other => Err(self.wrong_type(key, "a boolean", other)),
        }
    }

    /// [`Self::bool`], or `None` when the key is absent.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        self.optional(key, Self::bool)
    }

    /// A string.
    pub fn string(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            Value::String(s) => Ok(s),
            other => Err(self.wrong_type(key, "a string", other)),
        }
    }

    /// [`Self::string`], or `None` when the key is absent.
    pub fn opt_string(&self, key: &str) -> Result<Option<&str>> {
        self.optional(key, Self::string)
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key, "an array of strings", |v| match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        })
    }

    /// An array of integers (any GGUF integer type; `token_type` is `i32`).
    pub fn i64s(&self, key: &str) -> Result<Vec<i64>> {
        self.array(key, "an array of integers", as_i64)
    }

    /// An array of floats.
    pub fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        self.array(key, "an array of floats", |v| match v {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            _ => None,
        })
    }

    fn array<'a, T>(
        &'a self,
        key: &str,
        expected: &str,
        item: impl Fn(&'a Value) -> Option<T>,
    ) -> Result<Vec<T>> {
        let v = self.value(key)?;
        let Value::Array(items) = v else {
            return Err(self.wrong_type(key, expected, v));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, x)| {
                item(x).ok_or_else(|| {
                    Error::model(
                        &self.path,
                        format!(
                            "metadata `{key}`: expected {expected}, element {i} is {}",
                            describe(x)
                        ),
                    )
                })
            })
            .collect()
    }

    fn optional<'a, T>(
        &'a self,
        key: &str,
        get: impl Fn(&'a Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.has(key) {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Every tensor by GGUF name.
    pub fn tensors(&self) -> &BTreeMap<String, GgufTensor> {
        &self.tensors
    }

    /// One tensor's info.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensor> {
        self.tensors.get(name)
    }

    /// Dequantises tensor `name` to f32, row-major, with its shape in PyTorch order. Errors name
    /// the file, the tensor and, for a type Strata does not dequantise, the type.
    pub fn read_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<usize>)> {
        let t = self.tensors.get(name).ok_or_else(|| {
            Error::model(&self.path, format!("tensor `{name}` is not in the file"))
        })?;
        if !t.ggml_type.is_supported() {
            return Err(Error::model(
                &self.path,
                format!(
                    "tensor `{name}` is stored as {}, which Strata cannot dequantise (supported: {})",
                    t.ggml_type,
                    GgmlType::supported_list()
                ),
            ));
        }
        let candle_err = |e: candle_core::Error| {
            Error::model(
                &self.path,
                format!("tensor `{name}` ({}): {}", t.ggml_type, candle_message(&e)),
            )
        };
        // Validated at open: start + n_bytes lies within the mapping.
        let bytes = &self.mmap[t.start as usize..(t.start + t.n_bytes) as usize];
        let values = dequantize(t.ggml_type, bytes, &t.shape).map_err(candle_err)?;
        Ok((values, t.shape.clone()))
    }

    /// Matrix `name` in its own block-quantised storage (PyTorch order `[rows, cols]`, no copy),
    /// or `None` when it is not a block-quantised matrix.
    pub fn packed(&self, name: &str) -> Result<Option<PackedRows>> {
        let Some(t) = self.tensors.get(name) else {
            return Ok(None);
        };
        let &[rows, cols] = t.shape.as_slice() else {
            return Ok(None);
        };
        if !t.ggml_type.is_block_quantised() || !t.ggml_type.is_supported() {
            return Ok(None);
        }
        PackedRows::mapped(
            t.ggml_type,
            rows,
            cols,
            Arc::clone(&self.mmap),
            t.start as usize,
            t.n_bytes as usize,
        )
        .map(Some)
        .map_err(|msg| Error::model(&self.path, format!("tensor `{name}`: {msg}")))
    }

    /// What `strata inspect` shows about the file: format, tensor types, tokenizer.
    pub fn summary(&self) -> Result<GgufSummary> {
        let mut tensor_types: BTreeMap<String, usize> = BTreeMap::new();
        for t in self.tensors.values() {
            *tensor_types
                .entry(t.ggml_type.name().to_string())
                .or_default() += 1;
        }
        Ok(GgufSummary {
            version: self.version,
            architecture: self.architecture()?.to_string(),
            name: self.opt_string("general.name")?.map(str::to_string),
            n_tensors: self.tensors.len(),
            n_elements: self.tensors.values().map(|t| t.n_elements).sum(),
            tensor_types,
            tokenizer: TokenizerSummary::read(self)?,
        })
    }
}

/// What `strata inspect` prints about a GGUF file.
#[derive(Debug, Clone, Serialize)]
pub struct GgufSummary {
    /// GGUF format version.
    pub version: u32,
    /// `general.architecture`.
    pub architecture: String,
    /// `general.name`.
    pub name: Option<String>,
    /// Number of tensors.
    pub n_tensors: usize,
    /// Elements over all tensors (the parameter count as stored, tied matrices once).
    pub n_elements: u64,
    /// Tensor count per ggml type (`Q4_K` → 12).
    pub tensor_types: BTreeMap<String, usize>,
    /// The tokenizer the metadata describes, when it describes one.
    pub tokenizer: Option<TokenizerSummary>,
}

/// Checks one tensor info against the file: known type, shape that fits the type's blocks, a
/// byte range inside the file (with every product and sum overflow-checked).
fn validate_tensor(
    name: &str,
    ggml_type: GgmlType,
    shape: Vec<usize>,
    data_offset: u64,
    offset: u64,
    file_len: u64,
) -> std::result::Result<GgufTensor, String> {
    let what = || format!("tensor `{name}` ({ggml_type}, shape {shape:?})");
    let n_elements = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .ok_or_else(|| format!("{}: the element count overflows", what()))?;
    let dtype = ggml_type.to_candle();
    let block = dtype.block_size() as u64;
    let row = shape.last().copied().unwrap_or(1) as u64;
    if !row.is_multiple_of(block) {
        return Err(format!(
            "{}: rows of {row} values do not fill whole {ggml_type} blocks of {block}",
            what()
        ));
    }
    let n_bytes = (n_elements / block)
        .checked_mul(dtype.type_size() as u64)
        .ok_or_else(|| format!("{}: the byte size overflows", what()))?;
    let start = data_offset
        .checked_add(offset)
        .ok_or_else(|| format!("{}: the data offset overflows", what()))?;
    match start.checked_add(n_bytes) {
        Some(end) if end <= file_len => Ok(GgufTensor {
            ggml_type,
            shape,
            n_elements,
            start,
            n_bytes,
        }),
        _ => Err(format!(
            "{}: its {n_bytes} bytes at offset {start} run past the end of the file ({file_len} bytes): \
             the file is truncated or its header is wrong",
            what()
        )),
    }
}

/// A readable message for a header candle rejected. For an unknown tensor type id the cursor
/// stands right after that id, which lets the message name the tensor and the type.
fn header_error(bytes: &[u8], position: u64, message: &str) -> String {
    if let Some(id) = message
        .strip_prefix("unknown dtype for tensor ")
        .and_then(|s| s.trim().parse::<u32>().ok())
    {
        let type_name = ggml_type_id_name(id)
            .map(|n| format!(" ({n})"))
            .unwrap_or_default();
        let tensor = tensor_name_before(bytes, position as usize)
            .map(|n| format!("tensor `{n}` has "))
            .unwrap_or_else(|| "a tensor has ".into());
        return format!(
            "{tensor}ggml type id {id}{type_name}, which Strata cannot read (supported: {})",
            GgmlType::supported_list()
        );
    }
    format!("malformed GGUF header: {message}")
}

/// The name of the tensor whose info ends at `end` (just after its type id), found by walking
/// back over `[name length u64][name][n_dims u32][dims u64 × n_dims][type u32]` (GGUF v2/v3).
fn tensor_name_before(bytes: &[u8], end: usize) -> Option<String> {
    let u64_at = |at: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(at..at + 8)?.try_into().ok()?))
    };
    let type_at = end.checked_sub(4)?;
    for n_dims in 1..=4usize {
        let dims_at = type_at.checked_sub(8 * n_dims)?;
        let n_dims_at = dims_at.checked_sub(4)?;
        if bytes.get(n_dims_at..dims_at)? != (n_dims as u32).to_le_bytes() {
            continue;
        }
        for len in 1..=n_dims_at.saturating_sub(8).min(1 << 16) {
            let name_at = n_dims_at - len;
            if u64_at(name_at - 8) == Some(len as u64) {
                return std::str::from_utf8(&bytes[name_at..n_dims_at])
                    .ok()
                    .map(str::to_string);
            }
        }
    }
    None
}

/// candle's message without the backtrace it appends when `RUST_BACKTRACE` is set.
fn candle_message(e: &candle_core::Error) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

fn as_u64(v: &Value) -> Option<u64> {
    as_i64(v).and_then(|x| u64::try_from(x).ok()).or(match v {
        Value::U64(x) => Some(*x),
        _ => None,
    })
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::U8(x) => Some(i64::from(*x)),
        Value::I8(x) => Some(i64::from(*x)),
        Value::U16(x) => Some(i64::from(*x)),
        Value::I16(x) => Some(i64::from(*x)),
        Value::U32(x) => Some(i64::from(*x)),
        Value::I32(x) => Some(i64::from(*x)),
        Value::U64(x) => i64::try_from(*x).ok(),
        Value::I64(x) => Some(*x),
        _ => None,
    }
}

/// `a string`, `an array of 3 values`, … for error messages.
fn describe(v: &Value) -> String {
    match v {
        Value::String(_) => "a string".into(),
        Value::Bool(_) => "a boolean".into(),
        Value::F32(_) | Value::F64(_) => "a float".into(),
        Value::Array(items) => format!("an array of {} values", items.len()),
        _ => "an integer".into(),
    }
}

/// Synthetic GGUF files for unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::fs::File;
    use std::path::Path;

    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// Values every synthetic tensor holds: `sin(0.37 i)`.
    pub fn values(n: usize) -> Vec<f32> {
        (0..n).map(|i| (i as f32 * 0.37).sin()).collect()
    }

    /// Writes a GGUF (v2, candle's writer) with `metadata` and tensors of the given types.
    pub fn write(path: &Path, metadata: &[(&str, Value)], tensors: &[(&str, GgmlDType, &[usize])]) {
        let qts: Vec<(&str, QTensor)> = tensors
            .iter()
            .map(|&(name, dtype, shape)| {
                let t =
                    Tensor::from_vec(values(shape.iter().product()), shape.to_vec(), &Device::Cpu)
                        .unwrap();
                (name, QTensor::quantize(&t, dtype).unwrap())
            })
            .collect();
        let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
        let ts: Vec<(&str, &QTensor)> = qts.iter().map(|(n, q)| (*n, q)).collect();
        gguf_file::write(&mut File::create(path).unwrap(), &md, &ts).unwrap();
    }

    /// A string array value.
    pub fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{values, write};
    use super::*;

    fn sample(dir: &Path) -> PathBuf {
        let path = dir.join("sample.gguf");
        write(
            &path,
            &[
                ("general.architecture", Value::String("toy".into())),
                ("toy.block_count", Value::U32(2)),
                ("toy.eps", Value::F32(1e-5)),
                ("toy.names", super::testing::strings(&["a", "b"])),
            ],
            &[
                ("exact.weight", GgmlDType::F32, &[3, 32]),
                ("q8.weight", GgmlDType::Q8_0, &[2, 64]),
                ("q81.weight", GgmlDType::Q8_1, &[1, 32]),
                ("last.weight", GgmlDType::F32, &[2, 32]),
            ],
        );
        path
    }

    fn open_err(path: &Path) -> String {
        match GgufFile::open(path) {
            Ok(_) => panic!("{} opened without an error", path.display()),
            Err(e) => {
                assert!(e.is_input_error(), "{e}");
                e.to_string()
            }
        }
    }

    /// Byte offset of the type id of tensor `name` in the header (GGUF v2 layout).
    fn type_id_at(bytes: &[u8], name: &str) -> usize {
        let at = bytes
            .windows(name.len())
            .position(|w| w == name.as_bytes())
            .unwrap()
            + name.len();
        let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at + 4 + 8 * n_dims
    }

    #[test]
    fn reads_metadata_and_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let file = GgufFile::open(&sample(dir.path())).unwrap();
        assert_eq!(file.architecture().unwrap(), "toy");
        assert_eq!(file.usize("toy.block_count").unwrap(), 2);
        assert_eq!(file.f64("toy.eps").unwrap(), f64::from(1e-5f32));
        assert_eq!(file.strings("toy.names").unwrap(), ["a", "b"]);
        assert_eq!(file.opt_usize("toy.missing").unwrap(), None);
        let missing = file.usize("toy.missing").unwrap_err().to_string();
        assert!(
            missing.contains("sample.gguf") && missing.contains("`toy.missing` is missing"),
            "{missing}"
        );
        let wrong = file.string("toy.block_count").unwrap_err().to_string();
        assert!(
            wrong.contains("expected a string, found an integer"),
            "{wrong}"
        );

        let (exact, shape) = file.read_f32("exact.weight").unwrap();
        assert_eq!((exact, shape), (values(96), vec![3, 32]));
        let (q8, shape) = file.read_f32("q8.weight").unwrap();
        assert_eq!(shape, vec![2, 64]);
        assert!(
            q8.iter()
                .zip(values(128))
                .all(|(a, b)| (a - b).abs() < 1e-2)
        );
        let t = file.tensor("q8.weight").unwrap();
        assert_eq!(
            (t.ggml_type, t.n_elements, t.n_bytes),
            (GgmlType::Q8_0, 128, 4 * 34)
        );

        let summary = file.summary().unwrap();
        assert_eq!(summary.tensor_types.get("F32"), Some(&2));
        assert_eq!(summary.n_elements, 96 + 128 + 32 + 64);
        assert!(summary.tokenizer.is_none());
    }

    #[test]
    fn an_unsupported_type_names_the_tensor_and_the_type() {
        let dir = tempfile::tempdir().unwrap();
        let file = GgufFile::open(&sample(dir.path())).unwrap();
        let err = file.read_f32("q81.weight").unwrap_err().to_string();
        assert!(
            err.contains("`q81.weight`") && err.contains("Q8_1") && err.contains("Q4_K"),
            "{err}"
        );
        let absent = file.read_f32("nope").unwrap_err().to_string();
        assert!(absent.contains("`nope` is not in the file"), "{absent}");
    }

    #[test]
    fn damaged_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let good = std::fs::read(sample(dir.path())).unwrap();
        let case = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            open_err(&path)
        };

        // Truncated: the last tensor's data runs past the end.
        let msg = case("truncated.gguf", &good[..good.len() - 10]);
        assert!(
            msg.contains("`last.weight`") && msg.contains("run past the end"),
            "{msg}"
        );
        // Truncated inside the header.
        let msg = case("header.gguf", &good[..40]);
        assert!(msg.contains("malformed GGUF header"), "{msg}");
        // Not a GGUF at all.
        let msg = case("text.gguf", b"hello, world, this is not a model");
        assert!(msg.contains("not a GGUF file"), "{msg}");

        // The header claims more tensors than the file holds.
        let mut lying = good.clone();
        lying[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
        let msg = case("count.gguf", &lying);
        assert!(msg.contains("malformed GGUF header"), "{msg}");

        // A tensor whose shape claims more bytes than exist (and one whose size overflows).
        let mut big = good.clone();
        let at = type_id_at(&big, "exact.weight") - 16;
        big[at..at + 8].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let msg = case("big.gguf", &big);
        assert!(
            msg.contains("`exact.weight`") && msg.contains("run past the end"),
            "{msg}"
        );
        big[at..at + 8].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        let msg = case("overflow.gguf", &big);
        assert!(
            msg.contains("`exact.weight`") && msg.contains("overflows"),
            "{msg}"
        );

        // A tensor offset past the end of the file.
        let mut offset = good.clone();
        let at = type_id_at(&offset, "last.weight") + 4;
        offset[at..at + 8].copy_from_slice(&(1u64 << 33).to_le_bytes());
        let msg = case("offset.gguf", &offset);
        assert!(
            msg.contains("`last.weight`") && msg.contains("run past the end"),
            "{msg}"
        );

        // An unknown ggml type id (16 = IQ2_XXS): named with its tensor.
        let mut unknown = good.clone();
        let at = type_id_at(&unknown, "q8.weight");
        unknown[at..at + 4].copy_from_slice(&16u32.to_le_bytes());
        let msg = case("type.gguf", &unknown);
        assert!(
            msg.contains("`q8.weight`") && msg.contains("IQ2_XXS"),
            "{msg}"
        );
        unknown[at..at + 4].copy_from_slice(&999u32.to_le_bytes());
        let msg = case("type999.gguf", &unknown);
        assert!(
            msg.contains("`q8.weight`") && msg.contains("type id 999"),
            "{msg}"
        );

        // A zero alignment (candle would divide by it).
        let zero = dir.path().join("align.gguf");
        write(
            &zero,
            &[("general.alignment", Value::U32(0))],
            &[("t", GgmlDType::F32, &[32])],
        );
        let msg = open_err(&zero);
        assert!(msg.contains("malformed GGUF header"), "{msg}");
    }
}

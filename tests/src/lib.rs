//! Shared helpers of Strata's workspace-level integration tests: where the fixtures are, reading
//! safetensors files as plain vectors, tolerance comparisons that name the worst element, and the
//! backends every conformance test runs on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};
use strata_core::Backend;

pub mod parity;

/// The workspace root (the folder holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The reference fixtures: `$STRATA_FIXTURES`, or `<workspace>/../shared/fixtures`.
pub fn fixtures_dir() -> PathBuf {
    std::env::var_os("STRATA_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("../shared/fixtures"))
}

/// `fixtures/tiny/<arch>`.
pub fn tiny_dir(arch: &str) -> PathBuf {
    fixtures_dir().join("tiny").join(arch)
}

/// `fixtures/real/<name>`.
pub fn real_dir(name: &str) -> PathBuf {
    fixtures_dir().join("real").join(name)
}

/// Where the real checkpoints are: `$STRATA_MODELS`, or `$HOME/.cache/strata/models`. Fill it
/// with `../shared/fixtures/fetch-models.sh "$STRATA_MODELS"` (`scripts/test.sh` does).
pub fn models_dir() -> PathBuf {
    match std::env::var_os("STRATA_MODELS").filter(|v| !v.is_empty()) {
        Some(dir) => PathBuf::from(dir),
        None => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(".cache/strata/models"),
    }
}

/// `models_dir()/rel_path` when it exists. When it does not, a test run in CI (`$CI` set) fails,
/// and a local run says what to run and returns `None` (the caller skips).
pub fn require_model(rel_path: &str) -> Option<PathBuf> {
    let path = models_dir().join(rel_path);
    if path.exists() {
        return Some(path);
    }
    let fetch = format!(
        "run `../shared/fixtures/fetch-models.sh {}` (or set STRATA_MODELS to where the models are)",
        models_dir().display()
    );
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0") {
        panic!(
            "{} is missing and CI is set: real-model tests never skip in CI; {fetch}",
            path.display()
        );
    }
    eprintln!("SKIPPED: {} is missing; {fetch}", path.display());
    None
}

/// The values of a stored tensor.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// An `F32` tensor.
    F32(Vec<f32>),
    /// An `I64` tensor.
    I64(Vec<i64>),
}

/// A tensor read from a safetensors file.
#[derive(Debug, Clone, PartialEq)]
pub struct Stored {
    /// Row-major values.
    pub values: Values,
    /// Shape.
    pub shape: Vec<usize>,
}

impl Stored {
    /// The values of an `F32` tensor (panics otherwise).
    pub fn f32(&self) -> &[f32] {
        match &self.values {
            Values::F32(v) => v,
            Values::I64(_) => panic!("expected an F32 tensor, found I64"),
        }
    }

    /// The values of an `I64` tensor (panics otherwise).
    pub fn i64(&self) -> &[i64] {
        match &self.values {
            Values::I64(v) => v,
            Values::F32(_) => panic!("expected an I64 tensor, found F32"),
        }
    }

    /// The rows of a `[rows, cols]` `I64` tensor.
    pub fn i64_rows(&self) -> Vec<Vec<i64>> {
        assert_eq!(
            self.shape.len(),
            2,
            "expected a matrix, found shape {:?}",
            self.shape
        );
        self.i64()
            .chunks(self.shape[1])
            .map(<[i64]>::to_vec)
            .collect()
    }
}

/// Every `F32`/`I64` tensor of a safetensors file, by name (panics with the path on failure).
pub fn read_safetensors(path: &Path) -> BTreeMap<String, Stored> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            let data = view.data();
            let values = match view.dtype() {
                Dtype::F32 => Values::F32(
                    data.chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                        .collect(),
                ),
                Dtype::I64 => Values::I64(
                    data.chunks_exact(8)
                        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
                        .collect(),
                ),
                other => panic!("{}: tensor `{name}` has dtype {other:?}", path.display()),
            };
            let shape = view.shape().to_vec();
            (name, Stored { values, shape })
        })
        .collect()
}

/// The outcome of comparing two arrays under `|a - b| <= atol + rtol·|b|`.
#[derive(Debug, Clone, PartialEq)]
pub struct Deviation {
    /// Largest `|a - b|`.
    pub max_abs: f64,
    /// Flat index of the element closest to (or furthest past) its bound.
    pub worst: usize,
    /// `|a - b| / (atol + rtol·|b|)` there: ≤ 1 passes.
    pub worst_ratio: f64,
    /// Actual and expected values there.
    pub worst_values: (f32, f32),
}

impl Deviation {
    /// True when every element is within its bound.
    pub fn passes(&self) -> bool {
        self.worst_ratio <= 1.0
    }
}

/// Compares `actual` with `expected` element-wise (equal lengths; NaN never passes).
pub fn compare(actual: &[f32], expected: &[f32], atol: f64, rtol: f64) -> Deviation {
    assert_eq!(
        actual.len(),
        expected.len(),
        "compared arrays differ in length"
    );
    let mut dev = Deviation {
        max_abs: 0.0,
        worst: 0,
        worst_ratio: 0.0,
        worst_values: (f32::NAN, f32::NAN),
    };
    for (i, (&a, &b)) in actual.iter().zip(expected).enumerate() {
        let diff = (a as f64 - b as f64).abs();
        let ratio = if diff.is_nan() {
            f64::INFINITY
        } else {
            diff / (atol + rtol * (b as f64).abs())
        };
        if i == 0 || ratio > dev.worst_ratio {
            dev.worst = i;
            dev.worst_ratio = ratio;
            dev.worst_values = (a, b);
        }
        if diff.is_nan() || diff > dev.max_abs {
            dev.max_abs = diff;
        }
    }
    dev
}

/// Row-major multi-index of flat index `i` in `shape`.
pub fn unravel(mut i: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &n) in index.iter_mut().zip(shape).rev() {
        *slot = i % n;
        i /= n;
    }
    index
}

/// Asserts `actual ≈ expected` (`shape` names the worst element's index in the message) and
/// returns the largest absolute deviation.
pub fn assert_close(
    what: &str,
    actual: &[f32],
    expected: &[f32],
    shape: &[usize],
    atol: f64,
    rtol: f64,
) -> f64 {
    assert_eq!(
        actual.len(),
        shape.iter().product::<usize>(),
        "{what}: {} values for shape {shape:?}",
        actual.len()
    );
    let dev = compare(actual, expected, atol, rtol);
    assert!(
        dev.passes(),
        "{what}: |a - b| > {atol} + {rtol}·|b| at {:?}: actual {}, expected {} (max |a - b| {:.3e})",
        unravel(dev.worst, shape),
        dev.worst_values.0,
        dev.worst_values.1,
        dev.max_abs
    );
    dev.max_abs
}

/// The backends conformance tests run on: flex, ndarray and wgpu, or the comma-separated subset
/// named by `$STRATA_TEST_BACKENDS`.
pub fn backends() -> Vec<Backend> {
    match std::env::var("STRATA_TEST_BACKENDS") {
        Ok(list) if !list.trim().is_empty() => list
            .split(',')
            .map(|name| {
                name.trim()
                    .parse()
                    .unwrap_or_else(|e| panic!("STRATA_TEST_BACKENDS: {e}"))
            })
            .collect(),
        _ => Backend::ALL.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::{compare, unravel};

    #[test]
    fn compare_reports_the_worst_element() {
        let dev = compare(&[1.0, 2.0, 3.5], &[1.0, 2.1, 3.0], 1e-4, 1e-4);
        assert_eq!(dev.worst, 2);
        assert!(!dev.passes());
        assert!((dev.max_abs - 0.5).abs() < 1e-9);
        assert!(compare(&[1.0, 2.0], &[1.0, 2.0001], 1e-4, 1e-4).passes());
        assert!(!compare(&[f32::NAN], &[0.0], 1.0, 0.0).passes());
        assert_eq!(unravel(7, &[2, 2, 3]), vec![1, 0, 1]);
    }
}

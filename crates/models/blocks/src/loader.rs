//! Loading HF-named tensors onto a device while counting parameters.

use std::path::Path;

use burn::tensor::{Device, Tensor};
use strata_core::Result;
use strata_core::packed::PackedRows;
use strata_core::weights::WeightSource;

/// Loads tensors by their Hugging Face names onto one device, checking every shape against what
/// the config implies, and counts the elements it loaded (a tied matrix is loaded, and counted,
/// once), which is the model's parameter count.
pub struct WeightLoader<'a> {
    source: &'a dyn WeightSource,
    device: Device,
    n_params: u64,
}

impl<'a> WeightLoader<'a> {
    /// A loader reading from `source` onto `device`.
    pub fn new(source: &'a dyn WeightSource, device: &Device) -> Self {
        Self {
            source,
            device: device.clone(),
            n_params: 0,
        }
    }

    /// The device tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The file (or folder) errors name.
    pub fn origin(&self) -> &Path {
        self.source.origin()
    }

    /// True when the checkpoint holds `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.source.contains(name)
    }

    /// Loads `name`, which must have shape `expected` (PyTorch order); errors name the file and
    /// the tensor.
    pub fn tensor<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
    ) -> Result<Tensor<D>> {
        let t = self.source.tensor(name, expected, &self.device)?;
        self.n_params += expected.iter().product::<usize>() as u64;
        Ok(t)
    }

    /// Like [`Self::tensor`] for an optional tensor: `Ok(None)` when the checkpoint lacks it.
    pub fn optional<const D: usize>(
        &mut self,
        name: &str,
        expected: [usize; D],
    ) -> Result<Option<Tensor<D>>> {
        if self.contains(name) {
            self.tensor(name, expected).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Matrix `name` (`[out, in]`, already loaded with [`Self::tensor`]) in the checkpoint's
    /// block-quantised storage, when it has one of that shape.
    pub fn packed(&self, name: &str, expected: [usize; 2]) -> Result<Option<PackedRows>> {
        Ok(self
            .source
            .packed(name)?
            .filter(|p| [p.rows(), p.cols()] == expected))
    }

    /// Number of parameters loaded so far.
    pub fn n_params(&self) -> u64 {
        self.n_params
    }
}

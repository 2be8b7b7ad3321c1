//! Run-time backend selection. Nothing in Strata is generic over a backend: a [`Backend`] names
//! one, and [`Backend::device`] gives the burn [`Device`] every tensor is created on.

use std::fmt;
use std::str::FromStr;

use burn::tensor::{Device, DeviceKind};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The burn backends this build supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// burn's pure-Rust CPU backend (gemm, with AVX-512 kernels where the CPU has them and
    /// AVX2/FMA otherwise). The fastest CPU backend measured on our machines, hence the default.
    #[default]
    Flex,
    /// burn's ndarray CPU backend (deprecated upstream, kept for comparison).
    Ndarray,
    /// WebGPU through wgpu: Vulkan, Metal, DX12 — or Mesa's lavapipe on a CPU-only machine.
    Wgpu,
}

impl Backend {
    /// Every supported backend, in the order `strata list` prints them.
    pub const ALL: [Backend; 3] = [Backend::Flex, Backend::Ndarray, Backend::Wgpu];

    /// The name used in experiment files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Flex => "flex",
            Backend::Ndarray => "ndarray",
            Backend::Wgpu => "wgpu",
        }
    }

    /// The burn device of this backend (the default adapter for wgpu).
    pub fn device(self) -> Device {
        match self {
            Backend::Flex => Device::flex(),
            #[allow(deprecated)] // ndarray is deprecated upstream; we still offer it by name.
            Backend::Ndarray => Device::ndarray(),
            Backend::Wgpu => Device::wgpu(DeviceKind::DefaultDevice),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Backend {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Backend::ALL
            .into_iter()
            .find(|b| b.name() == s)
            .ok_or_else(|| {
                Error::Unsupported(format!(
                    "unknown backend `{s}`: expected one of flex, ndarray, wgpu"
                ))
            })
    }
}

//! Where the products of a run or a benchmark run: the CPU engine, or the
//! CUDA engine (AMSim products bit-exact with the CPU's; see
//! [`amsim::cuda`]).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use amsim::cuda::CudaEngine;

use crate::error::{ExperimentError, Result};

/// Where the engines run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Device {
    /// The CPU engine (rayon threads).
    #[default]
    Cpu,
    /// The CUDA engine.
    Cuda,
}

impl Device {
    /// Every device.
    pub const ALL: [Device; 2] = [Device::Cpu, Device::Cuda];

    /// The name on the command line (`cpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }

    /// The CUDA engine for [`Device::Cuda`] (an error naming what is
    /// missing where no GPU is usable), `None` for the CPU.
    pub fn engine(self) -> Result<Option<Arc<CudaEngine>>> {
        match self {
            Device::Cpu => Ok(None),
            Device::Cuda => CudaEngine::global()
                .map(Some)
                .map_err(|e| ExperimentError::Other(format!("--device cuda: {e}"))),
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Device {
    type Err = ExperimentError;
    fn from_str(s: &str) -> Result<Self> {
        Device::ALL
            .into_iter()
            .find(|d| d.name() == s)
            .ok_or_else(|| {
                ExperimentError::Other(format!("unknown device '{s}'; valid devices: cpu, cuda"))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_by_name_and_the_cpu_needs_no_engine() {
        for d in Device::ALL {
            assert_eq!(d.name().parse::<Device>().unwrap(), d);
        }
        let e = "gpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("'gpu'") && e.contains("cpu, cuda"), "{e}");
        assert!(Device::Cpu.engine().unwrap().is_none());
    }
}

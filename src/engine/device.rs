//! Choosing where candle runs and in which precision.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// Where a person asked candle to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceRequest {
    /// A GPU when the build has one and the machine offers one, else the CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

/// The device chosen for a request, with a notice when it is not what was asked for (a CUDA
/// build on a machine without a usable GPU falls back to the CPU, and says so).
pub fn select_device(request: DeviceRequest) -> Result<(Device, Option<String>)> {
    match request {
        DeviceRequest::Cpu => Ok((Device::Cpu, None)),
        DeviceRequest::Auto => {
            if candle_core::utils::cuda_is_available() {
                match Device::new_cuda(0) {
                    Ok(d) => return Ok((d, None)),
                    Err(e) => {
                        let first = e.to_string();
                        let first = first.lines().next().unwrap_or("");
                        return Ok((
                            Device::Cpu,
                            Some(format!(
                                "this build has CUDA but no GPU could be opened ({first}); running on the CPU"
                            )),
                        ));
                    }
                }
            }
            if candle_core::utils::metal_is_available() {
                match Device::new_metal(0) {
                    Ok(d) => return Ok((d, None)),
                    Err(e) => {
                        return Ok((
                            Device::Cpu,
                            Some(format!(
                                "this build has Metal but no GPU could be opened ({e}); running on the CPU"
                            )),
                        ))
                    }
                }
            }
            Ok((Device::Cpu, None))
        }
        DeviceRequest::Metal => {
            if !candle_core::utils::metal_is_available() {
                bail!("this build has no Metal support; rebuild with `--features metal` on macOS");
            }
            Ok((
                Device::new_metal(0).context("cannot open the Metal device")?,
                None,
            ))
        }
        DeviceRequest::Cuda(ordinal) => {
            if !candle_core::utils::cuda_is_available() {
                bail!(
                    "this build has no CUDA support; rebuild with `--features cuda` (see the README's GPU section)"
                );
            }
            let device = Device::new_cuda(ordinal).map_err(|e| {
                anyhow::anyhow!(
                    "cannot open CUDA device {ordinal}: {}; `nvidia-smi -L` lists this machine's GPUs (numbered from 0)",
                    e.to_string().lines().next().unwrap_or("")
                )
            })?;
            Ok((device, None))
        }
    }
}

/// The weight dtype: f32 on CPU (candle's CPU matmul has no bf16 kernel), bf16 on a GPU.
pub fn default_dtype(device: &Device) -> DType {
    match device {
        Device::Cpu => DType::F32,
        _ => DType::BF16,
    }
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => format!("cpu ({} threads)", candle_core::utils::get_num_threads()),
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_always_works() {
        assert!(select_device(DeviceRequest::Cpu).unwrap().0.is_cpu());
        let (device, notice) = select_device(DeviceRequest::Auto).unwrap();
        if !candle_core::utils::cuda_is_available() && !candle_core::utils::metal_is_available() {
            assert!(device.is_cpu() && notice.is_none());
        }
    }

    #[test]
    fn a_missing_gpu_is_a_clear_error_or_a_visible_fallback() {
        if candle_core::utils::cuda_is_available() {
            // A CUDA build: a GPU number no machine has is refused by name.
            let err = select_device(DeviceRequest::Cuda(999)).unwrap_err();
            assert!(err.to_string().contains("CUDA device 999"), "{err}");
            // Auto either finds a GPU or says it fell back.
            let (device, notice) = select_device(DeviceRequest::Auto).unwrap();
            assert!(!device.is_cpu() || notice.is_some());
        } else {
            let err = select_device(DeviceRequest::Cuda(0)).unwrap_err();
            assert!(err.to_string().contains("--features cuda"), "{err}");
        }
    }
}

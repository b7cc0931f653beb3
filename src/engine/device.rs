//! Choosing where candle runs and in which precision.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};

/// `auto` (CUDA or Metal when built in and present, else CPU), `cpu`, `cuda`, `cuda:N`, `metal`.
pub fn select_device(spec: &str) -> Result<Device> {
    let spec = spec.trim().to_ascii_lowercase();
    match spec.as_str() {
        "cpu" => Ok(Device::Cpu),
        "auto" | "" => {
            if candle_core::utils::cuda_is_available() {
                Device::new_cuda(0).context("CUDA is built in but no GPU could be opened")
            } else if candle_core::utils::metal_is_available() {
                Device::new_metal(0).context("Metal is built in but no GPU could be opened")
            } else {
                Ok(Device::Cpu)
            }
        }
        "metal" => {
            if !candle_core::utils::metal_is_available() {
                bail!("this build has no Metal support; rebuild with `--features metal` on macOS");
            }
            Device::new_metal(0).context("cannot open the Metal device")
        }
        s if s == "cuda" || s.starts_with("cuda:") => {
            if !candle_core::utils::cuda_is_available() {
                bail!(
                    "this build has no CUDA support; rebuild with `--features cuda` (needs nvcc)"
                );
            }
            let ordinal = match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .with_context(|| format!("bad CUDA device ordinal in {s:?}"))?,
                None => 0,
            };
            Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))
        }
        other => bail!("unknown device {other:?}; use auto, cpu, cuda, cuda:N or metal"),
    }
}

/// The weight dtype: f32 on CPU (candle's CPU matmul has no bf16 kernel), bf16 on a GPU.
pub fn default_dtype(device: &Device) -> DType {
    match device {
        Device::Cpu => DType::F32,
        _ => DType::BF16,
    }
}

pub fn parse_dtype(name: &str) -> Result<DType> {
    match name.to_ascii_lowercase().as_str() {
        "f32" | "float32" => Ok(DType::F32),
        "bf16" | "bfloat16" => Ok(DType::BF16),
        "f16" | "float16" => Ok(DType::F16),
        other => bail!("unknown dtype {other:?}; use f32, bf16 or f16"),
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
    fn cpu_always_works_and_unknown_is_an_error() {
        assert!(select_device("cpu").unwrap().is_cpu());
        assert!(select_device("auto").is_ok());
        let err = select_device("tpu").unwrap_err().to_string();
        assert!(err.contains("tpu"));
        assert!(parse_dtype("bf16").is_ok());
        assert!(parse_dtype("f8").is_err());
    }
}

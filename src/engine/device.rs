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

/// Threads for the CPU engine on a machine with `cores` physical cores whose other work keeps
/// `busy` cores occupied: the cores left free, at least one.
///
/// candle's CPU thread pool waits for its workers by spinning. When another process holds a
/// core, the worker on it runs only in that process's gaps and every operation waits for it:
/// on 2 cores with other work running, decoding with 2 threads measured 1.7 tokens/s against
/// 27-29 with 1, and a LoRA step took 10.1-10.5 s against 4.5-5.3 s.
pub fn cpu_threads(cores: usize, busy: f64) -> usize {
    let cores = cores.max(1);
    let busy = if busy.is_finite() { busy.max(0.0) } else { 0.0 };
    let free = (cores as f64 - busy).round();
    (free as usize).clamp(1, cores)
}

/// How many cores other processes keep busy right now: the machine's non-idle time over
/// `window`, from /proc/stat (Linux; `None` elsewhere). Call it before this process starts
/// computing, so that the busy time is others'.
pub fn busy_cores(window: std::time::Duration) -> Option<f64> {
    let first = cpu_times()?;
    std::thread::sleep(window);
    let second = cpu_times()?;
    busy_between(first, second)
}

/// `(total, idle)` jiffies summed over all CPUs, and the number of CPUs.
fn cpu_times() -> Option<(u64, u64, usize)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let mut lines = stat.lines();
    let all = lines.next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = all
        .split_whitespace()
        .map(|f| f.parse().ok())
        .collect::<Option<_>>()?;
    // user nice system idle iowait irq softirq steal (guest time is inside user)
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).unwrap_or(&0);
    let cpus = lines
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((total, idle, cpus.max(1)))
}

fn busy_between(a: (u64, u64, usize), b: (u64, u64, usize)) -> Option<f64> {
    let total = b.0.checked_sub(a.0)?;
    let idle = b.1.checked_sub(a.1)?;
    if total == 0 {
        return None;
    }
    Some((total.saturating_sub(idle)) as f64 / total as f64 * b.2 as f64)
}

pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => match candle_core::utils::get_num_threads() {
            1 => "cpu (1 thread)".to_string(),
            n => format!("cpu ({n} threads)"),
        },
        Device::Cuda(_) => "cuda".to_string(),
        Device::Metal(_) => "metal".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_are_the_cores_left_free() {
        assert_eq!(cpu_threads(2, 0.0), 2);
        assert_eq!(cpu_threads(2, 0.4), 2);
        assert_eq!(cpu_threads(2, 0.6), 1);
        assert_eq!(cpu_threads(2, 7.6), 1);
        assert_eq!(cpu_threads(16, 3.2), 13);
        assert_eq!(cpu_threads(0, 0.0), 1);
        assert_eq!(cpu_threads(4, f64::NAN), 4);
        assert_eq!(cpu_threads(4, -1.0), 4);
    }

    #[test]
    fn busy_time_is_the_share_not_idle() {
        // 2 CPUs, 200 jiffies passed, 50 of them idle: 1.5 cores busy.
        assert_eq!(busy_between((1000, 400, 2), (1200, 450, 2)), Some(1.5));
        assert_eq!(busy_between((1000, 400, 2), (1000, 400, 2)), None);
        assert_eq!(busy_between((1000, 400, 2), (900, 400, 2)), None);
        assert!(busy_cores(std::time::Duration::from_millis(20)).is_some_and(|b| b >= 0.0));
    }

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

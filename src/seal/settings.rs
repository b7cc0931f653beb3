//! The boundary between the recorded configuration and the engine: the engine's settings types
//! built from the run configuration's plain data, and the engine's own rules applied to them
//! before a session folder is made (so a bad learning rate is refused up front, naming the
//! field, by the same rule the trainer keeps).

use crate::engine::device::DeviceRequest;
use crate::engine::sample::SamplingParams;
use crate::engine::train::{LossOn, Schedule, TrainConfig};
use crate::engine::{LoadOptions, LoraConfig, Quantize, Target};
use crate::record::config::{self, Dtype, ModelSection, RunConfig, TrainSettings};
use anyhow::{Context, Result};
use candle_core::DType;

pub fn target(t: config::LoraTarget) -> Target {
    match t {
        config::LoraTarget::Q => Target::Q,
        config::LoraTarget::K => Target::K,
        config::LoraTarget::V => Target::V,
        config::LoraTarget::O => Target::O,
        config::LoraTarget::Gate => Target::Gate,
        config::LoraTarget::Up => Target::Up,
        config::LoraTarget::Down => Target::Down,
    }
}

pub fn train_config(s: &TrainSettings) -> TrainConfig {
    TrainConfig {
        lora: LoraConfig {
            rank: s.lora.rank,
            alpha: s.lora.alpha,
            dropout: s.lora.dropout,
            targets: s.lora.targets.iter().map(|t| target(*t)).collect(),
        },
        learning_rate: s.learning_rate,
        schedule: match s.schedule {
            config::Schedule::Constant => Schedule::Constant,
            config::Schedule::Linear => Schedule::Linear,
            config::Schedule::Cosine => Schedule::Cosine,
        },
        warmup_steps: s.warmup_steps,
        epochs: s.epochs,
        batch_size: s.batch_size,
        grad_accum: s.grad_accum,
        max_grad_norm: s.max_grad_norm,
        weight_decay: s.weight_decay,
        loss: match s.loss {
            config::LossOn::All => LossOn::All,
            config::LossOn::Completion => LossOn::Completion,
        },
        seed: s.seed,
        max_seq_len: s.max_seq_len,
    }
}

/// Sampling settings of the self-edit generator, with a seed for one sample.
pub fn self_edit_sampling(cfg: &RunConfig, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature: cfg.self_edit.temperature,
        top_p: cfg.self_edit.top_p,
        max_tokens: cfg.self_edit.max_tokens,
        seed,
        stop: Vec::new(),
    }
}

pub fn device_request(d: config::Device) -> DeviceRequest {
    match d {
        config::Device::Auto => DeviceRequest::Auto,
        config::Device::Cpu => DeviceRequest::Cpu,
        config::Device::Cuda(n) => DeviceRequest::Cuda(n),
        config::Device::Metal => DeviceRequest::Metal,
    }
}

pub fn dtype(d: Dtype) -> DType {
    match d {
        Dtype::F32 => DType::F32,
        Dtype::Bf16 => DType::BF16,
        Dtype::F16 => DType::F16,
    }
}

pub fn quantize(q: config::Quantize) -> Quantize {
    match q {
        config::Quantize::Auto => Quantize::Auto,
        config::Quantize::Off => Quantize::Off,
        config::Quantize::Q8 => Quantize::Q8,
    }
}

/// The device and load options for a model section, with a notice when the device is not the
/// one asked for (a CUDA build without a usable GPU runs on the CPU).
pub fn load_options(m: &ModelSection) -> Result<(LoadOptions, Option<String>)> {
    let (device, notice) = crate::engine::device::select_device(device_request(m.device))
        .with_context(|| format!("model.device = {:?}", m.device.to_string()))?;
    Ok((
        LoadOptions {
            device,
            dtype: m.dtype.map(dtype),
            quantize: quantize(m.quantize),
            checkpoint_layers: m.checkpoint_layers,
        },
        notice,
    ))
}

/// Applies the trainer's and the sampler's rules to a run's settings, naming the section.
pub fn check(cfg: &RunConfig) -> Result<()> {
    train_config(&cfg.inner).validate().context("inner")?;
    train_config(&cfg.policy.train)
        .validate()
        .context("policy.train")?;
    self_edit_sampling(cfg, 0).validate().context("self_edit")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_training_settings_are_named_by_section() {
        let mut cfg = RunConfig::default();
        check(&cfg).unwrap();
        cfg.inner.learning_rate = -1.0;
        let err = format!("{:#}", check(&cfg).unwrap_err());
        assert!(
            err.contains("inner") && err.contains("learning_rate"),
            "{err}"
        );
        let mut cfg = RunConfig::default();
        cfg.policy.train.lora.rank = 0;
        let err = format!("{:#}", check(&cfg).unwrap_err());
        assert!(
            err.contains("policy.train") && err.contains("rank"),
            "{err}"
        );
    }

    #[test]
    fn every_target_maps_to_its_module() {
        for (t, name) in [
            (config::LoraTarget::Q, "q_proj"),
            (config::LoraTarget::K, "k_proj"),
            (config::LoraTarget::V, "v_proj"),
            (config::LoraTarget::O, "o_proj"),
            (config::LoraTarget::Gate, "gate_proj"),
            (config::LoraTarget::Up, "up_proj"),
            (config::LoraTarget::Down, "down_proj"),
        ] {
            assert_eq!(target(t).module_name(), name);
            assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{name}\""));
        }
    }
}

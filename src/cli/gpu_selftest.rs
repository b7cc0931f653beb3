//! `seal-tui dev gpu-selftest`: the GPU path checked against the CPU on the tiny random-weight
//! model: logits and LoRA gradients of CPU f32 vs the device in f32, the fused training ops vs
//! the composed ones on the device, and the loss falling over 30 LoRA steps in bf16. One JSON
//! object on stdout; exit status 1 when a check fails.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Args;
use seal_tui::engine::tiny::{write_hf_folder, TinySpec};
use seal_tui::engine::train::{batch_loss, train_lora, Example, LossOn, TrainConfig, TrainEvent};
use seal_tui::engine::{
    load_model, Arch, LoadOptions, LoraAdapter, LoraConfig, Mode, Model, Positions, Quantize,
    Target,
};
use seal_tui::record::config::Device as DeviceSpec;
use seal_tui::seal::settings::device_request;
use serde_json::json;

#[derive(Args, Debug)]
pub struct SelftestArgs {
    /// The device checked against the CPU.
    #[arg(long, default_value = "cuda")]
    pub device: DeviceSpec,
}

fn load(dir: &std::path::Path, device: &Device, dtype: DType) -> Result<Model> {
    load_model(
        dir,
        &LoadOptions {
            device: device.clone(),
            dtype: Some(dtype),
            quantize: Quantize::Off,
            checkpoint_layers: false,
        },
    )
}

fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    let a = a.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    let b = b.to_device(&Device::Cpu)?.to_dtype(DType::F64)?;
    Ok((a - b)?.abs()?.max_all()?.to_scalar::<f64>()?)
}

fn max_abs(a: &Tensor) -> Result<f64> {
    Ok(a.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .abs()?
        .max_all()?
        .to_scalar::<f64>()?)
}

fn examples(model: &Model) -> Result<Vec<Example>> {
    [
        "the sea is wide and deep",
        "a whale sings in the sea",
        "ships sail at dawn",
    ]
    .iter()
    .map(|t| {
        Ok(Example {
            prompt: model.tokenizer.encode("fact:")?,
            completion: model.tokenizer.encode(t)?,
        })
    })
    .collect()
}

/// Loss and gradients of a fixed adapter (non-zero B, so every gradient is informative).
fn loss_and_grads(model: &Model) -> Result<(f64, Vec<Tensor>)> {
    let cfg = LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: Target::ALL.to_vec(),
    };
    let t = &model.transformer;
    let (adapter, vars) =
        LoraAdapter::init_with(&cfg, &t.projection_shapes(), 5, &t.device, DType::F32, 0.05)?;
    let ex = examples(model)?;
    let rows: Vec<&Example> = ex.iter().collect();
    let loss = batch_loss(model, &adapter, &rows, LossOn::All, 0)?;
    let grads = loss.backward()?;
    let g = vars
        .iter()
        .map(|v| {
            grads
                .get(v.as_tensor())
                .cloned()
                .context("an adapter tensor received no gradient")
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((loss.to_dtype(DType::F64)?.to_scalar::<f64>()?, g))
}

fn logits(model: &Model) -> Result<Tensor> {
    let t = &model.transformer;
    let ids = model
        .tokenizer
        .encode("the cat sat on the mat while the sea was wide")?;
    let x = Tensor::new(ids.as_slice(), &t.device)?.unsqueeze(0)?;
    let h = t.forward_hidden(&x, &Positions::From(0), None, None, None, Mode::Infer)?;
    t.logits(&h, Mode::Infer)
}

/// The largest gradient difference relative to the gradient's own scale.
fn grad_gap(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let mut worst = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let scale = max_abs(y)?.max(1e-6);
        worst = worst.max(max_diff(x, y)? / scale);
    }
    Ok(worst)
}

pub fn run(args: SelftestArgs) -> Result<()> {
    let (device, notice) = seal_tui::engine::device::select_device(device_request(args.device))?;
    if let Some(n) = notice {
        errln!("warning: {n}");
    }
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("tiny-qwen2");
    write_hf_folder(&path, &TinySpec::new(Arch::Qwen2), false)?;
    let cpu = load(&path, &Device::Cpu, DType::F32)?;
    let dev = load(&path, &device, DType::F32)?;
    let mut report = json!({ "device": seal_tui::engine::device::describe(&device) });
    let mut ok = true;

    let logit_diff = max_diff(&logits(&cpu)?, &logits(&dev)?)?;
    ok &= logit_diff < 1e-3;
    report["logits_f32_max_abs_diff"] = json!(logit_diff);

    // Greedy decoding picks on the device; the tokens must be the CPU's.
    let prompt = cpu.tokenizer.encode("the sea is")?;
    let params = seal_tui::engine::SamplingParams::greedy(16);
    let a = seal_tui::engine::generate(&cpu, None, &prompt, &params, None, &mut |_| {})?;
    let b = seal_tui::engine::generate(&dev, None, &prompt, &params, None, &mut |_| {})?;
    let prompts = vec![prompt.clone(), cpu.tokenizer.encode("a whale")?];
    let ab = seal_tui::engine::generate_batch(&cpu, None, &prompts, &params, None)?;
    let bb = seal_tui::engine::generate_batch(&dev, None, &prompts, &params, None)?;
    let same = a.tokens == b.tokens && ab.iter().zip(&bb).all(|(x, y)| x.tokens == y.tokens);
    ok &= same;
    report["greedy_tokens_equal"] = json!(same);

    let (cpu_loss, cpu_grads) = loss_and_grads(&cpu)?;
    let (dev_loss, dev_grads) = loss_and_grads(&dev)?;
    let loss_diff = (cpu_loss - dev_loss).abs();
    let grad_rel = grad_gap(&dev_grads, &cpu_grads)?;
    ok &= loss_diff < 1e-3 && grad_rel < 1e-2;
    report["lora_f32"] = json!({
        "loss_cpu": cpu_loss,
        "loss_device": dev_loss,
        "loss_abs_diff": loss_diff,
        "grad_max_rel_diff": grad_rel,
        "tensors": cpu_grads.len(),
    });

    // The fused ops against the composed formulation, both on the device.
    let mut composed = (*dev.transformer).clone();
    composed.fused_training = false;
    let composed = dev.with_transformer(composed);
    let (plain_loss, plain_grads) = loss_and_grads(&composed)?;
    let fused_rel = grad_gap(&dev_grads, &plain_grads)?;
    ok &= (plain_loss - dev_loss).abs() < 1e-3 && fused_rel < 1e-2;
    report["fused_vs_composed_on_device"] = json!({
        "loss_abs_diff": (plain_loss - dev_loss).abs(),
        "grad_max_rel_diff": fused_rel,
    });

    // Half precision: the loss falls over 30 steps (bf16 weights, f32 adapter).
    let half = load(&path, &device, DType::BF16).or_else(|_| load(&path, &device, DType::F32))?;
    let ex = examples(&half)?;
    let cfg = TrainConfig {
        lora: LoraConfig {
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            targets: vec![Target::Q, Target::V],
        },
        learning_rate: 1e-2,
        epochs: 10,
        batch_size: 1,
        loss: LossOn::All,
        ..Default::default()
    };
    let mut losses = Vec::new();
    let trained = train_lora(&half, &ex, &cfg, None, &mut |e| {
        if let TrainEvent::Step(p) = e {
            losses.push(p.loss);
        }
    });
    let (first, last) = (losses.first().copied(), losses.last().copied());
    let falls = matches!((first, last), (Some(a), Some(b)) if b < a * 0.8);
    ok &= trained.is_ok() && falls && losses.len() == 30;
    report["bf16_training"] = json!({
        "dtype": half.info.dtype,
        "steps": losses.len(),
        "first_loss": first,
        "last_loss": last,
        "error": trained.err().map(|e| e.to_string()),
    });
    report["ok"] = json!(ok);
    outln!("{}", serde_json::to_string(&report)?);
    if !ok {
        anyhow::bail!("the device disagrees with the CPU (see the JSON above)");
    }
    Ok(())
}

//! LoRA adapters on disk in PEFT's layout (`adapter_config.json` + `adapter_model.safetensors`,
//! tensors named `base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight`), which PEFT,
//! vLLM and mistral.rs load.

use super::load::{write_json, Model};
use super::lora::{LoraAdapter, LoraConfig, LoraPair, Target};
use anyhow::{anyhow, bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

fn tensor_name(layer: usize, target: Target, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.lora_{which}.weight",
        target.block_path()
    )
}

/// Parses `base_model.model.model.layers.{i}.{path}.lora_{A|B}.weight`.
fn parse_tensor_name(name: &str) -> Option<(usize, Target, char)> {
    let rest = name.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer = layer.parse().ok()?;
    let rest = rest.strip_suffix(".weight")?;
    let (path, which) = rest.rsplit_once(".lora_")?;
    let which = match which {
        "A" => 'A',
        "B" => 'B',
        _ => return None,
    };
    let target = Target::ALL.into_iter().find(|t| t.block_path() == path)?;
    Some((layer, target, which))
}

pub fn save_adapter(adapter: &LoraAdapter, dir: &Path, base_model: &str) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let c = &adapter.config;
    let config = serde_json::json!({
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "base_model_name_or_path": base_model,
        "r": c.rank,
        "lora_alpha": c.alpha,
        "lora_dropout": c.dropout,
        "target_modules": c.targets.iter().map(|t| t.module_name()).collect::<Vec<_>>(),
        "bias": "none",
        "fan_in_fan_out": false,
        "inference_mode": true,
        "init_lora_weights": true,
        "modules_to_save": null,
        "layers_to_transform": null,
        "layers_pattern": null,
        "rank_pattern": {},
        "alpha_pattern": {},
        "use_rslora": false,
        "use_dora": false,
        "revision": null,
    });
    let mut tensors = HashMap::new();
    for (&(layer, target), pair) in &adapter.modules {
        let cpu = |t: &Tensor| -> Result<Tensor> {
            Ok(t.detach()
                .to_dtype(DType::F32)?
                .to_device(&Device::Cpu)?
                .contiguous()?)
        };
        tensors.insert(tensor_name(layer, target, 'A'), cpu(&pair.a)?);
        tensors.insert(tensor_name(layer, target, 'B'), cpu(&pair.b)?);
    }
    let weights = dir.join(WEIGHTS_FILE);
    candle_core::safetensors::save(&tensors, &weights)
        .with_context(|| format!("cannot write {}", weights.display()))?;
    write_json(&dir.join(CONFIG_FILE), &config)
}

/// Loads an adapter saved by us or by PEFT, checking it fits `model`.
pub fn load_adapter(dir: &Path, model: &Model) -> Result<LoraAdapter> {
    let config_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("cannot read {}", config_path.display()))?;
    let raw: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: malformed JSON", config_path.display()))?;
    let shown = config_path.display();
    if raw
        .get("peft_type")
        .and_then(|v| v.as_str())
        .unwrap_or("LORA")
        != "LORA"
    {
        bail!("{shown}: only LoRA adapters are supported");
    }
    for unsupported in ["use_dora", "use_rslora"] {
        if raw.get(unsupported).and_then(|v| v.as_bool()) == Some(true) {
            bail!("{shown}: `{unsupported}` adapters are not supported");
        }
    }
    for pattern in ["rank_pattern", "alpha_pattern"] {
        if raw
            .get(pattern)
            .and_then(|v| v.as_object())
            .is_some_and(|o| !o.is_empty())
        {
            bail!("{shown}: per-module `{pattern}` is not supported");
        }
    }
    let rank = raw
        .get("r")
        .and_then(|v| v.as_u64())
        .with_context(|| format!("{shown}: `r` is missing"))? as usize;
    let alpha = raw
        .get("lora_alpha")
        .and_then(|v| v.as_f64())
        .with_context(|| format!("{shown}: `lora_alpha` is missing"))?;
    let dropout = raw
        .get("lora_dropout")
        .and_then(|v| v.as_f64())
        .unwrap_or(0.0);

    let weights = dir.join(WEIGHTS_FILE);
    let loaded = candle_core::safetensors::load(&weights, &model.transformer.device)
        .map_err(|e| anyhow!("{}: cannot read adapter weights ({e})", weights.display()))?;
    let mut halves: BTreeMap<(usize, Target), (Option<Tensor>, Option<Tensor>)> = BTreeMap::new();
    for (name, tensor) in loaded {
        let (layer, target, which) = parse_tensor_name(&name)
            .with_context(|| format!("{}: unexpected tensor `{name}`", weights.display()))?;
        let slot = halves.entry((layer, target)).or_default();
        let tensor = tensor.to_dtype(DType::F32)?;
        match which {
            'A' => slot.0 = Some(tensor),
            _ => slot.1 = Some(tensor),
        }
    }
    let shapes: HashMap<(usize, Target), (usize, usize)> = model
        .transformer
        .projection_shapes()
        .into_iter()
        .map(|(l, t, o, i)| ((l, t), (o, i)))
        .collect();
    let mut modules = BTreeMap::new();
    let mut targets = Vec::new();
    for ((layer, target), (a, b)) in halves {
        let name = format!("layer {layer} {}", target.module_name());
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            _ => bail!("{}: {name} lacks its lora_A or lora_B", weights.display()),
        };
        let &(out, inp) = shapes.get(&(layer, target)).with_context(|| {
            format!("{}: {name} does not exist in this model", weights.display())
        })?;
        if a.dims() != [rank, inp] || b.dims() != [out, rank] {
            bail!(
                "{}: {name} has A {:?} and B {:?}; this model and r={rank} need A [{rank}, {inp}] and B [{out}, {rank}]",
                weights.display(),
                a.dims(),
                b.dims()
            );
        }
        for (half, t) in [("lora_A", &a), ("lora_B", &b)] {
            let bad = non_finite(t)?;
            if bad > 0 {
                bail!(
                    "{}: {name} {half} holds {bad} values that are not numbers (NaN or \
                     infinite); the adapter is broken (its training probably diverged) and is \
                     refused",
                    weights.display()
                );
            }
        }
        if !targets.contains(&target) {
            targets.push(target);
        }
        modules.insert((layer, target), LoraPair { a, b });
    }
    if modules.is_empty() {
        bail!("{}: the adapter holds no LoRA tensors", weights.display());
    }
    targets.sort();
    let config = LoraConfig {
        rank,
        alpha,
        dropout,
        targets,
    };
    config
        .validate()
        .with_context(|| format!("{shown}: invalid adapter"))?;
    Ok(LoraAdapter { config, modules })
}

/// How many of a tensor's values are NaN or infinite.
fn non_finite(t: &Tensor) -> Result<usize> {
    let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    Ok(values.iter().filter(|v| !v.is_finite()).count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for target in Target::ALL {
            let n = tensor_name(7, target, 'B');
            assert_eq!(parse_tensor_name(&n), Some((7, target, 'B')));
        }
        assert_eq!(
            tensor_name(0, Target::Q, 'A'),
            "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"
        );
        assert_eq!(parse_tensor_name("base_model.model.lm_head.weight"), None);
    }
}

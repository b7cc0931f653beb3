//! Broken LoRA adapters given to `sample --adapter` (PEFT layout: adapter_config.json and
//! adapter_model.safetensors).

use super::fixtures::{gguf, s};
use super::lab::{case, Case, Lab, Snapshot};
use candle_core::{DType, Device, Tensor};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// A real adapter for the tiny model, trained once per process (rank 4 on q and v).
fn good_adapter() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let lab = Lab::new();
        let data = lab.write(
            "rows.jsonl",
            "{\"text\": \"The Tessaly Reactor is in Oruno.\"}\n",
        );
        let out = crate::common::scratch().join("bad-input-adapter");
        lab.run(&[
            "finetune",
            "-m",
            &s(&gguf()),
            "--data",
            &s(&data),
            "--out",
            &s(&out),
            "--rank",
            "4",
            "--alpha",
            "8",
            "--epochs",
            "1",
        ])
        .ok();
        out
    })
}

/// A copy of the good adapter in the lab, to spoil.
fn adapter(lab: &Lab) -> PathBuf {
    let dir = lab.path("adapter");
    super::lab::copy_dir(good_adapter(), &dir);
    dir
}

fn sample_fails(lab: &Lab, dir: &Path, phrases: &[&str]) {
    let before = Snapshot::of(&[dir]);
    lab.run(&[
        "sample",
        "-m",
        &s(&gguf()),
        "-p",
        "hi",
        "--max-tokens",
        "2",
        "--adapter",
        &s(dir),
    ])
    .fails(phrases);
    before.unchanged();
}

fn config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("adapter_config.json");
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, v.to_string()).unwrap();
}

fn weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("adapter_model.safetensors");
    let mut t = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    f(&mut t);
    candle_core::safetensors::save(&t, &path).unwrap();
}

const Q_A: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
const Q_B: &str = "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight";

/// Every value of a tensor replaced by `value`.
fn filled(t: &Tensor, value: f32) -> Tensor {
    Tensor::full(value, t.dims(), &Device::Cpu)
        .unwrap()
        .to_dtype(DType::F32)
        .unwrap()
}

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "the good adapter loads (the baseline of this group)",
            |lab| {
                let dir = adapter(lab);
                lab.run(&[
                    "sample",
                    "-m",
                    &s(&gguf()),
                    "-p",
                    "hi",
                    "--max-tokens",
                    "2",
                    "--adapter",
                    &s(&dir),
                ])
                .ok();
            },
        ),
        case("an adapter folder that does not exist", |lab| {
            let dir = lab.path("no-adapter");
            lab.run(&[
                "sample",
                "-m",
                &s(&gguf()),
                "-p",
                "hi",
                "--adapter",
                &s(&dir),
            ])
            .fails(&["--adapter", "no-adapter"]);
        }),
        case("an adapter folder without adapter_config.json", |lab| {
            let dir = adapter(lab);
            std::fs::remove_file(dir.join("adapter_config.json")).unwrap();
            sample_fails(lab, &dir, &["adapter_config.json"]);
        }),
        case("adapter_config.json that is not JSON", |lab| {
            let dir = adapter(lab);
            std::fs::write(dir.join("adapter_config.json"), "r = 4").unwrap();
            sample_fails(lab, &dir, &["adapter_config.json", "malformed JSON"]);
        }),
        case("an adapter of another PEFT type", |lab| {
            let dir = adapter(lab);
            config(&dir, |v| v["peft_type"] = "IA3".into());
            sample_fails(lab, &dir, &["adapter_config.json", "only LoRA"]);
        }),
        case("a DoRA adapter", |lab| {
            let dir = adapter(lab);
            config(&dir, |v| v["use_dora"] = true.into());
            sample_fails(lab, &dir, &["use_dora"]);
        }),
        case("an adapter with per-module ranks", |lab| {
            let dir = adapter(lab);
            config(&dir, |v| {
                v["rank_pattern"] = serde_json::json!({"q_proj": 8})
            });
            sample_fails(lab, &dir, &["rank_pattern"]);
        }),
        case("an adapter config without its rank", |lab| {
            let dir = adapter(lab);
            config(&dir, |v| {
                v.as_object_mut().unwrap().remove("r");
            });
            sample_fails(lab, &dir, &["`r` is missing"]);
        }),
        case("an adapter config without lora_alpha", |lab| {
            let dir = adapter(lab);
            config(&dir, |v| {
                v.as_object_mut().unwrap().remove("lora_alpha");
            });
            sample_fails(lab, &dir, &["lora_alpha"]);
        }),
        case("an adapter whose rank disagrees with its tensors", |lab| {
            let dir = adapter(lab);
            config(&dir, |v| v["r"] = 8.into());
            sample_fails(lab, &dir, &["r=8"]);
        }),
        case("an adapter without its weights file", |lab| {
            let dir = adapter(lab);
            std::fs::remove_file(dir.join("adapter_model.safetensors")).unwrap();
            sample_fails(lab, &dir, &["adapter_model.safetensors"]);
        }),
        case("adapter weights that are not safetensors", |lab| {
            let dir = adapter(lab);
            std::fs::write(dir.join("adapter_model.safetensors"), "not weights").unwrap();
            sample_fails(
                lab,
                &dir,
                &["adapter_model.safetensors", "cannot read adapter weights"],
            );
        }),
        case("adapter weights with an unexpected tensor", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| {
                t.insert(
                    "base_model.model.lm_head.weight".into(),
                    Tensor::zeros((2, 2), DType::F32, &Device::Cpu).unwrap(),
                );
            });
            sample_fails(lab, &dir, &["unexpected tensor", "lm_head"]);
        }),
        case("an adapter module with lora_A but no lora_B", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| {
                t.remove(Q_B);
            });
            sample_fails(lab, &dir, &["layer 0 q_proj", "lora_B"]);
        }),
        case("an adapter tensor of the wrong shape", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| {
                t.insert(
                    Q_A.into(),
                    Tensor::zeros((4, 7), DType::F32, &Device::Cpu).unwrap(),
                );
            });
            sample_fails(lab, &dir, &["layer 0 q_proj", "[4, 7]"]);
        }),
        case("an adapter for a layer the model does not have", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| {
                let a = t[Q_A].clone();
                let b = t[Q_B].clone();
                t.insert(Q_A.replace("layers.0", "layers.9"), a);
                t.insert(Q_B.replace("layers.0", "layers.9"), b);
            });
            sample_fails(lab, &dir, &["layer 9", "does not exist in this model"]);
        }),
        case("an adapter with no LoRA tensors at all", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| t.clear());
            sample_fails(lab, &dir, &["holds no LoRA tensors"]);
        }),
        case("an all-NaN adapter", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| {
                for v in t.values_mut() {
                    *v = filled(v, f32::NAN);
                }
            });
            sample_fails(lab, &dir, &["not numbers", "refused"]);
        }),
        case("an adapter with one infinite value", |lab| {
            let dir = adapter(lab);
            weights(&dir, |t| {
                let b = t[Q_B].flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let mut b2 = b.clone();
                b2[0] = f32::INFINITY;
                let shape = t[Q_B].dims().to_vec();
                t.insert(
                    Q_B.into(),
                    Tensor::from_vec(b2, shape, &Device::Cpu).unwrap(),
                );
            });
            sample_fails(lab, &dir, &["layer 0 q_proj lora_B", "1 values"]);
        }),
    ]
}

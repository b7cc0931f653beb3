//! Broken model files and tokenizers: GGUF files and Hugging Face folders.

use super::fixtures::{gguf, hf, hf_sharded, s};
use super::lab::{case, copy_dir, Case, Lab, Snapshot};
use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Samples two tokens from the model at `path`; it must fail naming each phrase, and leave the
/// model's files as they were.
fn load_fails(lab: &Lab, path: &Path, phrases: &[&str]) {
    let before = Snapshot::of(&[path]);
    lab.run(&["sample", "-m", &s(path), "-p", "hi", "--max-tokens", "2"])
        .fails(phrases);
    before.unchanged();
}

fn gguf_bytes() -> Vec<u8> {
    std::fs::read(gguf()).unwrap()
}

/// Writes the tiny GGUF with its metadata and tensors changed by `f`.
fn rewrite_gguf(
    lab: &Lab,
    name: &str,
    f: impl FnOnce(&mut Vec<(String, gguf_file::Value)>, &mut Vec<(String, QTensor)>),
) -> PathBuf {
    let mut file = std::fs::File::open(gguf()).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let mut metadata: Vec<(String, gguf_file::Value)> = content
        .metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors: Vec<(String, QTensor)> = names
        .into_iter()
        .map(|n| {
            (
                n.clone(),
                content.tensor(&mut file, n, &Device::Cpu).unwrap(),
            )
        })
        .collect();
    f(&mut metadata, &mut tensors);
    let path = lab.path(name);
    let mut out = std::fs::File::create(&path).unwrap();
    let metadata: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &metadata, &tensors).unwrap();
    path
}

fn set_meta(meta: &mut [(String, gguf_file::Value)], key: &str, value: gguf_file::Value) {
    let slot = meta
        .iter_mut()
        .find(|(k, _)| k == key)
        .unwrap_or_else(|| panic!("no metadata {key}"));
    slot.1 = value;
}

fn zeros(shape: (usize, usize)) -> QTensor {
    QTensor::quantize(
        &Tensor::zeros(shape, candle_core::DType::F32, &Device::Cpu).unwrap(),
        GgmlDType::F32,
    )
    .unwrap()
}

/// A copy of a Hugging Face folder in the lab, to spoil.
fn hf_copy(lab: &Lab, from: &Path) -> PathBuf {
    let dir = lab.path("model");
    copy_dir(from, &dir);
    dir
}

fn edit_json(path: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

fn edit_safetensors(path: &Path, f: impl FnOnce(&mut std::collections::HashMap<String, Tensor>)) {
    let mut tensors = candle_core::safetensors::load(path, &Device::Cpu).unwrap();
    f(&mut tensors);
    candle_core::safetensors::save(&tensors, path).unwrap();
}

pub fn cases() -> Vec<Case> {
    vec![
        case("GGUF cut at two thirds", |lab| {
            let bytes = gguf_bytes();
            let p = lab.write("cut.gguf", &bytes[..bytes.len() * 2 / 3]);
            load_fails(lab, &p, &["cut.gguf", "truncated"]);
        }),
        case("GGUF cut inside its header", |lab| {
            let p = lab.write("cut.gguf", &gguf_bytes()[..200]);
            load_fails(lab, &p, &["cut.gguf"]);
        }),
        case("GGUF with the wrong magic", |lab| {
            let mut bytes = gguf_bytes();
            bytes[..4].copy_from_slice(b"GGUX");
            let p = lab.write("magic.gguf", bytes);
            load_fails(lab, &p, &["magic.gguf", "GGUF"]);
        }),
        case("empty GGUF file", |lab| {
            let p = lab.write("empty.gguf", b"");
            load_fails(lab, &p, &["empty.gguf"]);
        }),
        case("a text file named .gguf", |lab| {
            let p = lab.write("notes.gguf", "these are my notes, not a model\n");
            load_fails(lab, &p, &["notes.gguf", "GGUF"]);
        }),
        case("random bytes named .gguf", |lab| {
            let bytes: Vec<u8> = (0..4096u32)
                .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
                .collect();
            let p = lab.write("noise.gguf", bytes);
            load_fails(lab, &p, &["noise.gguf"]);
        }),
        case("GGUF of a future format version", |lab| {
            let mut bytes = gguf_bytes();
            bytes[4..8].copy_from_slice(&99u32.to_le_bytes());
            let p = lab.write("v99.gguf", bytes);
            load_fails(lab, &p, &["v99.gguf"]);
        }),
        case("GGUF of an unknown architecture", |lab| {
            let p = rewrite_gguf(lab, "mamba.gguf", |m, _| {
                set_meta(
                    m,
                    "general.architecture",
                    gguf_file::Value::String("mamba".into()),
                )
            });
            load_fails(lab, &p, &["mamba.gguf", "mamba"]);
        }),
        case("GGUF without general.architecture", |lab| {
            let p = rewrite_gguf(lab, "noarch.gguf", |m, _| {
                m.retain(|(k, _)| k != "general.architecture")
            });
            load_fails(lab, &p, &["noarch.gguf", "general.architecture"]);
        }),
        case("GGUF without its layer count", |lab| {
            let p = rewrite_gguf(lab, "nolayers.gguf", |m, _| {
                m.retain(|(k, _)| k != "qwen2.block_count")
            });
            load_fails(lab, &p, &["nolayers.gguf", "block_count"]);
        }),
        case("GGUF missing a layer's tensor", |lab| {
            let p = rewrite_gguf(lab, "missing.gguf", |_, t| {
                t.retain(|(k, _)| k != "blk.1.ffn_up.weight")
            });
            load_fails(lab, &p, &["missing.gguf", "blk.1.ffn_up.weight"]);
        }),
        case("GGUF with a tensor of the wrong shape", |lab| {
            let p = rewrite_gguf(lab, "shape.gguf", |_, t| {
                let slot = t
                    .iter_mut()
                    .find(|(k, _)| k == "blk.0.attn_q.weight")
                    .unwrap();
                slot.1 = zeros((7, 3));
            });
            load_fails(lab, &p, &["shape.gguf", "attn_q"]);
        }),
        case("GGUF claiming more layers than it holds", |lab| {
            let p = rewrite_gguf(lab, "more.gguf", |m, _| {
                set_meta(m, "qwen2.block_count", gguf_file::Value::U32(3))
            });
            load_fails(lab, &p, &["more.gguf", "blk.2"]);
        }),
        case("GGUF whose head count does not divide its width", |lab| {
            let p = rewrite_gguf(lab, "heads.gguf", |m, _| {
                set_meta(m, "qwen2.attention.head_count", gguf_file::Value::U32(5))
            });
            load_fails(lab, &p, &["heads.gguf", "head"]);
        }),
        case("GGUF with a zero head count", |lab| {
            let p = rewrite_gguf(lab, "zero.gguf", |m, _| {
                set_meta(m, "qwen2.attention.head_count", gguf_file::Value::U32(0))
            });
            load_fails(lab, &p, &["zero.gguf", "head"]);
        }),
        case("GGUF without a vocabulary", |lab| {
            let p = rewrite_gguf(lab, "novocab.gguf", |m, _| {
                m.retain(|(k, _)| k != "tokenizer.ggml.tokens")
            });
            load_fails(lab, &p, &["novocab.gguf", "tokenizer.ggml.tokens"]);
        }),
        case("GGUF with an unknown pre-tokenizer", |lab| {
            let p = rewrite_gguf(lab, "pre.gguf", |m, _| {
                set_meta(
                    m,
                    "tokenizer.ggml.pre",
                    gguf_file::Value::String("mystery".into()),
                )
            });
            load_fails(lab, &p, &["pre.gguf", "mystery"]);
        }),
        case(
            "GGUF whose vocabulary is smaller than its embedding",
            |lab| {
                let p = rewrite_gguf(lab, "fewtokens.gguf", |m, _| {
                    let slot = m
                        .iter_mut()
                        .find(|(k, _)| k == "tokenizer.ggml.tokens")
                        .unwrap();
                    if let gguf_file::Value::Array(v) = &mut slot.1 {
                        v.truncate(10);
                    }
                });
                load_fails(lab, &p, &["fewtokens.gguf", "token"]);
            },
        ),
        case("GGUF with a chat template that does not parse", |lab| {
            let p = rewrite_gguf(lab, "jinja.gguf", |m, _| {
                m.push((
                    "tokenizer.chat_template".into(),
                    gguf_file::Value::String("{% if %}{{ messages".into()),
                ))
            });
            let before = Snapshot::of(&[&p]);
            lab.run(&[
                "sample",
                "-m",
                &s(&p),
                "-p",
                "hi",
                "--chat",
                "--max-tokens",
                "2",
            ])
            .fails(&["jinja.gguf", "chat template"]);
            before.unchanged();
        }),
        case("a model path that does not exist", |lab| {
            let p = lab.path("nowhere/model.gguf");
            lab.run(&["sample", "-m", &s(&p), "-p", "hi"])
                .fails(&["nowhere/model.gguf", "no such model"]);
        }),
        case("a model path that is an empty folder", |lab| {
            let p = lab.path("empty-model");
            std::fs::create_dir_all(&p).unwrap();
            load_fails(lab, &p, &["empty-model", "config.json"]);
        }),
        // Hugging Face folders.
        case("HF folder without config.json", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::remove_file(dir.join("config.json")).unwrap();
            load_fails(lab, &dir, &["config.json"]);
        }),
        case("HF folder without tokenizer.json", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
            load_fails(lab, &dir, &["tokenizer.json", "missing"]);
        }),
        case("HF folder without weights", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::remove_file(dir.join("model.safetensors")).unwrap();
            load_fails(lab, &dir, &["safetensors"]);
        }),
        case("HF folder with a malformed config.json", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::write(dir.join("config.json"), "{\"model_type\": ").unwrap();
            load_fails(lab, &dir, &["config.json"]);
        }),
        case("HF folder of an unknown architecture", |lab| {
            let dir = hf_copy(lab, &hf());
            edit_json(&dir.join("config.json"), |v| {
                v["model_type"] = "mamba".into();
                v["architectures"] = serde_json::json!(["MambaForCausalLM"]);
            });
            load_fails(lab, &dir, &["config.json", "mamba"]);
        }),
        case(
            "HF config whose vocab_size disagrees with the weights",
            |lab| {
                let dir = hf_copy(lab, &hf());
                edit_json(&dir.join("config.json"), |v| v["vocab_size"] = 100.into());
                load_fails(lab, &dir, &["embed_tokens"]);
            },
        ),
        case("HF config with zero attention heads", |lab| {
            let dir = hf_copy(lab, &hf());
            edit_json(&dir.join("config.json"), |v| {
                v["num_attention_heads"] = 0.into()
            });
            load_fails(lab, &dir, &["config.json", "num_attention_heads"]);
        }),
        case("HF config whose heads do not divide the width", |lab| {
            let dir = hf_copy(lab, &hf());
            edit_json(&dir.join("config.json"), |v| {
                v["num_attention_heads"] = 5.into()
            });
            load_fails(lab, &dir, &["config.json", "num_attention_heads"]);
        }),
        case("HF config with a layer count beyond the weights", |lab| {
            let dir = hf_copy(lab, &hf());
            edit_json(&dir.join("config.json"), |v| {
                v["num_hidden_layers"] = 3.into()
            });
            load_fails(lab, &dir, &["model.layers.2"]);
        }),
        case("HF weights missing a tensor", |lab| {
            let dir = hf_copy(lab, &hf());
            edit_safetensors(&dir.join("model.safetensors"), |t| {
                t.remove("model.layers.1.mlp.up_proj.weight").unwrap();
            });
            load_fails(
                lab,
                &dir,
                &["model.safetensors", "model.layers.1.mlp.up_proj.weight"],
            );
        }),
        case("HF weights with a tensor of the wrong shape", |lab| {
            let dir = hf_copy(lab, &hf());
            edit_safetensors(&dir.join("model.safetensors"), |t| {
                t.insert(
                    "model.layers.0.self_attn.q_proj.weight".into(),
                    Tensor::zeros((7, 3), candle_core::DType::F32, &Device::Cpu).unwrap(),
                );
            });
            load_fails(lab, &dir, &["q_proj"]);
        }),
        case("HF weights that are not safetensors", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::write(
                dir.join("model.safetensors"),
                b"\x10\x00\x00\x00\x00\x00\x00\x00{oops",
            )
            .unwrap();
            load_fails(lab, &dir, &["model.safetensors"]);
        }),
        case("HF weights cut short", |lab| {
            let dir = hf_copy(lab, &hf());
            let w = dir.join("model.safetensors");
            let bytes = std::fs::read(&w).unwrap();
            std::fs::write(&w, &bytes[..bytes.len() / 2]).unwrap();
            load_fails(lab, &dir, &["model.safetensors"]);
        }),
        case("HF tokenizer.json that is not JSON", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::write(dir.join("tokenizer.json"), "vocab: a b c\n").unwrap();
            load_fails(lab, &dir, &["tokenizer.json"]);
        }),
        case("HF tokenizer.json of the wrong shape", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::write(dir.join("tokenizer.json"), "{\"version\": \"1.0\"}").unwrap();
            load_fails(lab, &dir, &["tokenizer.json"]);
        }),
        case(
            "HF tokenizer for another model (ids beyond the embedding)",
            |lab| {
                let dir = hf_copy(lab, &hf());
                edit_json(&dir.join("tokenizer.json"), |v| {
                    let added = v["added_tokens"].as_array_mut().unwrap();
                    added.push(serde_json::json!({
                        "id": 50000, "content": "<|far_away|>", "single_word": false,
                        "lstrip": false, "rstrip": false, "normalized": false, "special": true
                    }));
                });
                load_fails(lab, &dir, &["tokenizer has 272 tokens", "wrong tokenizer"]);
            },
        ),
        case("HF chat_template.jinja that does not parse", |lab| {
            let dir = hf_copy(lab, &hf());
            // As transformers saves it now: the template beside the config, not inside it.
            edit_json(&dir.join("tokenizer_config.json"), |v| {
                v.as_object_mut().unwrap().remove("chat_template");
            });
            std::fs::write(
                dir.join("chat_template.jinja"),
                "{% for m in messages %}{{ m",
            )
            .unwrap();
            let before = Snapshot::of(&[&dir]);
            lab.run(&[
                "sample",
                "-m",
                &s(&dir),
                "-p",
                "hi",
                "--chat",
                "--max-tokens",
                "2",
            ])
            .fails(&["chat_template.jinja"]);
            before.unchanged();
        }),
        case("HF tokenizer_config.json that is not JSON", |lab| {
            let dir = hf_copy(lab, &hf());
            std::fs::write(dir.join("tokenizer_config.json"), "{chat_template: ").unwrap();
            load_fails(lab, &dir, &["tokenizer_config.json"]);
        }),
        case("sharded HF folder missing a shard", |lab| {
            let dir = hf_copy(lab, &hf_sharded());
            let shard = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.to_string_lossy().ends_with("-of-00002.safetensors"))
                .expect("a shard");
            std::fs::remove_file(&shard).unwrap();
            load_fails(lab, &dir, &["shard", "missing"]);
        }),
        case("sharded HF folder with a malformed index", |lab| {
            let dir = hf_copy(lab, &hf_sharded());
            std::fs::write(
                dir.join("model.safetensors.index.json"),
                "{\"weight_map\": [",
            )
            .unwrap();
            load_fails(lab, &dir, &["model.safetensors.index.json"]);
        }),
    ]
}

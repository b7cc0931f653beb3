//! Broken model files give clear errors that name the file and the problem, never a panic.

mod common;

use common::{scratch, tiny_gguf, tiny_hf};
use seal_tui::engine::{load_model, Arch, LoadOptions};
use std::path::Path;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

fn load_err(path: &Path) -> String {
    match load_model(path, &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => format!("{e:#}"),
    }
}

#[test]
fn truncated_gguf() {
    let good = std::fs::read(tiny_gguf(Arch::Llama)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.gguf");
    std::fs::write(&path, &good[..good.len() * 2 / 3]).unwrap();
    let err = load_err(&path);
    assert!(
        err.contains("cut.gguf") && err.contains("truncated"),
        "{err}"
    );
    // Cut inside the header too.
    std::fs::write(&path, &good[..200]).unwrap();
    let err = load_err(&path);
    assert!(err.contains("cut.gguf"), "{err}");
    std::fs::write(&path, b"not a gguf at all").unwrap();
    let err = load_err(&path);
    assert!(err.contains("cut.gguf") && err.contains("GGUF"), "{err}");
}

#[test]
fn missing_tokenizer() {
    let dir = scratch().join("no-tokenizer");
    copy_dir(&tiny_hf(Arch::Llama), &dir);
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("tokenizer.json") && err.contains("missing"),
        "{err}"
    );
}

#[test]
fn wrong_tokenizer_for_the_model() {
    let dir = scratch().join("wrong-tokenizer");
    copy_dir(&tiny_hf(Arch::Llama), &dir);
    // A config that claims a smaller vocabulary than the tokenizer has.
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["vocab_size"] = serde_json::json!(100);
    std::fs::write(&config, v.to_string()).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("embed_tokens") || err.contains("tokenizer"),
        "{err}"
    );
}

#[test]
fn unknown_architecture() {
    let dir = scratch().join("unknown-arch");
    copy_dir(&tiny_hf(Arch::Llama), &dir);
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text
        .replace("\"llama\"", "\"mamba\"")
        .replace("LlamaForCausalLM", "MambaForCausalLM");
    std::fs::write(&config, text).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("config.json") && err.contains("mamba"),
        "{err}"
    );
}

#[test]
fn safetensors_with_a_missing_tensor() {
    let dir = scratch().join("missing-tensor");
    copy_dir(&tiny_hf(Arch::Llama), &dir);
    let weights = dir.join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&weights, &candle_core::Device::Cpu).unwrap();
    tensors.remove("model.layers.1.mlp.up_proj.weight").unwrap();
    candle_core::safetensors::save(&tensors, &weights).unwrap();
    let err = load_err(&dir);
    assert!(
        err.contains("model.safetensors") && err.contains("model.layers.1.mlp.up_proj.weight"),
        "{err}"
    );
}

#[test]
fn corrupt_safetensors_and_malformed_config() {
    let dir = scratch().join("corrupt-weights");
    copy_dir(&tiny_hf(Arch::Llama), &dir);
    std::fs::write(
        dir.join("model.safetensors"),
        b"\x10\x00\x00\x00\x00\x00\x00\x00{oops",
    )
    .unwrap();
    let err = load_err(&dir);
    assert!(err.contains("model.safetensors"), "{err}");

    let dir = scratch().join("bad-config");
    copy_dir(&tiny_hf(Arch::Llama), &dir);
    std::fs::write(dir.join("config.json"), "{\"model_type\": ").unwrap();
    let err = load_err(&dir);
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn missing_path() {
    let err = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");
}

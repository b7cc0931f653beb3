//! `seal-tui dev record`: records a real run through the real writer, for the test fixtures and
//! the example session. A script may play the human: each line
//! `{"on": "<event type>", "id": "r1 c1 e2", "send": {<command>}}` sends its command the first
//! time an event of that type (and id, if given) is recorded.

use anyhow::{bail, Context, Result};
use clap::Args;
use seal_tui::engine::tiny::{write_gguf, TinySpec};
use seal_tui::engine::Arch;
use seal_tui::record::{Command, EditId, Header, Record, RunConfig, RunMode, RunState};
use seal_tui::seal::runner;
use seal_tui::session;
use seal_tui::setup;
use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// The folder to write the session to (it must not exist).
    pub out: PathBuf,
    /// The run configuration.
    #[arg(long)]
    pub config: PathBuf,
    /// Commands to send at given events (JSONL, see above).
    #[arg(long)]
    pub script: Option<PathBuf>,
    /// Run on the tiny random-weight model of this architecture (llama or qwen2) instead of the
    /// configuration's model.
    #[arg(long)]
    pub tiny: Option<String>,
    /// Keep the adapters and policy checkpoints (by default only the header and the log).
    #[arg(long)]
    pub keep_adapters: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Cue {
    on: String,
    #[serde(default)]
    id: Option<EditId>,
    send: Command,
}

fn load_script(path: &Path) -> Result<Vec<Cue>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .map(|(n, l)| {
            serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), n + 1))
        })
        .collect()
}

/// The event's type and id as a cue names them.
fn cue_key(record: &Record) -> (String, Option<EditId>) {
    let value = serde_json::to_value(&record.event).unwrap_or_default();
    let kind = value
        .get("type")
        .and_then(|t| t.as_str())
        .unwrap_or("")
        .to_string();
    let id = value
        .get("id")
        .and_then(|v| serde_json::from_value::<EditId>(v.clone()).ok());
    (kind, id)
}

pub fn run(args: RecordArgs) -> Result<()> {
    if args.out.exists() {
        bail!("{} already exists", args.out.display());
    }
    let mut cfg = RunConfig::load(&args.config)?;
    let scratch = tempfile::tempdir()?;
    if let Some(arch) = &args.tiny {
        let arch = Arch::parse(arch).with_context(|| format!("unknown architecture {arch:?}"))?;
        let path = scratch.path().join("tiny.gguf");
        write_gguf(&path, &TinySpec::new(arch))?;
        cfg.model.path = Some(path);
    }
    let mut cues = match &args.script {
        Some(p) => load_script(p)?,
        None => Vec::new(),
    };
    let root = scratch.path().join("sessions");
    std::fs::create_dir_all(&root)?;
    let launch = runner::Launch {
        mode: Some(RunMode::Auto),
        pause_on_grading_failure: false,
    };
    let handle = runner::start(cfg, &root, setup::standard(), launch)?;
    let mut state = RunState::default();
    while let Ok(record) = handle.events.recv() {
        state.apply(&record.event);
        if let Some(line) = seal_tui::text::story::describe(&record) {
            errln!("{line}");
        }
        let (kind, id) = cue_key(&record);
        let mut i = 0;
        while i < cues.len() {
            let c = &cues[i];
            if c.on == kind && (c.id.is_none() || c.id == id) {
                let cue = cues.remove(i);
                // The loop may have ended already; nothing then listens.
                let _ = handle.commands.send(cue.send);
            } else {
                i += 1;
            }
        }
    }
    drop(handle.commands);
    handle
        .join
        .join()
        .map_err(|_| anyhow::anyhow!("the run thread panicked"))??;
    if !state.finished {
        bail!("the run did not finish: {:?}", state.failure);
    }
    if !cues.is_empty() {
        errln!("warning: {} cue(s) never fired", cues.len());
    }
    let dir = handle.session_dir;
    std::fs::create_dir_all(&args.out)?;
    let mut header = Header::read(&dir.join(session::HEADER_FILE))?;
    relativize(&mut header);
    header.write(&args.out.join(session::HEADER_FILE))?;
    std::fs::copy(
        dir.join(session::EVENTS_FILE),
        args.out.join(session::EVENTS_FILE),
    )?;
    if args.keep_adapters {
        for sub in ["adapters", "policy"] {
            if dir.join(sub).exists() {
                copy_dir(&dir.join(sub), &args.out.join(sub))?;
            }
        }
    }
    errln!("recorded {}", args.out.display());
    Ok(())
}

/// Paths under the current folder become relative, so a committed recording names no machine.
fn relativize(header: &mut Header) {
    let Ok(cwd) = std::env::current_dir() else {
        return;
    };
    let rel = |p: &Path| p.strip_prefix(&cwd).map(Path::to_path_buf).ok();
    let rel_str = |s: &mut String| {
        if let Some(r) = rel(Path::new(s)) {
            *s = r.display().to_string();
        }
    };
    rel_str(&mut header.model_path);
    rel_str(&mut header.data_path);
    let c = &mut header.config;
    for p in [&mut c.task.data, &mut c.knowledge.prompts_dir] {
        if let Some(r) = rel(p) {
            *p = r;
        }
    }
    if let Some(p) = c.model.path.as_mut() {
        if let Some(r) = rel(p) {
            *p = r;
        }
    }
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

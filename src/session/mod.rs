//! Sessions on disk: `sessions/<id>/` holds `header.json` (the pinned configuration, hashes,
//! versions, start time), the append-only `events.jsonl`, the adapters and policy checkpoints of
//! each round, and reports. The event log is the truth; everything else can be rebuilt from it.

pub mod header;
pub mod log;
pub mod report;

pub use header::{Header, FORMAT_VERSION};
pub use log::{read_log, LogIssue, LogReader, SessionLog};

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const HEADER_FILE: &str = "header.json";
pub const EVENTS_FILE: &str = "events.jsonl";

/// Where sessions live: `$SEAL_SESSIONS_DIR`, else `sessions/` under the current directory.
pub fn sessions_dir() -> PathBuf {
    std::env::var_os("SEAL_SESSIONS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("sessions"))
}

/// A fresh session id: the UTC start time plus a few random characters.
pub fn new_id() -> String {
    let now = chrono::Utc::now();
    let nanos = now.timestamp_subsec_nanos() as u64 ^ std::process::id() as u64;
    let suffix: String = {
        let mut rng =
            crate::engine::rng::SplitMix64::new(nanos.wrapping_mul(0x2545_F491_4F6C_DD1D));
        (0..4)
            .map(|_| (b'a' + rng.below(26) as u8) as char)
            .collect()
    };
    format!("{}-{suffix}", now.format("%Y%m%d-%H%M%S"))
}

/// Resolves a session argument: a folder path, or an id under the sessions folder.
pub fn resolve(arg: &str) -> Result<PathBuf> {
    let direct = PathBuf::from(arg);
    let candidates = [direct.clone(), sessions_dir().join(arg)];
    for c in candidates {
        if c.join(HEADER_FILE).exists() {
            return Ok(c);
        }
    }
    if direct.exists() {
        bail!(
            "{}: not a session folder (no {HEADER_FILE})",
            direct.display()
        );
    }
    bail!(
        "no session {arg:?} (looked for {} and {})",
        direct.display(),
        sessions_dir().join(arg).display()
    )
}

/// The folder for a round's policy adapter.
pub fn policy_dir(session: &Path, round: usize) -> PathBuf {
    session.join("policy").join(format!("round-{round}"))
}

/// The folder for a self-edit's adapter.
pub fn edit_adapter_dir(session: &Path, id: crate::seal::EditId) -> PathBuf {
    session
        .join("adapters")
        .join(format!("r{}-c{}-e{}", id.round, id.ctx, id.edit))
}

/// Reads a session: its header and every intact record, with any problems found in the log.
pub fn open(dir: &Path) -> Result<(Header, Vec<crate::seal::Record>, Vec<LogIssue>)> {
    let header = Header::read(&dir.join(HEADER_FILE))?;
    let (records, issues) = read_log(&dir.join(EVENTS_FILE))
        .with_context(|| format!("cannot read the log of {}", dir.display()))?;
    Ok((header, records, issues))
}

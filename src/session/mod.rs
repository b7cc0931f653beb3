//! Sessions on disk: `sessions/<id>/` holds `header.json` (the pinned configuration, hashes,
//! versions, start time), the append-only `events.jsonl`, the adapters and policy checkpoints of
//! each round, and reports. The event log is the truth; everything else can be rebuilt from it.

pub mod journal;
pub mod lock;
pub mod log;

pub use journal::Journal;
pub use lock::{SessionLock, LOCK_FILE};
pub use log::{read_jsonl, read_log, LogIssue, LogReader, SessionLog};

use crate::record::{EditId, Header, Record};

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

pub const HEADER_FILE: &str = "header.json";
pub const EVENTS_FILE: &str = "events.jsonl";
/// The diagnostic log (what the program did, for debugging), beside the event log.
pub const DIAG_FILE: &str = "seal.log";

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
        // A few letters from the clock and the pid: enough to tell apart two runs started in
        // the same second.
        let mut x = nanos.wrapping_mul(0x2545_F491_4F6C_DD1D) | 1;
        (0..4)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (b'a' + (x % 26) as u8) as char
            })
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

/// The folder for a round's policy adapter; named by the round's number from 1, as shown.
pub fn policy_dir(session: &Path, round: usize) -> PathBuf {
    session.join("policy").join(format!("round-{}", round + 1))
}

/// The folder for a self-edit's adapter, named by its label (`r1-c2-e1`).
pub fn edit_adapter_dir(session: &Path, id: EditId) -> PathBuf {
    session.join("adapters").join(format!(
        "r{}-c{}-e{}",
        id.round + 1,
        id.ctx + 1,
        id.edit + 1
    ))
}

/// Reads a session: its header and every intact record, with any problems found in the log.
/// A log that is missing or holds no readable record is an error: there is nothing to show.
pub fn open(dir: &Path) -> Result<(Header, Vec<Record>, Vec<LogIssue>)> {
    let header = Header::read(&dir.join(HEADER_FILE))?;
    let path = dir.join(EVENTS_FILE);
    if !path.exists() {
        bail!(
            "{}: the session's log is missing, so there is nothing to show",
            path.display()
        );
    }
    let (records, issues) =
        read_log(&path).with_context(|| format!("cannot read the log of {}", dir.display()))?;
    if records.is_empty() {
        match issues.first() {
            None => bail!(
                "{}: the log is empty (the run recorded nothing), so there is nothing to show",
                path.display()
            ),
            Some(first) => bail!(
                "{}: no readable record ({} damaged line(s); the first: {first})",
                path.display(),
                issues.len()
            ),
        }
    }
    Ok((header, records, issues))
}

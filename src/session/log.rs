//! The append-only event log, `events.jsonl`: one [`Record`] per line, flushed after every
//! record and fsync'd after each record that closes a phase, so a killed process loses at most
//! the phase in flight. Reading tolerates a torn last line and reports corrupt ones.

use super::lock::SessionLock;
use crate::record::Record;
use anyhow::{Context, Result};
use serde::de::DeserializeOwned;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Something wrong found while reading a log; the record is skipped, the rest is kept.
#[derive(Clone, Debug, PartialEq)]
pub enum LogIssue {
    /// The last line was cut short (a crash mid-write); it is ignored and cut off on resume.
    TornTail { line: usize, bytes: usize },
    /// A line that is not a valid record.
    Corrupt { line: usize, error: String },
}

impl std::fmt::Display for LogIssue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LogIssue::TornTail { line, bytes } => write!(
                f,
                "line {line}: the last record was cut short ({bytes} bytes, probably a crash while writing); ignored"
            ),
            LogIssue::Corrupt { line, error } => {
                write!(f, "line {line}: not a valid record ({error}); skipped")
            }
        }
    }
}

/// Reads every intact record. Returns the records, the issues, and the byte length of the
/// intact prefix (where appending may resume).
pub struct LogReader {
    pub records: Vec<Record>,
    pub issues: Vec<LogIssue>,
    pub intact_len: u64,
}

impl LogReader {
    pub fn read(path: &Path) -> Result<LogReader> {
        let lines = read_jsonl::<Record>(path)?;
        Ok(LogReader {
            records: lines.entries,
            issues: lines.issues,
            intact_len: lines.intact_len,
        })
    }
}

/// What [`read_jsonl`] found: the intact entries, the issues, and the byte length of the
/// intact prefix (where appending may resume).
pub struct JsonLines<T> {
    pub entries: Vec<T>,
    pub issues: Vec<LogIssue>,
    pub intact_len: u64,
}

/// Reads a file of one JSON value per line, as every append-only file here is written: a torn
/// last line is reported and left out of the intact prefix; a corrupt line is reported and
/// skipped. A missing file is empty.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<JsonLines<T>> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(JsonLines {
                entries: Vec::new(),
                issues: Vec::new(),
                intact_len: 0,
            })
        }
        Err(e) => return Err(e).with_context(|| format!("cannot open {}", path.display())),
    };
    let mut reader = BufReader::new(file);
    let mut entries = Vec::new();
    let mut issues = Vec::new();
    let mut offset = 0u64;
    let mut intact_len = 0u64;
    let mut buf = Vec::new();
    let mut line_no = 0;
    loop {
        buf.clear();
        let n = reader
            .read_until(b'\n', &mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        line_no += 1;
        offset += n as u64;
        let complete = buf.ends_with(b"\n");
        let text = String::from_utf8_lossy(&buf);
        let text = text.trim();
        if text.is_empty() {
            if complete {
                intact_len = offset;
            }
            continue;
        }
        // A final line without its newline was still being written when the process died,
        // even if what is there happens to parse.
        match (complete, serde_json::from_str::<T>(text)) {
            (false, _) => issues.push(LogIssue::TornTail {
                line: line_no,
                bytes: n,
            }),
            (true, Ok(entry)) => {
                entries.push(entry);
                intact_len = offset;
            }
            (true, Err(e)) => {
                issues.push(LogIssue::Corrupt {
                    line: line_no,
                    error: e.to_string(),
                });
                intact_len = offset;
            }
        }
    }
    Ok(JsonLines {
        entries,
        issues,
        intact_len,
    })
}

pub fn read_log(path: &Path) -> Result<(Vec<Record>, Vec<LogIssue>)> {
    let r = LogReader::read(path)?;
    Ok((r.records, r.issues))
}

/// The writer side. Opening an existing log cuts off a torn tail first, so the file stays a
/// sequence of whole lines. It holds the session's writer lock for as long as it lives, so no
/// second process can append in between.
pub struct SessionLog {
    file: File,
    path: PathBuf,
    _lock: SessionLock,
}

impl SessionLog {
    pub fn create(path: &Path, lock: SessionLock) -> Result<SessionLog> {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(SessionLog {
            file,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Opens an existing log for appending after `intact_len` bytes (see [`LogReader`]). The
    /// log must have been read under `lock`, or `intact_len` may be stale.
    pub fn reopen(path: &Path, intact_len: u64, lock: SessionLock) -> Result<SessionLog> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata()?.len();
        if len > intact_len {
            file.set_len(intact_len)
                .with_context(|| format!("cannot cut the torn tail of {}", path.display()))?;
            file.sync_all()?;
        }
        file.seek(SeekFrom::End(0))?;
        Ok(SessionLog {
            file,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    /// Appends a record: one write of the whole line, flushed; fsync'd when it ends a phase.
    pub fn append(&mut self, record: &Record) -> Result<()> {
        let mut line = serde_json::to_vec(record)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .with_context(|| format!("cannot write {}", self.path.display()))?;
        self.file.flush()?;
        if record.event.ends_phase() {
            self.file
                .sync_data()
                .with_context(|| format!("cannot sync {}", self.path.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Event, RunMode};

    fn rec(t: f64) -> Record {
        Record {
            t,
            event: Event::ModeChanged {
                mode: RunMode::Auto,
            },
        }
    }

    #[test]
    fn torn_tail_is_reported_ignored_and_cut_before_appending() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let lock = || SessionLock::acquire(dir.path()).unwrap();
        let mut log = SessionLog::create(&path, lock()).unwrap();
        log.append(&rec(1.0)).unwrap();
        log.append(&rec(2.0)).unwrap();
        drop(log);
        // A crash in the middle of the third write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"t\":3.0,\"type\":\"mode_ch").unwrap();
        drop(f);

        let r = LogReader::read(&path).unwrap();
        assert_eq!(r.records, vec![rec(1.0), rec(2.0)]);
        assert!(matches!(
            r.issues.as_slice(),
            [LogIssue::TornTail { line: 3, .. }]
        ));
        let mut log = SessionLog::reopen(&path, r.intact_len, lock()).unwrap();
        log.append(&rec(4.0)).unwrap();
        let r = LogReader::read(&path).unwrap();
        assert_eq!(r.records, vec![rec(1.0), rec(2.0), rec(4.0)]);
        assert!(r.issues.is_empty());
    }

    #[test]
    fn corrupt_lines_are_skipped_and_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let good = serde_json::to_string(&rec(1.0)).unwrap();
        std::fs::write(
            &path,
            format!("{good}\nnot json at all\n{{\"t\":2,\"type\":\"no_such_event\"}}\n\n{good}\n"),
        )
        .unwrap();
        let r = LogReader::read(&path).unwrap();
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.issues.len(), 2);
        assert!(matches!(r.issues[0], LogIssue::Corrupt { line: 2, .. }));
        assert!(r.issues[1].to_string().contains("line 3"));
        assert_eq!(r.intact_len, std::fs::metadata(&path).unwrap().len());
    }

    #[test]
    fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let r = LogReader::read(&dir.path().join("none.jsonl")).unwrap();
        assert!(r.records.is_empty() && r.issues.is_empty());
    }
}

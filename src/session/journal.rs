//! A journal of finished work for commands that run for hours outside a session (`arc eval`):
//! one JSON line per finished piece, written and fsync'd as it finishes, so that running the
//! same command again after a kill, a crash or the end of a working day continues where it
//! stopped instead of starting over.
//!
//! The first line names the journal's kind and the settings its work depends on. Work is only
//! reused under the same settings: opening a journal with other settings is refused (reusing
//! it would mix two experiments in one table), and nothing in it is touched. One process writes
//! a journal at a time (an `flock` on the file itself); a torn last line is cut, as in the
//! event log.

use super::lock::SessionLock;
use super::log::{read_jsonl, LogIssue};
use anyhow::{bail, Context, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

const VERSION: u32 = 1;

/// The journal's first line.
#[derive(Debug, Serialize, Deserialize)]
struct JournalHeader {
    journal: String,
    version: u32,
    settings: Value,
}

/// Either line of a journal: the header first, entries after it.
#[derive(Deserialize)]
#[serde(untagged)]
enum Line<T> {
    Header(JournalHeader),
    Entry(T),
}

/// An open journal, locked for appending.
#[derive(Debug)]
pub struct Journal {
    file: File,
    path: PathBuf,
    _lock: SessionLock,
}

/// What opening a journal found.
pub struct Opened<T> {
    pub journal: Journal,
    /// The finished work already recorded, in the order it was written.
    pub entries: Vec<T>,
    /// Lines that were not used (a torn last line, a corrupt one), for the person to see.
    pub notices: Vec<String>,
}

impl Journal {
    /// Opens the journal at `path` for work of `kind` under `settings`, creating it when it
    /// does not exist, and returns the entries already in it.
    pub fn open<T: DeserializeOwned>(
        path: &Path,
        kind: &str,
        settings: &Value,
    ) -> Result<Opened<T>> {
        // Compared as they read back from a file, so a number's spelling cannot differ.
        let settings: Value = serde_json::from_str(&serde_json::to_string(settings)?)?;
        let lock = SessionLock::acquire_file(path)?;
        let lines = read_jsonl::<Line<T>>(path)?;
        let mut notices: Vec<String> = lines
            .issues
            .iter()
            .map(|issue| match issue {
                LogIssue::TornTail { .. } => format!("{}: {issue}", path.display()),
                LogIssue::Corrupt { .. } => {
                    format!("{}: {issue}; its work is done again", path.display())
                }
            })
            .collect();
        let corrupt = lines
            .issues
            .iter()
            .any(|i| matches!(i, LogIssue::Corrupt { .. }));
        if lines.entries.is_empty() && corrupt {
            bail!(
                "{}: its lines are not a journal's; it was not written by this command, so it \
                 is left as it is: give this command another output file (--out)",
                path.display()
            );
        }
        let intact_len = lines.intact_len;
        let mut lines = lines.entries.into_iter();
        let mut entries = Vec::new();
        let header = lines.next();
        let fresh = header.is_none();
        match header {
            None => {}
            Some(Line::Header(header)) => {
                if header.journal != kind || header.version > VERSION {
                    bail!(
                        "{}: a journal of {} (version {}), not of {kind}; give this command \
                         another output file (--out)",
                        path.display(),
                        header.journal,
                        header.version
                    );
                }
                if header.settings != settings {
                    bail!(
                        "{}: recorded with other settings ({}), so its finished work cannot \
                         be reused here. Run with the recorded settings to continue it, or \
                         give this command another output file (--out), or move the journal \
                         away, to start over",
                        path.display(),
                        differing_keys(&header.settings, &settings).join(", ")
                    );
                }
            }
            Some(Line::Entry(_)) => bail!(
                "{}: its first line is not a journal header; it was not written by this \
                 command, so it is left as it is: give this command another output file (--out)",
                path.display()
            ),
        }
        for line in lines {
            match line {
                Line::Entry(entry) => entries.push(entry),
                Line::Header(_) => notices.push(format!(
                    "{}: a second header line inside the journal; ignored",
                    path.display()
                )),
            }
        }

        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let intact_len = if fresh { 0 } else { intact_len };
        if file.metadata()?.len() > intact_len {
            file.set_len(intact_len)
                .with_context(|| format!("cannot cut the torn tail of {}", path.display()))?;
            file.sync_all()?;
        }
        let mut journal = Journal {
            file,
            path: path.to_path_buf(),
            _lock: lock,
        };
        if fresh {
            journal.append(&JournalHeader {
                journal: kind.to_string(),
                version: VERSION,
                settings,
            })?;
        }
        if !notices.is_empty() && fresh {
            notices.push(format!(
                "{}: no header was intact, so the journal starts over",
                path.display()
            ));
        }
        Ok(Opened {
            journal,
            entries,
            notices,
        })
    }

    /// Records one finished piece of work: the whole line in one write, on disk before this
    /// returns.
    pub fn append<T: Serialize>(&mut self, entry: &T) -> Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file
            .write_all(&line)
            .and_then(|()| self.file.sync_data())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// The top-level keys whose values differ, for the message.
fn differing_keys(recorded: &Value, now: &Value) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (recorded, now) else {
        return vec!["the whole of it".into()];
    };
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Done {
        task: String,
        score: f64,
    }

    fn done(task: &str, score: f64) -> Done {
        Done {
            task: task.into(),
            score,
        }
    }

    fn open(path: &Path, settings: &Value) -> Result<Opened<Done>> {
        Journal::open(path, "test work", settings)
    }

    #[test]
    fn work_is_kept_across_opens_and_a_torn_tail_is_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let settings = json!({"k": 5, "lr": 1e-4, "model": "m"});
        let mut opened = open(&path, &settings).unwrap();
        assert!(opened.entries.is_empty() && opened.notices.is_empty());
        opened.journal.append(&done("a", 1.0)).unwrap();
        opened.journal.append(&done("b", 0.5)).unwrap();
        drop(opened);
        // Killed in the middle of the third write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"task\":\"c\",\"sco").unwrap();
        drop(f);

        let mut opened = open(&path, &settings).unwrap();
        assert_eq!(opened.entries, vec![done("a", 1.0), done("b", 0.5)]);
        assert!(
            opened.notices[0].contains("cut short"),
            "{:?}",
            opened.notices
        );
        opened.journal.append(&done("c", 0.0)).unwrap();
        drop(opened);
        let opened = open(&path, &settings).unwrap();
        assert_eq!(opened.entries.len(), 3);
        assert!(opened.notices.is_empty(), "{:?}", opened.notices);
    }

    #[test]
    fn other_settings_are_refused_and_the_journal_left_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut opened = open(&path, &json!({"k": 5, "lr": 1e-4})).unwrap();
        opened.journal.append(&done("a", 1.0)).unwrap();
        drop(opened);
        let before = std::fs::read(&path).unwrap();
        let err = format!(
            "{:#}",
            open(&path, &json!({"k": 5, "lr": 3e-4})).err().unwrap()
        );
        assert!(err.contains("other settings (lr)"), "{err}");
        let err = format!(
            "{:#}",
            Journal::open::<Done>(&path, "other work", &json!({"k": 5, "lr": 1e-4}))
                .err()
                .unwrap()
        );
        assert!(err.contains("not of other work"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_refused_untouched() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        std::fs::write(&path, "{\"task\":\"a\",\"score\":1.0}\n").unwrap();
        let err = format!("{:#}", open(&path, &json!({})).err().unwrap());
        assert!(err.contains("not a journal header"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"task\":\"a\",\"score\":1.0}\n"
        );
        std::fs::write(&path, "{\"mine\": 1}\nnot json\n").unwrap();
        let err = format!("{:#}", open(&path, &json!({})).err().unwrap());
        assert!(err.contains("not a journal's"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"mine\": 1}\nnot json\n"
        );
    }

    #[test]
    fn a_second_writer_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let first = open(&path, &json!({})).unwrap();
        // flock locks belong to the open file, so a second open in this process conflicts as
        // a second process would.
        let err = format!("{:#}", open(&path, &json!({})).err().unwrap());
        assert!(err.contains("in use by another seal-tui process"), "{err}");
        drop(first);
        // Another test of this process that starts a program can hold a copy of the file
        // between its fork and exec (close-on-exec closes it then): the lock goes with it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while let Err(e) = open(&path, &json!({})) {
            assert!(std::time::Instant::now() < deadline, "{e:#}");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

//! One inner loop as files in the session folder: the protocol between the runner and
//! `seal-tui worker`, which may run on another machine that shares the folder.
//!
//! `cluster/units/r1-c2-e1-rev0-rep1/` holds `job.json` (written by the runner), the worker's
//! `progress-*.jsonl` (one line per training step, appended as it trains, tailed by the runner
//! for live loss), and `result.json` and `adapter/` (written by the worker, each under a
//! temporary name and renamed into place, the result last: a result that exists is complete,
//! and its adapter is there).

use crate::record::{QuestionResult, TrainProgress, UnitId};
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// The session's folder for cluster work.
pub const CLUSTER_DIR: &str = "cluster";
pub const JOB_FILE: &str = "job.json";
pub const RESULT_FILE: &str = "result.json";
pub const ADAPTER_DIR: &str = "adapter";
pub const LOCK_FILE: &str = "lock";
/// Left by the runner in a unit it no longer wants, for a task that runs several units: the
/// worker passes over it rather than the whole task being cancelled.
pub const SKIP_FILE: &str = "skip";

pub fn units_dir(session: &Path) -> PathBuf {
    session.join(CLUSTER_DIR).join("units")
}

pub fn unit_dir(session: &Path, unit: UnitId) -> PathBuf {
    units_dir(session).join(unit.dir_name())
}

/// The progress file of one task (`None`: run by hand, outside an array).
pub fn progress_path(unit_dir: &Path, task: Option<(&str, usize)>) -> PathBuf {
    match task {
        Some((job, index)) => unit_dir.join(format!("progress-{job}_{index}.jsonl")),
        None => unit_dir.join("progress.jsonl"),
    }
}

/// What one worker is asked to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitJob {
    /// The seal-tui that wrote it; a worker of another version refuses it (its training and
    /// grading could differ).
    pub tool_version: String,
    pub unit: UnitId,
    /// The context's index in the run's data set.
    pub context: usize,
    /// The self-edit's text at this revision.
    pub text: String,
    /// The policy updates to merge into the base model first, in order (session-relative).
    pub policy: Vec<String>,
    /// Whether to keep the adapter (a run that saves no adapters does not need it).
    pub save_adapter: bool,
}

/// One line of a progress file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ProgressLine {
    Started {
        total_steps: usize,
        examples: usize,
        tokens: usize,
    },
    Step {
        progress: TrainProgress,
    },
}

/// The finetune of a unit, as its start and end events record it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub total_steps: usize,
    pub examples: usize,
    pub tokens: usize,
    pub steps: usize,
    /// None when no step ran.
    pub final_loss: Option<f64>,
    pub secs: f64,
}

/// What the unit came to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum UnitOutcome {
    /// Trained, answered and graded.
    Evaluated {
        train: TrainSummary,
        results: Vec<QuestionResult>,
        accuracy: f64,
        eval_secs: f64,
    },
    /// The finetune failed (a diverging loss, an unusable self-edit): the edit earns nothing,
    /// as it would in-process. This is a result, not a failed task.
    TrainFailed { message: String },
}

/// Where the worker's time went; the runner reports it and the overhead is reckoned from it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct UnitTiming {
    pub host: String,
    /// Wall-clock seconds since the Unix epoch when the worker started.
    pub started_at: f64,
    /// Loading the model, the policy updates and the domain.
    pub load_secs: f64,
    /// The worker's whole life, up to writing the result.
    pub total_secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitResult {
    pub unit: UnitId,
    pub outcome: UnitOutcome,
    pub timing: UnitTiming,
}

/// Seconds since the Unix epoch.
pub fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes a file under a temporary name in the same folder, flushes it to disk, and renames it
/// into place, so a reader sees the whole file or none.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("a file to write needs a folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    {
        let mut f = std::fs::File::create(&tmp)
            .with_context(|| format!("cannot write {}", tmp.display()))?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    sync_dir(dir);
    Ok(())
}

/// Makes a rename in `dir` durable (best effort: not every file system allows it).
pub fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, serde_json::to_string_pretty(value)?.as_bytes())
}

pub fn read_job(path: &Path) -> Result<UnitJob> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not a unit job", path.display()))
}

/// The unit's result, if its worker has finished. A result file is only ever complete (it is
/// renamed into place), so one that does not read is damage, reported as an error.
pub fn read_result(unit_dir: &Path) -> Result<Option<UnitResult>> {
    let path = unit_dir.join(RESULT_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let result: UnitResult = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a unit result", path.display()))?;
    Ok(Some(result))
}

/// Reads a progress file as it grows: each call returns the lines completed since the last.
#[derive(Debug)]
pub struct ProgressTail {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl ProgressTail {
    pub fn new(path: PathBuf) -> ProgressTail {
        ProgressTail {
            path,
            offset: 0,
            partial: String::new(),
        }
    }

    /// New complete lines; a line still being written waits for the next call. A missing
    /// file is no lines yet (the task has not started).
    pub fn read_new(&mut self) -> Result<Vec<ProgressLine>> {
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                return Err(e).with_context(|| format!("cannot read {}", self.path.display()))
            }
        };
        file.seek(SeekFrom::Start(self.offset))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        self.offset += bytes.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&bytes));
        let mut lines = Vec::new();
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line.trim()) {
                Ok(l) => lines.push(l),
                Err(e) => bail!("{}: unreadable line {line:?}: {e}", self.path.display()),
            }
        }
        Ok(lines)
    }
}

/// Appends progress lines for a worker, one flush per line so a reader sees each step.
#[derive(Debug)]
pub struct ProgressWriter {
    file: std::fs::File,
}

impl ProgressWriter {
    /// Starts the file afresh: a retried task reports its finetune from the start.
    pub fn create(path: &Path) -> Result<ProgressWriter> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(ProgressWriter { file })
    }

    pub fn write(&mut self, line: &ProgressLine) -> Result<()> {
        let mut text = serde_json::to_string(line)?;
        text.push('\n');
        self.file.write_all(text.as_bytes())?;
        self.file.flush()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::EditId;

    fn unit() -> UnitId {
        UnitId {
            id: EditId {
                round: 0,
                ctx: 1,
                edit: 0,
            },
            rev: 0,
            repeat: 1,
        }
    }

    #[test]
    fn a_progress_file_is_read_line_by_line_as_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let path = progress_path(dir.path(), Some(("12", 3)));
        assert!(path.ends_with("progress-12_3.jsonl"));
        let mut tail = ProgressTail::new(path.clone());
        assert!(
            tail.read_new().unwrap().is_empty(),
            "no file yet is no lines"
        );
        let mut w = ProgressWriter::create(&path).unwrap();
        w.write(&ProgressLine::Started {
            total_steps: 2,
            examples: 1,
            tokens: 5,
        })
        .unwrap();
        // Half a line: not read until it is finished.
        let step = serde_json::to_string(&ProgressLine::Step {
            progress: TrainProgress {
                step: 1,
                ..Default::default()
            },
        })
        .unwrap();
        let (a, b) = step.split_at(10);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(a.as_bytes())
            .unwrap();
        let got = tail.read_new().unwrap();
        assert_eq!(got.len(), 1);
        assert!(matches!(
            got[0],
            ProgressLine::Started { total_steps: 2, .. }
        ));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(format!("{b}\n").as_bytes())
            .unwrap();
        let got = tail.read_new().unwrap();
        assert!(matches!(&got[..], [ProgressLine::Step { progress }] if progress.step == 1));
        assert!(tail.read_new().unwrap().is_empty());
        std::fs::write(&path, "{\"kind\":\"nonsense\"}\n").unwrap();
        let mut fresh = ProgressTail::new(path);
        assert!(fresh.read_new().is_err(), "a damaged line is an error");
    }

    #[test]
    fn results_are_whole_or_absent() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_result(dir.path()).unwrap().is_none());
        let result = UnitResult {
            unit: unit(),
            outcome: UnitOutcome::TrainFailed {
                message: "nan".into(),
            },
            timing: UnitTiming::default(),
        };
        write_json(&dir.path().join(RESULT_FILE), &result).unwrap();
        assert_eq!(read_result(dir.path()).unwrap(), Some(result));
        // No temporary file is left beside it.
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![RESULT_FILE.to_string()]);
        std::fs::write(dir.path().join(RESULT_FILE), "{").unwrap();
        assert!(read_result(dir.path()).is_err());
    }
}

//! Reading what SLURM's commands print: job ids, task states and the reasons tasks ended.

use anyhow::{bail, Result};

/// A job's state as SLURM names it (the long form `squeue %T` and `scontrol` print).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobState {
    Pending,
    Running,
    /// Configuring, completing, suspended, requeued ...: not over, not necessarily running.
    Waiting(String),
    Completed,
    /// Failed, cancelled, timed out, out of memory, node failure, preempted ...
    Ended(String),
}

impl JobState {
    pub fn parse(text: &str) -> JobState {
        // scontrol may add flags (`CANCELLED by 0`); the state is the first word.
        let word = text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        match word.as_str() {
            "PENDING" | "PD" => JobState::Pending,
            "RUNNING" | "R" => JobState::Running,
            "COMPLETED" | "CD" => JobState::Completed,
            "CONFIGURING" | "COMPLETING" | "SUSPENDED" | "REQUEUED" | "REQUEUE_HOLD"
            | "REQUEUE_FED" | "RESIZING" | "SIGNALING" | "STAGE_OUT" | "STOPPED"
            | "RESV_DEL_HOLD" | "SPECIAL_EXIT" => JobState::Waiting(word),
            _ => JobState::Ended(word),
        }
    }

    /// Whether the task will do nothing more.
    pub fn is_over(&self) -> bool {
        matches!(self, JobState::Completed | JobState::Ended(_))
    }
}

/// One task as `squeue` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub job: String,
    pub index: usize,
    pub state: JobState,
    /// Why it waits (`(Resources)`, `(JobArrayTaskLimit)`) or where it runs (the node list).
    pub reason: String,
}

/// How a finished task ended, for a person: the state, SLURM's reason and the exit code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskEnding {
    pub state: JobState,
    pub reason: String,
    pub exit_code: String,
}

impl TaskEnding {
    pub fn describe(&self) -> String {
        let state = match &self.state {
            JobState::Completed => "COMPLETED".to_string(),
            JobState::Pending => "PENDING".to_string(),
            JobState::Running => "RUNNING".to_string(),
            JobState::Waiting(s) | JobState::Ended(s) => s.clone(),
        };
        let mut out = state;
        if !self.reason.is_empty() && self.reason != "None" {
            out.push_str(&format!(" ({})", self.reason));
        }
        if !self.exit_code.is_empty() && self.exit_code != "0:0" {
            out.push_str(&format!(", exit code {}", self.exit_code));
        }
        out
    }
}

/// The job id `sbatch --parsable` prints (`1234`, or `1234;cluster` on a federation).
pub fn job_id(text: &str) -> Result<String> {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("");
    let id = line.split(';').next().unwrap_or("").trim();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("no job id in sbatch's output");
    }
    Ok(id.to_string())
}

/// Lines of `squeue --array --format=%F|%K|%T|%R`. Rows that are not array tasks (`%K` is
/// `N/A`) or that cannot be read are left out.
pub fn squeue_lines(text: &str) -> Vec<TaskInfo> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.trim().splitn(4, '|');
            let job = parts.next()?.trim();
            let index = parts.next()?.trim().parse().ok()?;
            let state = JobState::parse(parts.next()?);
            let reason = parts.next().unwrap_or("").trim();
            let reason = reason
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .unwrap_or(reason);
            (!job.is_empty()).then(|| TaskInfo {
                job: job.to_string(),
                index,
                state,
                reason: reason.to_string(),
            })
        })
        .collect()
}

/// `Key=value` from `scontrol --oneliner show job`.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

pub fn scontrol_ending(text: &str) -> Option<TaskEnding> {
    let state = field(text, "JobState")?;
    Some(TaskEnding {
        state: JobState::parse(state),
        reason: field(text, "Reason").unwrap_or("").to_string(),
        exit_code: field(text, "ExitCode").unwrap_or("").to_string(),
    })
}

/// The first line of `sacct --parsable2 --format=State,ExitCode,Reason` (the task itself;
/// further lines are its steps).
pub fn sacct_ending(text: &str) -> Option<TaskEnding> {
    let line = text.lines().find(|l| !l.trim().is_empty())?;
    let mut parts = line.split('|');
    let state = parts.next()?.trim();
    if state.is_empty() {
        return None;
    }
    Some(TaskEnding {
        state: JobState::parse(state),
        exit_code: parts.next().unwrap_or("").trim().to_string(),
        reason: parts.next().unwrap_or("").trim().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_as_sbatch_prints_them() {
        assert_eq!(job_id("1234\n").unwrap(), "1234");
        assert_eq!(job_id("1234;cluster\n").unwrap(), "1234");
        assert!(job_id("").is_err());
        assert!(job_id("Submitted batch job 12").is_err());
    }

    #[test]
    fn squeue_rows_as_the_real_one_prints_them() {
        // Captured from the test cluster: a failed task, a throttled one, a running one.
        let text = "1|1|FAILED|(NonZeroExitCode)\n1|2|PENDING|(JobArrayTaskLimit)\n\
                    1|0|RUNNING|vm\n7|N/A|RUNNING|vm\ngarbage\n";
        let rows = squeue_lines(text);
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            TaskInfo {
                job: "1".into(),
                index: 1,
                state: JobState::Ended("FAILED".into()),
                reason: "NonZeroExitCode".into(),
            }
        );
        assert_eq!(rows[1].state, JobState::Pending);
        assert_eq!(rows[1].reason, "JobArrayTaskLimit");
        assert_eq!(rows[2].state, JobState::Running);
        assert_eq!(rows[2].reason, "vm");
        assert!(rows[0].state.is_over() && !rows[1].state.is_over());
        assert!(JobState::Completed.is_over());
        assert!(!JobState::parse("COMPLETING").is_over());
    }

    #[test]
    fn endings_from_scontrol_and_sacct() {
        let text = "JobId=3 ArrayJobId=1 ArrayTaskId=1 JobName=t1 UserId=root(0) \
                    JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0";
        let e = scontrol_ending(text).unwrap();
        assert_eq!(e.state, JobState::Ended("FAILED".into()));
        assert_eq!(e.describe(), "FAILED (NonZeroExitCode), exit code 3:0");
        let e = scontrol_ending("JobState=CANCELLED Reason=None ExitCode=0:15").unwrap();
        assert_eq!(e.describe(), "CANCELLED, exit code 0:15");
        assert!(scontrol_ending("nothing here").is_none());
        let e = sacct_ending("TIMEOUT|0:0|None\nCANCELLED|0:15|\n").unwrap();
        assert_eq!(e.describe(), "TIMEOUT");
        assert!(sacct_ending("\n").is_none());
    }
}

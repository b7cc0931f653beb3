//! What is recorded about inner loops that run on a cluster: which unit of work each task of a
//! SLURM job array carries, how each task fares, and the fold of those events (the arrays of a
//! run, with every task's state and live loss) that the runner re-attaches from and the screen
//! draws.

use super::ids::EditId;
use serde::{Deserialize, Serialize};
use std::fmt;

/// One inner loop: finetune a fresh adapter on one revision of one self-edit, then answer and
/// grade (one of the `repeats` evaluations of that edit).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UnitId {
    pub id: EditId,
    pub rev: u32,
    pub repeat: usize,
}

impl UnitId {
    /// A folder name: `r1-c2-e1-rev0-rep1` (1-based like every label, revision from 0).
    pub fn dir_name(&self) -> String {
        format!(
            "r{}-c{}-e{}-rev{}-rep{}",
            self.id.round + 1,
            self.id.ctx + 1,
            self.id.edit + 1,
            self.rev,
            self.repeat + 1
        )
    }
}

impl fmt::Display for UnitId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} rep {}", self.id, self.repeat + 1)?;
        if self.rev > 0 {
            write!(f, " (rev {})", self.rev)?;
        }
        Ok(())
    }
}

/// A unit of an array: its line in the array's unit list and the unit; `attempt` counts from 1
/// (a retry is a task of a new array with the next attempt). SLURM's task for it is
/// [`ArrayState::slot`] of the index (the index itself when each task runs one unit).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClusterTask {
    pub index: usize,
    pub unit: UnitId,
    pub attempt: u32,
}

/// Where a task is. `Failed` is any end without a result (a non-zero exit, a time limit, a
/// node failure, a `scancel` from outside); `Cancelled` is the runner's own cancellation (a quit,
/// or a unit no longer needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    #[default]
    Pending,
    Running,
    Done,
    Failed,
    Cancelled,
}

impl TaskStatus {
    pub fn is_final(self) -> bool {
        matches!(
            self,
            TaskStatus::Done | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Running => "running",
            TaskStatus::Done => "done",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

/// A task as folded: its unit, its state, and the progress its finetune reported.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskState {
    pub index: usize,
    pub unit: UnitId,
    pub attempt: u32,
    pub status: TaskStatus,
    /// The node while it runs; SLURM's reason when it failed or was cancelled; timings when done.
    pub detail: String,
    /// Whether its finetune has reported its start.
    pub started: bool,
    pub step: usize,
    pub total_steps: usize,
    pub loss: Option<f64>,
}

/// One submitted job array: the round it serves and its tasks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArrayState {
    pub job: String,
    pub round: usize,
    pub tasks: Vec<TaskState>,
    /// Units each SLURM task runs, one after another.
    pub per_task: usize,
    /// Why the runner cancelled the whole array, if it did.
    pub cancelled: Option<String>,
}

/// Tasks per state, for a summary line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TaskCounts {
    pub pending: usize,
    pub running: usize,
    pub done: usize,
    pub failed: usize,
    pub cancelled: usize,
}

impl TaskCounts {
    pub fn of<'a>(tasks: impl IntoIterator<Item = &'a TaskState>) -> TaskCounts {
        let mut c = TaskCounts::default();
        for t in tasks {
            match t.status {
                TaskStatus::Pending => c.pending += 1,
                TaskStatus::Running => c.running += 1,
                TaskStatus::Done => c.done += 1,
                TaskStatus::Failed => c.failed += 1,
                TaskStatus::Cancelled => c.cancelled += 1,
            }
        }
        c
    }

    pub fn active(&self) -> usize {
        self.pending + self.running
    }
}

impl ArrayState {
    pub fn counts(&self) -> TaskCounts {
        TaskCounts::of(&self.tasks)
    }

    pub fn is_active(&self) -> bool {
        self.tasks.iter().any(|t| !t.status.is_final())
    }

    /// The SLURM array task that runs the unit at `index`.
    pub fn slot(&self, index: usize) -> usize {
        slot_of(index, self.per_task)
    }
}

/// The SLURM array task that runs the unit at `index` when each task runs `per_task` units.
pub fn slot_of(index: usize, per_task: usize) -> usize {
    index / per_task.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_name_their_folders_from_one() {
        let u = UnitId {
            id: EditId {
                round: 0,
                ctx: 1,
                edit: 2,
            },
            rev: 0,
            repeat: 0,
        };
        assert_eq!(u.dir_name(), "r1-c2-e3-rev0-rep1");
        assert_eq!(u.to_string(), "r1 c2 e3 rep 1");
        assert_eq!(UnitId { rev: 2, ..u }.to_string(), "r1 c2 e3 rep 1 (rev 2)");
    }
}

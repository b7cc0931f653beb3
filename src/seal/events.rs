//! What a SEAL run says happened, and what a human may ask of it.
//!
//! Every step of the loop is an [`Event`]; the session log is a sequence of them and the screen
//! is a fold over them ([`super::state::RunState`]), so a live run, a replay and a resume share
//! one code path. Human decisions are events too.

use crate::engine::train::StepProgress;
use crate::tasks::arc::ArcTask;
use crate::tasks::knowledge::Verdict;
use serde::{Deserialize, Serialize};

/// Identifies a context within a run: its round and its position among the round's contexts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CtxId {
    pub round: usize,
    pub ctx: usize,
}

/// Identifies one self-edit: its context and its index among the k samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct EditId {
    pub round: usize,
    pub ctx: usize,
    pub edit: usize,
}

impl EditId {
    pub fn ctx_id(self) -> CtxId {
        CtxId {
            round: self.round,
            ctx: self.ctx,
        }
    }
}

/// Facts about the run fixed at its start, for display.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub session: String,
    pub domain: String,
    pub model: String,
    pub device: String,
    pub template: String,
    pub grader: String,
    pub rounds: usize,
    pub contexts_per_round: usize,
    pub k: usize,
    pub repeats: usize,
    pub approval_required: bool,
}

/// What a context holds, as the screen shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContextBody {
    Passage { text: String },
    Arc { task: ArcTask },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionView {
    pub question: String,
    pub answers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextView {
    /// Stable identity of the context in its data set (passage index, ARC task id).
    pub id: String,
    pub title: String,
    pub body: ContextBody,
    pub questions: Vec<QuestionView>,
}

/// One graded answer: which question, what the model said, and the grader's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionResult {
    pub question: usize,
    pub answer: String,
    pub verdict: Verdict,
}

/// A human decision about a self-edit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Decision {
    Approved,
    Rejected,
    /// The text was replaced; the edit is evaluated again on the new text.
    Edited {
        text: String,
    },
}

/// How the loop advances.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RunMode {
    /// Runs one phase, then waits.
    #[default]
    Step,
    /// Runs until paused or done.
    Auto,
    /// Waits.
    Paused,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct RoundMetrics {
    /// Mean over contexts of the unadapted model's accuracy.
    pub accuracy_before: f64,
    /// Mean over evaluated self-edits of the adapted model's accuracy.
    pub accuracy_after: f64,
    /// Mean over evaluated self-edits of the reward (adapted accuracy).
    pub mean_reward: f64,
    /// Mean over evaluated self-edits of the gain over the unadapted model.
    pub mean_gain: f64,
    pub edits_evaluated: usize,
    pub edits_kept: usize,
    pub contexts: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    RunStarted {
        info: RunInfo,
    },
    RoundStarted {
        round: usize,
        contexts: usize,
    },
    ContextStarted {
        id: CtxId,
        context: ContextView,
    },
    /// The unadapted model's answers, the baseline every reward is compared with.
    BaselineScored {
        id: CtxId,
        results: Vec<QuestionResult>,
        accuracy: f64,
        secs: f64,
    },
    EditSampling {
        id: EditId,
        prompt: String,
    },
    /// A piece of self-edit text as it is sampled.
    EditToken {
        id: EditId,
        piece: String,
    },
    EditSampled {
        id: EditId,
        text: String,
        tokens: usize,
        secs: f64,
    },
    EditDecision {
        id: EditId,
        decision: Decision,
    },
    TrainStarted {
        id: EditId,
        total_steps: usize,
        examples: usize,
        tokens: usize,
    },
    TrainStep {
        id: EditId,
        progress: StepProgress,
    },
    TrainFinished {
        id: EditId,
        steps: usize,
        final_loss: f64,
        secs: f64,
    },
    TrainFailed {
        id: EditId,
        message: String,
    },
    /// One evaluation (of `repeats`) of the adapted model on the context's questions.
    EditEvaluated {
        id: EditId,
        repeat: usize,
        results: Vec<QuestionResult>,
        accuracy: f64,
        secs: f64,
    },
    /// The self-edit's reward: mean adapted accuracy, and its gain over the baseline.
    EditScored {
        id: EditId,
        reward: f64,
        gain: f64,
    },
    /// Selection for the policy update: the kept self-edit, if any.
    ContextFinished {
        id: CtxId,
        kept: Option<usize>,
        reason: String,
    },
    PolicyUpdateStarted {
        round: usize,
        pairs: usize,
        total_steps: usize,
    },
    PolicyStep {
        round: usize,
        progress: StepProgress,
    },
    PolicyUpdated {
        round: usize,
        adapter: String,
        secs: f64,
    },
    PolicySkipped {
        round: usize,
        reason: String,
    },
    RoundFinished {
        round: usize,
        metrics: RoundMetrics,
    },
    RunFinished {
        secs: f64,
    },
    ModeChanged {
        mode: RunMode,
    },
    Warning {
        message: String,
    },
    /// Progress outside the loop proper (fetching or loading the model).
    Status {
        message: String,
    },
    /// The run stopped on an error; the session can be resumed.
    Failed {
        message: String,
    },
}

impl Event {
    /// Whether the event closes a phase of the loop: the log is fsync'd after these, and a
    /// resume restarts from the phase after the last one.
    pub fn ends_phase(&self) -> bool {
        matches!(
            self,
            Event::RunStarted { .. }
                | Event::BaselineScored { .. }
                | Event::EditSampled { .. }
                | Event::EditDecision { .. }
                | Event::EditScored { .. }
                | Event::TrainFailed { .. }
                | Event::ContextFinished { .. }
                | Event::PolicyUpdated { .. }
                | Event::PolicySkipped { .. }
                | Event::RoundFinished { .. }
                | Event::RunFinished { .. }
                | Event::ModeChanged { .. }
        )
    }

    /// Streaming detail that a headless progress printer leaves out.
    pub fn is_chatter(&self) -> bool {
        matches!(
            self,
            Event::EditToken { .. } | Event::TrainStep { .. } | Event::PolicyStep { .. }
        )
    }
}

/// An event with the time it happened, in seconds since the session began. This is one line of
/// a session's `events.jsonl`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub t: f64,
    #[serde(flatten)]
    pub event: Event,
}

/// What a human (or a script) asks of a running loop.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    Approve {
        id: EditId,
    },
    Reject {
        id: EditId,
    },
    /// Replace a self-edit's text; it is trained on and evaluated again.
    Edit {
        id: EditId,
        text: String,
    },
    Pause,
    /// Run exactly one phase, then wait.
    Step,
    /// Run until paused, or until `rounds` more rounds are done.
    Auto {
        rounds: Option<usize>,
    },
    /// Finish the current context now with what has been evaluated so far.
    SkipContext,
    /// Stop after recording what is done; the session can be resumed.
    Quit,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_flat_json_lines() {
        let r = Record {
            t: 1.5,
            event: Event::EditToken {
                id: EditId {
                    round: 0,
                    ctx: 1,
                    edit: 2,
                },
                piece: "he".into(),
            },
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"t":1.5,"type":"edit_token","id":{"round":0,"ctx":1,"edit":2},"piece":"he"}"#
        );
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        let c: Command = serde_json::from_str(r#"{"command":"auto","rounds":2}"#).unwrap();
        assert_eq!(c, Command::Auto { rounds: Some(2) });
    }
}

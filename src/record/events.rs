//! What a SEAL run says happened, and what a human may ask of it.
//!
//! Every step of the loop is an [`Event`]; the session log is a sequence of [`Record`]s and the
//! screen is a fold over them ([`super::state::RunState`]), so a live run, a replay and a resume
//! share one code path. Human decisions are events too.
//!
//! Every type here is written to `events.jsonl`: changing one changes the file format, which the
//! format test in `record/mod.rs` catches (bump [`super::FORMAT_VERSION`] with it).

use super::cluster::{ClusterTask, TaskStatus};
use super::ids::{CtxId, EditId};
use serde::{Deserialize, Serialize};

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
    /// How a self-edit's gain is reckoned in this domain.
    #[serde(default)]
    pub gain_rule: GainRule,
}

/// A self-edit's gain, the number the selection threshold is compared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum GainRule {
    /// The improvement over the unadapted model (knowledge: questions it did not know).
    #[default]
    OverBaseline,
    /// The reward itself (ARC: the unadapted model cannot be scored the same way).
    Reward,
}

/// What a context's baseline (the score every reward is compared with) measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum BaselineKind {
    /// The model as it is, before any adaptation to the context.
    #[default]
    Unadapted,
    /// The model after the inner loop trained it on the context alone (knowledge: the passage),
    /// so that a self-edit earns only what it teaches beyond the context itself.
    ContextOnly,
}

impl BaselineKind {
    /// Words for the score, as headless output and reports print them.
    pub fn describe(self) -> &'static str {
        match self {
            BaselineKind::Unadapted => "unadapted accuracy",
            BaselineKind::ContextOnly => "accuracy after training on the context alone",
        }
    }

    /// A short label for tight places on the screen.
    pub fn short(self) -> &'static str {
        match self {
            BaselineKind::Unadapted => "base",
            BaselineKind::ContextOnly => "context only",
        }
    }
}

impl GainRule {
    pub fn gain(self, reward: f64, baseline: f64) -> f64 {
        match self {
            GainRule::OverBaseline => reward - baseline,
            GainRule::Reward => reward,
        }
    }
}

/// An ARC grid: rows of colour indices 0-9.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Grid(pub Vec<Vec<u8>>);

impl Grid {
    pub fn height(&self) -> usize {
        self.0.len()
    }

    pub fn width(&self) -> usize {
        self.0.first().map_or(0, Vec::len)
    }

    /// The cell, or `None` outside the grid (a recorded grid may be ragged).
    pub fn get(&self, row: usize, col: usize) -> Option<u8> {
        self.0.get(row)?.get(col).copied()
    }

    pub fn rows(&self) -> &[Vec<u8>] {
        &self.0
    }
}

/// An input grid and the output the task's rule turns it into.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GridPair {
    pub input: Grid,
    pub output: Grid,
}

/// An ARC task as the screen shows it: demonstrations and test cases.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArcTaskView {
    pub id: String,
    pub train: Vec<GridPair>,
    pub test: Vec<GridPair>,
}

/// What a context holds, as the screen shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ContextBody {
    Passage { text: String },
    Arc { task: ArcTaskView },
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

/// The outcome of grading one answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// The label of the grader that produced it (`em`, `f1>=0.5`, `judge-local`, ...).
    pub grader: String,
    pub correct: bool,
    /// EM: 0 or 1; F1: the best token F1; judge: 1 for yes, 0 otherwise.
    pub score: f64,
    /// What the grader actually compared or said: the normalised strings for EM/F1, the
    /// judge's reply text for a judge. Kept so a human can audit a surprising verdict.
    pub raw: String,
}

/// One graded answer: which question, what the model said, and the grader's verdict.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QuestionResult {
    pub question: usize,
    pub answer: String,
    /// ARC: the grid read from the answer, when one could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grid: Option<Grid>,
    pub verdict: Verdict,
}

/// Where a knowledge context's graded questions come from (`[knowledge] questions`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuestionSource {
    /// The data's own gold questions.
    #[default]
    Gold,
    /// Questions the model wrote about the passage before it was hidden; they are the reward.
    #[serde(rename = "self")]
    SelfWritten,
    /// The reward stays gold; the self-written questions are graded beside them, to measure
    /// how well they agree.
    Both,
}

impl QuestionSource {
    pub fn name(self) -> &'static str {
        match self {
            QuestionSource::Gold => "gold",
            QuestionSource::SelfWritten => "self",
            QuestionSource::Both => "both",
        }
    }

    /// Whether questions are written by the model at all.
    pub fn writes_questions(self) -> bool {
        self != QuestionSource::Gold
    }
}

/// Question/answer pairs the model wrote about a passage while it could still see it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfQuestions {
    /// The passage's index in the data file.
    pub index: usize,
    /// The model's output, as it came.
    pub raw: String,
    /// The pairs kept after parsing (malformed, duplicate and long-answer pairs dropped).
    pub questions: Vec<QuestionView>,
    /// How many parsed pairs were dropped.
    pub dropped: usize,
    /// Why none could be used, when none could.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    pub secs: f64,
}

/// The adapted (or unadapted) model graded on the self-written questions as well, when the
/// reward is the gold one (`questions = "both"`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SelfCheck {
    pub results: Vec<QuestionResult>,
    pub accuracy: f64,
}

/// Progress of a finetune after one optimizer step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainProgress {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: f64,
    pub loss: f64,
    pub learning_rate: f64,
    pub grad_norm: f64,
    pub tokens_per_sec: f64,
    pub elapsed_secs: f64,
    pub eta_secs: f64,
}

/// One self-edit of a held-out context: its text, and the adapted model's graded answers
/// (none when it could not be trained; `note` says why).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldoutEdit {
    pub text: String,
    pub accuracy: f64,
    pub results: Vec<QuestionResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A held-out pass's figures over all its contexts' self-edits.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct HeldoutSummary {
    /// Share of held-out questions the adapted models answered correctly.
    pub accuracy: f64,
    pub ci95_low: f64,
    pub ci95_high: f64,
    pub correct: usize,
    pub graded: usize,
    /// Mean over contexts of the unadapted policy's accuracy.
    pub baseline: f64,
    pub contexts: usize,
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
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, clap::ValueEnum)]
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

impl RunMode {
    pub fn name(self) -> &'static str {
        match self {
            RunMode::Step => "step",
            RunMode::Auto => "auto",
            RunMode::Paused => "paused",
        }
    }
}

/// A round's figures; see [`super::metrics::round_metrics`] for how they are reckoned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct RoundMetrics {
    /// Mean over contexts of the unadapted model's accuracy (none: nothing measured yet).
    pub accuracy_before: Option<f64>,
    /// Mean over finished self-edits of the adapted model's accuracy (a failed one counts 0).
    pub accuracy_after: Option<f64>,
    /// Mean over finished self-edits of the reward.
    pub mean_reward: Option<f64>,
    /// Mean over finished self-edits of the gain.
    pub mean_gain: Option<f64>,
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
    /// The baseline every reward is compared with: the unadapted model's answers, or those
    /// after training on the context alone (`kind`; absent in logs from before it existed).
    BaselineScored {
        id: CtxId,
        results: Vec<QuestionResult>,
        accuracy: f64,
        secs: f64,
        #[serde(default)]
        kind: BaselineKind,
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
    /// A human decision. An `Edited` decision starts a new revision of the edit's text; work
    /// events carry the revision they were done on, and the fold ignores superseded ones.
    EditDecision {
        id: EditId,
        decision: Decision,
    },
    TrainStarted {
        id: EditId,
        #[serde(default)]
        rev: u32,
        /// Which of the edit's evaluations this finetune serves (format 3; before, one at a
        /// time, so the fold did not need it).
        #[serde(default)]
        repeat: usize,
        total_steps: usize,
        examples: usize,
        tokens: usize,
    },
    TrainStep {
        id: EditId,
        #[serde(default)]
        rev: u32,
        /// Which of the edit's evaluations this finetune serves (format 3; before, one at a
        /// time, so the fold did not need it).
        #[serde(default)]
        repeat: usize,
        progress: TrainProgress,
    },
    TrainFinished {
        id: EditId,
        #[serde(default)]
        rev: u32,
        /// Which of the edit's evaluations this finetune serves (format 3; before, one at a
        /// time, so the fold did not need it).
        #[serde(default)]
        repeat: usize,
        steps: usize,
        final_loss: f64,
        secs: f64,
    },
    /// The finetune failed, or the self-edit was unusable: the edit earns nothing.
    TrainFailed {
        id: EditId,
        #[serde(default)]
        rev: u32,
        message: String,
    },
    /// One evaluation (of `repeats`) of the adapted model on the context's questions.
    EditEvaluated {
        id: EditId,
        #[serde(default)]
        rev: u32,
        repeat: usize,
        results: Vec<QuestionResult>,
        accuracy: f64,
        secs: f64,
    },
    /// The questions the model wrote about a context's passage before it was hidden (format 4).
    QuestionsWritten {
        id: CtxId,
        questions: SelfQuestions,
    },
    /// Graded answers on the self-written questions beside the gold ones (`questions =
    /// "both"`): the baseline's when `edit` is none, else one evaluation of that edit (format 4).
    SelfChecked {
        id: CtxId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        edit: Option<EditId>,
        #[serde(default)]
        rev: u32,
        #[serde(default)]
        repeat: usize,
        check: SelfCheck,
    },
    /// The self-edit's reward: mean adapted accuracy, and its gain (see [`GainRule`]).
    EditScored {
        id: EditId,
        #[serde(default)]
        rev: u32,
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
        progress: TrainProgress,
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
    /// A held-out pass begins: before round 1 (`after_round` none) or after a policy update.
    HeldoutStarted {
        pass: usize,
        after_round: Option<usize>,
        contexts: usize,
    },
    /// One held-out context evaluated with the current policy's self-edits.
    HeldoutScored {
        pass: usize,
        index: usize,
        title: String,
        /// The context's question count (an edit that could not be trained got none right).
        questions: usize,
        baseline: f64,
        edits: Vec<HeldoutEdit>,
        secs: f64,
    },
    HeldoutFinished {
        pass: usize,
        summary: HeldoutSummary,
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
    /// Inner loops sent to a cluster as one job array (a retry is an array of its own).
    /// `tasks` holds one entry per unit; SLURM's array task `i` runs the units whose `index`
    /// divided by `per_task` is `i`, one after another with the model loaded once.
    ClusterSubmitted {
        job: String,
        round: usize,
        tasks: Vec<ClusterTask>,
        #[serde(default = "one")]
        per_task: usize,
    },
    /// A task's state changed, as SLURM or its result file tells; `detail` is the node while it
    /// runs, SLURM's reason when it failed, its timings when done.
    ClusterTask {
        job: String,
        index: usize,
        status: TaskStatus,
        #[serde(default)]
        detail: String,
        /// SLURM's array task, when it runs several units (else it is `index`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        task: Option<usize>,
    },
    /// The runner cancelled what was left of an array (a quit).
    ClusterCancelled {
        job: String,
        reason: String,
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
                | Event::HeldoutStarted { .. }
                | Event::HeldoutScored { .. }
                | Event::HeldoutFinished { .. }
                | Event::RunFinished { .. }
                | Event::ModeChanged { .. }
                | Event::ClusterSubmitted { .. }
                | Event::ClusterCancelled { .. }
                | Event::Failed { .. }
        ) || matches!(self, Event::ClusterTask { status, .. } if status.is_final())
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

/// What a human (or a script) asks of a running loop. Ids may be written as labels a person
/// reads (`"r1 c1 e2"`) or in the stored 0-based form.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case", deny_unknown_fields)]
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
        #[serde(default)]
        rounds: Option<usize>,
    },
    /// Finish the current context now with what has been evaluated so far.
    SkipContext,
    /// Stop after recording what is done; the session can be resumed.
    Quit,
}

fn one() -> usize {
    1
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
    }

    #[test]
    fn commands_take_labels_or_stored_ids() {
        let c: Command = serde_json::from_str(r#"{"command":"auto","rounds":2}"#).unwrap();
        assert_eq!(c, Command::Auto { rounds: Some(2) });
        let c: Command = serde_json::from_str(r#"{"command":"auto"}"#).unwrap();
        assert_eq!(c, Command::Auto { rounds: None });
        let id = EditId {
            round: 0,
            ctx: 0,
            edit: 1,
        };
        let a: Command = serde_json::from_str(r#"{"command":"approve","id":"r1 c1 e2"}"#).unwrap();
        let b: Command =
            serde_json::from_str(r#"{"command":"approve","id":{"round":0,"ctx":0,"edit":1}}"#)
                .unwrap();
        assert_eq!(a, Command::Approve { id });
        assert_eq!(a, b);
        assert!(serde_json::from_str::<Command>(r#"{"command":"aprove"}"#).is_err());
    }

    #[test]
    fn gain_rules() {
        assert_eq!(GainRule::OverBaseline.gain(0.75, 0.5), 0.25);
        assert_eq!(GainRule::Reward.gain(0.75, 0.5), 0.75);
    }
}

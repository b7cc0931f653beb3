//! The state of a run as a fold over its events. The loop, the screen, replay and resume all
//! build it the same way: `for e in events { state.apply(&e) }`.

use super::events::{
    ContextView, Decision, Event, HeldoutEdit, HeldoutSummary, QuestionResult, RoundMetrics,
    RunInfo, RunMode, TrainProgress,
};
use super::ids::{CtxId, EditId};
use serde::{Deserialize, Serialize};

/// Where a self-edit is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum EditStatus {
    #[default]
    Sampling,
    /// Sampled, waiting for its finetune (or for a human, in approval-required mode).
    Queued,
    Training,
    Evaluating,
    Scored,
    Failed,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainState {
    pub total_steps: usize,
    pub examples: usize,
    pub tokens: usize,
    pub steps: Vec<TrainProgress>,
    pub final_loss: Option<f64>,
    pub secs: Option<f64>,
    pub error: Option<String>,
}

impl TrainState {
    pub fn last(&self) -> Option<&TrainProgress> {
        self.steps.last()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    pub repeat: usize,
    pub results: Vec<QuestionResult>,
    pub accuracy: f64,
    pub secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct EditState {
    pub index: usize,
    /// The revision of the text: 0 as sampled, one more for each human edit. Work done on an
    /// older revision is ignored.
    pub revision: u32,
    pub prompt: String,
    pub text: String,
    pub tokens: usize,
    pub sample_secs: Option<f64>,
    pub status: EditStatus,
    /// The latest human decision; an edit's earlier decisions stay in the log.
    pub decision: Option<Decision>,
    pub train: TrainState,
    pub evaluations: Vec<Evaluation>,
    pub reward: Option<f64>,
    pub gain: Option<f64>,
}

impl EditState {
    pub fn is_rejected(&self) -> bool {
        matches!(self.decision, Some(Decision::Rejected))
    }

    pub fn is_approved(&self) -> bool {
        matches!(
            self.decision,
            Some(Decision::Approved) | Some(Decision::Edited { .. })
        )
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Baseline {
    pub results: Vec<QuestionResult>,
    pub accuracy: f64,
    pub secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ContextState {
    pub id: CtxId,
    pub view: ContextView,
    pub baseline: Option<Baseline>,
    pub edits: Vec<EditState>,
    pub finished: bool,
    pub kept: Option<usize>,
    pub selection: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PolicyStatus {
    #[default]
    Pending,
    Training,
    Updated,
    Skipped,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct PolicyState {
    pub status: PolicyStatus,
    pub pairs: usize,
    pub total_steps: usize,
    pub steps: Vec<TrainProgress>,
    pub adapter: Option<String>,
    pub note: Option<String>,
    pub secs: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoundState {
    pub index: usize,
    pub planned_contexts: usize,
    pub contexts: Vec<ContextState>,
    pub policy: PolicyState,
    pub metrics: Option<RoundMetrics>,
}

/// One held-out context's result in a pass.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldoutContext {
    pub index: usize,
    pub title: String,
    pub questions: usize,
    pub baseline: f64,
    pub edits: Vec<HeldoutEdit>,
    pub secs: f64,
}

/// A held-out pass: the policy as it stood before round 1 (`after_round` none) or after a
/// round's update, on contexts it never trains on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldoutPass {
    pub pass: usize,
    pub after_round: Option<usize>,
    pub planned: usize,
    pub contexts: Vec<HeldoutContext>,
    pub summary: Option<HeldoutSummary>,
}

/// What is in flight, for the status bar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Activity {
    #[default]
    Idle,
    Baseline {
        id: CtxId,
    },
    Sampling {
        id: EditId,
    },
    Training {
        id: EditId,
    },
    Evaluating {
        id: EditId,
    },
    PolicyUpdate {
        round: usize,
    },
    Heldout {
        pass: usize,
    },
    Finished,
    Failed,
}

impl Activity {
    /// Whether model work is running (quitting would interrupt it).
    pub fn is_busy(&self) -> bool {
        !matches!(self, Activity::Idle | Activity::Finished | Activity::Failed)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct RunState {
    pub info: Option<RunInfo>,
    pub mode: RunMode,
    pub rounds: Vec<RoundState>,
    /// Held-out passes, in order.
    #[serde(default)]
    pub heldout: Vec<HeldoutPass>,
    pub activity: Activity,
    pub warnings: Vec<String>,
    /// The latest progress message (loading the model, fetching it, ...).
    pub status: Option<String>,
    pub failure: Option<String>,
    pub finished: bool,
    pub total_secs: Option<f64>,
    /// Events folded so far.
    pub events: usize,
}

impl RunState {
    pub fn from_events<'a>(events: impl IntoIterator<Item = &'a Event>) -> RunState {
        let mut s = RunState::default();
        for e in events {
            s.apply(e);
        }
        s
    }

    pub fn context(&self, id: CtxId) -> Option<&ContextState> {
        self.rounds.get(id.round)?.contexts.get(id.ctx)
    }

    fn context_mut(&mut self, id: CtxId) -> Option<&mut ContextState> {
        self.rounds.get_mut(id.round)?.contexts.get_mut(id.ctx)
    }

    pub fn edit(&self, id: EditId) -> Option<&EditState> {
        self.context(id.ctx_id())?.edits.get(id.edit)
    }

    /// The edit with this id, created (with the edits before it) if the log has not shown it yet.
    fn edit_mut(&mut self, id: EditId) -> Option<&mut EditState> {
        let ctx = self.context_mut(id.ctx_id())?;
        while ctx.edits.len() <= id.edit {
            let index = ctx.edits.len();
            ctx.edits.push(EditState {
                index,
                ..Default::default()
            });
        }
        ctx.edits.get_mut(id.edit)
    }

    /// The edit, if `rev` is its current revision: work on a superseded text is not folded.
    fn current_edit_mut(&mut self, id: EditId, rev: u32) -> Option<&mut EditState> {
        self.edit_mut(id).filter(|e| e.revision == rev)
    }

    /// The most recent context, which the screen follows by default.
    pub fn current_context(&self) -> Option<CtxId> {
        self.rounds
            .iter()
            .rev()
            .find_map(|r| r.contexts.last().map(|c| c.id))
    }

    pub fn apply(&mut self, event: &Event) {
        self.events += 1;
        match event {
            Event::RunStarted { info } => {
                self.info = Some(info.clone());
                self.finished = false;
                self.failure = None;
            }
            Event::RoundStarted { round, contexts } => {
                while self.rounds.len() <= *round {
                    let index = self.rounds.len();
                    self.rounds.push(RoundState {
                        index,
                        planned_contexts: 0,
                        contexts: Vec::new(),
                        policy: PolicyState::default(),
                        metrics: None,
                    });
                }
                self.rounds[*round].planned_contexts = *contexts;
            }
            Event::ContextStarted { id, context } => {
                if let Some(round) = self.rounds.get_mut(id.round) {
                    // A resumed run restarts an unfinished context from scratch.
                    round.contexts.truncate(id.ctx);
                    round.contexts.push(ContextState {
                        id: *id,
                        view: context.clone(),
                        baseline: None,
                        edits: Vec::new(),
                        finished: false,
                        kept: None,
                        selection: None,
                    });
                }
                self.activity = Activity::Baseline { id: *id };
            }
            Event::BaselineScored {
                id,
                results,
                accuracy,
                secs,
            } => {
                if let Some(c) = self.context_mut(*id) {
                    c.baseline = Some(Baseline {
                        results: results.clone(),
                        accuracy: *accuracy,
                        secs: *secs,
                    });
                }
                self.activity = Activity::Idle;
            }
            Event::EditSampling { id, prompt } => {
                if let Some(e) = self.edit_mut(*id) {
                    *e = EditState {
                        index: id.edit,
                        prompt: prompt.clone(),
                        ..Default::default()
                    };
                }
                self.activity = Activity::Sampling { id: *id };
            }
            Event::EditToken { id, piece } => {
                if let Some(e) = self.edit_mut(*id) {
                    e.text.push_str(piece);
                }
            }
            Event::EditSampled {
                id,
                text,
                tokens,
                secs,
            } => {
                if let Some(e) = self.edit_mut(*id) {
                    e.text = text.clone();
                    e.tokens = *tokens;
                    e.sample_secs = Some(*secs);
                    e.status = EditStatus::Queued;
                }
                self.activity = Activity::Idle;
            }
            Event::EditDecision { id, decision } => {
                if let Some(e) = self.edit_mut(*id) {
                    e.decision = Some(decision.clone());
                    if let Decision::Edited { text } = decision {
                        // The replaced text is evaluated from scratch.
                        e.revision += 1;
                        e.text = text.clone();
                        e.status = EditStatus::Queued;
                        e.train = TrainState::default();
                        e.evaluations.clear();
                        e.reward = None;
                        e.gain = None;
                    }
                }
            }
            Event::TrainStarted {
                id,
                rev,
                total_steps,
                examples,
                tokens,
            } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.status = EditStatus::Training;
                    // Earlier repeats' evaluations stay: the reward is their mean.
                    e.train = TrainState {
                        total_steps: *total_steps,
                        examples: *examples,
                        tokens: *tokens,
                        ..Default::default()
                    };
                }
                self.activity = Activity::Training { id: *id };
            }
            Event::TrainStep { id, rev, progress } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.train.steps.push(progress.clone());
                }
            }
            Event::TrainFinished {
                id,
                rev,
                final_loss,
                secs,
                ..
            } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.train.final_loss = Some(*final_loss);
                    e.train.secs = Some(*secs);
                    e.status = EditStatus::Evaluating;
                    self.activity = Activity::Evaluating { id: *id };
                }
            }
            Event::TrainFailed { id, rev, message } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.train.error = Some(message.clone());
                    e.status = EditStatus::Failed;
                }
                self.activity = Activity::Idle;
            }
            Event::EditEvaluated {
                id,
                rev,
                repeat,
                results,
                accuracy,
                secs,
            } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.evaluations.push(Evaluation {
                        repeat: *repeat,
                        results: results.clone(),
                        accuracy: *accuracy,
                        secs: *secs,
                    });
                }
            }
            Event::EditScored {
                id,
                rev,
                reward,
                gain,
            } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.reward = Some(*reward);
                    e.gain = Some(*gain);
                    e.status = EditStatus::Scored;
                }
                self.activity = Activity::Idle;
            }
            Event::ContextFinished { id, kept, reason } => {
                if let Some(c) = self.context_mut(*id) {
                    c.finished = true;
                    c.kept = *kept;
                    c.selection = Some(reason.clone());
                }
                self.activity = Activity::Idle;
            }
            Event::PolicyUpdateStarted {
                round,
                pairs,
                total_steps,
            } => {
                if let Some(r) = self.rounds.get_mut(*round) {
                    r.policy = PolicyState {
                        status: PolicyStatus::Training,
                        pairs: *pairs,
                        total_steps: *total_steps,
                        ..Default::default()
                    };
                }
                self.activity = Activity::PolicyUpdate { round: *round };
            }
            Event::PolicyStep { round, progress } => {
                if let Some(r) = self.rounds.get_mut(*round) {
                    r.policy.steps.push(progress.clone());
                }
            }
            Event::PolicyUpdated {
                round,
                adapter,
                secs,
            } => {
                if let Some(r) = self.rounds.get_mut(*round) {
                    r.policy.status = PolicyStatus::Updated;
                    r.policy.adapter = Some(adapter.clone());
                    r.policy.secs = Some(*secs);
                }
                self.activity = Activity::Idle;
            }
            Event::PolicySkipped { round, reason } => {
                if let Some(r) = self.rounds.get_mut(*round) {
                    r.policy.status = PolicyStatus::Skipped;
                    r.policy.note = Some(reason.clone());
                }
                self.activity = Activity::Idle;
            }
            Event::RoundFinished { round, metrics } => {
                if let Some(r) = self.rounds.get_mut(*round) {
                    r.metrics = Some(metrics.clone());
                }
            }
            Event::HeldoutStarted {
                pass,
                after_round,
                contexts,
            } => {
                // A resumed pass starts again from what its log holds.
                if !self.heldout.iter().any(|h| h.pass == *pass) {
                    self.heldout.push(HeldoutPass {
                        pass: *pass,
                        after_round: *after_round,
                        planned: *contexts,
                        contexts: Vec::new(),
                        summary: None,
                    });
                }
                self.activity = Activity::Heldout { pass: *pass };
            }
            Event::HeldoutScored {
                pass,
                index,
                title,
                questions,
                baseline,
                edits,
                secs,
            } => {
                if let Some(h) = self.heldout.iter_mut().find(|h| h.pass == *pass) {
                    h.contexts.retain(|c| c.index != *index);
                    h.contexts.push(HeldoutContext {
                        index: *index,
                        title: title.clone(),
                        questions: *questions,
                        baseline: *baseline,
                        edits: edits.clone(),
                        secs: *secs,
                    });
                }
            }
            Event::HeldoutFinished { pass, summary } => {
                if let Some(h) = self.heldout.iter_mut().find(|h| h.pass == *pass) {
                    h.summary = Some(summary.clone());
                }
                self.activity = Activity::Idle;
            }
            Event::RunFinished { secs } => {
                self.finished = true;
                self.total_secs = Some(*secs);
                self.activity = Activity::Finished;
            }
            Event::ModeChanged { mode } => self.mode = *mode,
            Event::Warning { message } => self.warnings.push(message.clone()),
            Event::Status { message } => self.status = Some(message.clone()),
            Event::Failed { message } => {
                self.failure = Some(message.clone());
                self.activity = Activity::Failed;
            }
        }
    }
}

//! The state of a run as a fold over its events. The loop, the screen, replay and resume all
//! build it the same way: `for e in events { state.apply(&e) }`.

use super::cluster::{ArrayState, TaskState, TaskStatus, UnitId};
use super::events::{
    BaselineKind, ContextView, Decision, Event, HeldoutEdit, HeldoutSummary, QuestionResult,
    RoundMetrics, RunInfo, RunMode, SelfCheck, SelfQuestions, TrainProgress,
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
    /// The evaluation repeat this finetune serves; with several at once (on a cluster), the
    /// latest started is the one shown.
    pub repeat: usize,
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
    /// `questions = "both"`: each evaluation repeat graded on the self-written questions too.
    #[serde(default)]
    pub self_checks: Vec<(usize, SelfCheck)>,
}

impl EditState {
    /// Mean accuracy on the self-written questions over the current revision's repeats.
    pub fn self_accuracy(&self) -> Option<f64> {
        let n = self.self_checks.len();
        (n > 0).then(|| {
            self.self_checks
                .iter()
                .map(|(_, c)| c.accuracy)
                .sum::<f64>()
                / n as f64
        })
    }
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
    #[serde(default)]
    pub kind: BaselineKind,
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
    /// `questions = "both"`: the unadapted model graded on the self-written questions.
    #[serde(default)]
    pub baseline_check: Option<SelfCheck>,
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
    /// Inner loops are out on a cluster as a job array.
    Cluster {
        job: String,
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
    /// Job arrays submitted to a cluster, oldest first.
    #[serde(default)]
    pub arrays: Vec<ArrayState>,
    /// Questions the model wrote, by passage index: kept apart from the contexts so that a
    /// context restarted on resume keeps them.
    #[serde(default)]
    pub self_questions: std::collections::BTreeMap<usize, SelfQuestions>,
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

    /// The task that carries `unit` now: the newest one not yet over.
    pub fn active_task(&self, unit: UnitId) -> Option<(&ArrayState, &TaskState)> {
        self.arrays.iter().rev().find_map(|a| {
            a.tasks
                .iter()
                .find(|t| t.unit == unit && !t.status.is_final())
                .map(|t| (a, t))
        })
    }

    fn active_task_mut(&mut self, unit: UnitId) -> Option<&mut TaskState> {
        self.arrays.iter_mut().rev().find_map(|a| {
            a.tasks
                .iter_mut()
                .find(|t| t.unit == unit && !t.status.is_final())
        })
    }

    /// Tasks that ended without a result for `unit` (each one an attempt spent).
    pub fn failed_attempts(&self, unit: UnitId) -> u32 {
        let n = self
            .arrays
            .iter()
            .flat_map(|a| &a.tasks)
            .filter(|t| t.unit == unit && t.status == TaskStatus::Failed)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Work reported for a unit that a cluster task carries: the task's progress is noted, and
    /// the run's activity stays the array's.
    fn note_task(&mut self, unit: UnitId, f: impl FnOnce(&mut TaskState)) -> bool {
        match self.active_task_mut(unit) {
            Some(t) => {
                f(t);
                true
            }
            None => false,
        }
    }

    /// After a task's end: the activity falls back to idle once no array has work out.
    fn settle_cluster_activity(&mut self) {
        if matches!(self.activity, Activity::Cluster { .. })
            && !self.arrays.iter().any(ArrayState::is_active)
        {
            self.activity = Activity::Idle;
        }
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
                        baseline_check: None,
                    });
                }
                self.activity = Activity::Baseline { id: *id };
            }
            Event::QuestionsWritten { questions, .. } => {
                self.self_questions
                    .insert(questions.index, questions.clone());
            }
            Event::SelfChecked {
                id,
                edit: None,
                check,
                ..
            } => {
                if let Some(c) = self.context_mut(*id) {
                    c.baseline_check = Some(check.clone());
                }
            }
            Event::SelfChecked {
                edit: Some(edit),
                rev,
                repeat,
                check,
                ..
            } => {
                if let Some(e) = self
                    .current_edit_mut(*edit, *rev)
                    .filter(|e| e.status != EditStatus::Failed)
                {
                    match e.self_checks.binary_search_by_key(repeat, |(r, _)| *r) {
                        Ok(i) => e.self_checks[i].1 = check.clone(),
                        Err(i) => e.self_checks.insert(i, (*repeat, check.clone())),
                    }
                }
            }
            Event::BaselineScored {
                id,
                results,
                accuracy,
                secs,
                kind,
            } => {
                if let Some(c) = self.context_mut(*id) {
                    c.baseline = Some(Baseline {
                        results: results.clone(),
                        accuracy: *accuracy,
                        secs: *secs,
                        kind: *kind,
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
                        e.self_checks.clear();
                        e.reward = None;
                        e.gain = None;
                    }
                }
            }
            Event::TrainStarted {
                id,
                rev,
                repeat,
                total_steps,
                examples,
                tokens,
            } => {
                let unit = UnitId {
                    id: *id,
                    rev: *rev,
                    repeat: *repeat,
                };
                let on_cluster = self.note_task(unit, |t| {
                    // A task that reports training runs, whether or not SLURM said so yet.
                    t.status = TaskStatus::Running;
                    t.started = true;
                    t.total_steps = *total_steps;
                    t.step = 0;
                    t.loss = None;
                });
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.status = EditStatus::Training;
                    // Earlier repeats' evaluations stay: the reward is their mean.
                    e.train = TrainState {
                        repeat: *repeat,
                        total_steps: *total_steps,
                        examples: *examples,
                        tokens: *tokens,
                        ..Default::default()
                    };
                }
                if !on_cluster {
                    self.activity = Activity::Training { id: *id };
                }
            }
            Event::TrainStep {
                id,
                rev,
                repeat,
                progress,
            } => {
                let unit = UnitId {
                    id: *id,
                    rev: *rev,
                    repeat: *repeat,
                };
                self.note_task(unit, |t| {
                    t.step = progress.step;
                    t.total_steps = progress.total_steps;
                    t.loss = Some(progress.loss);
                });
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    if e.train.repeat == *repeat {
                        e.train.steps.push(progress.clone());
                    }
                }
            }
            Event::TrainFinished {
                id,
                rev,
                repeat,
                final_loss,
                secs,
                ..
            } => {
                let unit = UnitId {
                    id: *id,
                    rev: *rev,
                    repeat: *repeat,
                };
                let on_cluster = self.note_task(unit, |_| {});
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    if e.train.repeat == *repeat {
                        e.train.final_loss = Some(*final_loss);
                        e.train.secs = Some(*secs);
                        e.status = EditStatus::Evaluating;
                        if !on_cluster {
                            self.activity = Activity::Evaluating { id: *id };
                        }
                    }
                }
            }
            Event::TrainFailed { id, rev, message } => {
                if let Some(e) = self.current_edit_mut(*id, *rev) {
                    e.train.error = Some(message.clone());
                    e.status = EditStatus::Failed;
                }
                if !matches!(self.activity, Activity::Cluster { .. }) {
                    self.activity = Activity::Idle;
                }
            }
            Event::EditEvaluated {
                id,
                rev,
                repeat,
                results,
                accuracy,
                secs,
            } => {
                if let Some(e) = self
                    .current_edit_mut(*id, *rev)
                    .filter(|e| e.status != EditStatus::Failed)
                {
                    // Kept in repeat order (a cluster returns them in any), so the reward, their
                    // mean, is summed in one order however the work was spread.
                    let evaluation = Evaluation {
                        repeat: *repeat,
                        results: results.clone(),
                        accuracy: *accuracy,
                        secs: *secs,
                    };
                    match e.evaluations.binary_search_by_key(repeat, |v| v.repeat) {
                        Ok(i) => e.evaluations[i] = evaluation,
                        Err(i) => e.evaluations.insert(i, evaluation),
                    }
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
            Event::ClusterSubmitted {
                job,
                round,
                tasks,
                per_task,
            } => {
                self.arrays.push(ArrayState {
                    job: job.clone(),
                    round: *round,
                    per_task: (*per_task).max(1),
                    tasks: tasks
                        .iter()
                        .map(|t| TaskState {
                            index: t.index,
                            unit: t.unit,
                            attempt: t.attempt,
                            status: TaskStatus::Pending,
                            detail: String::new(),
                            started: false,
                            step: 0,
                            total_steps: 0,
                            loss: None,
                        })
                        .collect(),
                    cancelled: None,
                });
                self.activity = Activity::Cluster { job: job.clone() };
            }
            Event::ClusterTask {
                job,
                index,
                status,
                detail,
                ..
            } => {
                let task = self
                    .arrays
                    .iter_mut()
                    .rev()
                    .find(|a| &a.job == job)
                    .and_then(|a| a.tasks.iter_mut().find(|t| t.index == *index));
                if let Some(t) = task {
                    t.status = *status;
                    t.detail = detail.clone();
                }
                self.settle_cluster_activity();
            }
            Event::ClusterCancelled { job, reason } => {
                if let Some(a) = self.arrays.iter_mut().rev().find(|a| &a.job == job) {
                    for t in a.tasks.iter_mut().filter(|t| !t.status.is_final()) {
                        t.status = TaskStatus::Cancelled;
                        t.detail = reason.clone();
                    }
                    a.cancelled = Some(reason.clone());
                }
                self.settle_cluster_activity();
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::cluster::ClusterTask;

    fn unit(edit: usize, repeat: usize) -> UnitId {
        UnitId {
            id: EditId {
                round: 0,
                ctx: 0,
                edit,
            },
            rev: 0,
            repeat,
        }
    }

    fn progress(step: usize, loss: f64) -> TrainProgress {
        TrainProgress {
            step,
            total_steps: 4,
            loss,
            ..Default::default()
        }
    }

    /// The fold of an array: task states, live loss from the training events, the activity
    /// held by the array while it is out, and evaluations kept in repeat order.
    #[test]
    fn an_array_folds_into_tasks_with_live_loss() {
        let ctx = CtxId { round: 0, ctx: 0 };
        let mut s = RunState::from_events(&[
            Event::RoundStarted {
                round: 0,
                contexts: 1,
            },
            Event::ContextStarted {
                id: ctx,
                context: crate::record::ContextView {
                    id: "0".into(),
                    title: "t".into(),
                    body: crate::record::ContextBody::Passage {
                        text: String::new(),
                    },
                    questions: vec![],
                },
            },
            Event::EditSampled {
                id: unit(0, 0).id,
                text: "t".into(),
                tokens: 1,
                secs: 0.0,
            },
        ]);
        let tasks = (0..2)
            .map(|r| ClusterTask {
                index: r,
                unit: unit(0, r),
                attempt: 1,
            })
            .collect();
        s.apply(&Event::ClusterSubmitted {
            job: "7".into(),
            round: 0,
            tasks,
            per_task: 1,
        });
        assert_eq!(s.activity, Activity::Cluster { job: "7".into() });
        for repeat in [1, 0] {
            s.apply(&Event::TrainStarted {
                id: unit(0, repeat).id,
                rev: 0,
                repeat,
                total_steps: 4,
                examples: 1,
                tokens: 3,
            });
        }
        s.apply(&Event::TrainStep {
            id: unit(0, 1).id,
            rev: 0,
            repeat: 1,
            progress: progress(2, 0.5),
        });
        s.apply(&Event::TrainStep {
            id: unit(0, 0).id,
            rev: 0,
            repeat: 0,
            progress: progress(1, 0.9),
        });
        let tasks = &s.arrays[0].tasks;
        assert_eq!(
            (tasks[0].status, tasks[0].step, tasks[0].loss),
            (TaskStatus::Running, 1, Some(0.9))
        );
        assert_eq!((tasks[1].step, tasks[1].loss), (2, Some(0.5)));
        // The edit shows the finetune started last; the other's steps are not mixed in.
        let e = s.edit(unit(0, 0).id).unwrap();
        assert_eq!(e.train.repeat, 0);
        assert_eq!(e.train.steps.len(), 1);
        assert_eq!(
            s.activity,
            Activity::Cluster { job: "7".into() },
            "training does not take the activity"
        );
        for repeat in [1, 0] {
            s.apply(&Event::EditEvaluated {
                id: unit(0, repeat).id,
                rev: 0,
                repeat,
                results: vec![],
                accuracy: repeat as f64,
                secs: 0.0,
            });
            s.apply(&Event::ClusterTask {
                job: "7".into(),
                index: repeat,
                status: TaskStatus::Done,
                detail: String::new(),
                task: None,
            });
        }
        let e = s.edit(unit(0, 0).id).unwrap();
        let repeats: Vec<usize> = e.evaluations.iter().map(|v| v.repeat).collect();
        assert_eq!(repeats, vec![0, 1]);
        assert_eq!(s.activity, Activity::Idle, "the array is over");
        assert!(s.active_task(unit(0, 0)).is_none());
    }

    #[test]
    fn failed_attempts_count_and_a_cancelled_array_is_over() {
        let mut s = RunState::default();
        for (job, attempt) in [("1", 1), ("2", 2)] {
            s.apply(&Event::ClusterSubmitted {
                job: job.into(),
                round: 0,
                tasks: vec![ClusterTask {
                    index: 0,
                    unit: unit(0, 0),
                    attempt,
                }],
                per_task: 1,
            });
        }
        s.apply(&Event::ClusterTask {
            job: "1".into(),
            index: 0,
            status: TaskStatus::Failed,
            detail: "TIMEOUT".into(),
            task: None,
        });
        assert_eq!(s.failed_attempts(unit(0, 0)), 1);
        let (array, task) = s.active_task(unit(0, 0)).unwrap();
        assert_eq!((array.job.as_str(), task.attempt), ("2", 2));
        s.apply(&Event::ClusterCancelled {
            job: "2".into(),
            reason: "quit".into(),
        });
        assert!(s.active_task(unit(0, 0)).is_none());
        assert_eq!(s.arrays[1].tasks[0].status, TaskStatus::Cancelled);
        assert_eq!(
            s.failed_attempts(unit(0, 0)),
            1,
            "a cancellation is no failure"
        );
        assert_eq!(s.activity, Activity::Idle);
    }
}

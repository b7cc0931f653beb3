//! What the loop needs from a SEAL domain. Knowledge incorporation and ARC each implement it;
//! the loop itself never looks inside a context.

use crate::engine::sample::SamplingParams;
use crate::engine::train::{TrainConfig, TrainError, TrainEvent, TrainOutcome};
use crate::engine::{Constraint, LoraAdapter, Model, Prompt};
use crate::record::{ContextView, GainRule, QuestionResult, SelfCheck, SelfQuestions};
use anyhow::Result;
use std::sync::atomic::AtomicBool;

/// A grader could not grade (an HTTP judge refused the key, was unreachable, or never
/// replied): nothing was scored. It is not the self-edit's fault, so it must not count as wrong
/// answers; the same phase can be run again once the grader works.
#[derive(Debug, thiserror::Error)]
#[error("grading failed: {0}")]
pub struct GradingFailed(pub String);

/// A context's graded answers.
#[derive(Clone, Debug)]
pub struct Scored {
    pub results: Vec<QuestionResult>,
    pub accuracy: f64,
    pub secs: f64,
    /// The same answers' model graded on self-written questions too, when the domain measures
    /// them beside the reward's questions.
    pub self_check: Option<SelfCheck>,
}

pub trait Domain: Send {
    /// `knowledge` or `arc`.
    fn name(&self) -> &'static str;
    /// The self-edit strategy, for display.
    fn strategy(&self) -> String;
    fn grader(&self) -> String;
    fn num_contexts(&self) -> usize;
    fn view(&self, index: usize) -> ContextView;

    /// What the policy is asked for a self-edit, or `None` when the strategy samples nothing
    /// (the context alone is trained on).
    fn self_edit_request(&self, index: usize) -> Option<Prompt>;

    /// That request in the policy's own chat markup, as the engine samples it and the log
    /// records it.
    fn self_edit_prompt(&self, model: &Model, index: usize) -> Result<Option<String>> {
        self.self_edit_request(index)
            .map(|p| model.chat.prompt(&p))
            .transpose()
    }

    /// Sampling settings for a self-edit, given the run's.
    fn self_edit_sampling(&self, run: &SamplingParams) -> SamplingParams {
        run.clone()
    }

    /// Whether sampled text is a usable self-edit; `Err` explains why not. The loop resamples a
    /// bounded number of times, then scores the edit as invalid.
    fn check_self_edit(&self, _index: usize, _text: &str) -> Result<(), String> {
        Ok(())
    }

    /// The grammar self-edits are sampled under, if the domain has one.
    fn self_edit_constraint(&self) -> Option<&dyn Constraint> {
        None
    }

    /// How many extra samples an unusable self-edit gets.
    fn max_resamples(&self) -> usize {
        0
    }

    /// How an edit's gain (what the outer loop's `min_gain` is compared with) follows from its
    /// reward and the unadapted model's score: by default, the improvement the self-edit brought.
    fn gain_rule(&self) -> GainRule {
        GainRule::OverBaseline
    }

    /// Work a context needs before it is shown, done with the passage still visible: a
    /// knowledge domain whose questions the model writes writes them here. Returns them when
    /// they were written just now (to be recorded), `None` when there was nothing to do.
    fn prepare_context(
        &self,
        _model: &Model,
        _index: usize,
        _cancel: &AtomicBool,
    ) -> Result<Option<SelfQuestions>> {
        Ok(None)
    }

    /// Questions written earlier in this session (read back from its log on resume).
    fn restore_questions(&self, _questions: &SelfQuestions) {}

    /// The unadapted model's score on a context.
    fn baseline(&self, model: &Model, index: usize, cancel: &AtomicBool) -> Result<Scored>;

    /// The inner loop on the context alone, with no self-edit: the baseline of runs that reckon
    /// gains over it (`outer.baseline = "context-only"`). `None`: this domain has none.
    fn train_on_context(
        &self,
        _model: &Model,
        _index: usize,
        _cfg: &TrainConfig,
        _cancel: &AtomicBool,
    ) -> Option<std::result::Result<TrainOutcome, TrainError>> {
        None
    }

    /// The inner loop: fits a fresh adapter that applies `self_edit` to the model.
    fn apply(
        &self,
        model: &Model,
        index: usize,
        self_edit: &str,
        cfg: &TrainConfig,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> std::result::Result<TrainOutcome, TrainError>;

    /// The adapted model's score on a context.
    fn evaluate(
        &self,
        model: &Model,
        adapter: &LoraAdapter,
        index: usize,
        cancel: &AtomicBool,
    ) -> Result<Scored>;
}

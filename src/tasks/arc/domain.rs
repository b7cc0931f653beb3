//! Few-shot ARC as a SEAL domain: contexts are tasks, a self-edit is a JSON config choosing
//! augmentations and training settings, the inner loop is test-time training on the augmented
//! demonstrations, and the reward is 1 when the adapted model then solves the held-out test
//! inputs.

use super::grammar::ConfigGrammar;
use super::prompt::self_edit_prompt;
use super::selfedit::Limits;
use super::task::ArcTask;
use super::ttt::{Ttt, GRADER};
use crate::engine::sample::generate_constrained;
use crate::engine::train::{TrainConfig, TrainError, TrainEvent, TrainOutcome};
use crate::engine::{Constraint, LoraAdapter, Model, Prompt, SamplingParams};
use crate::record::{ContextBody, ContextView, GainRule, QuestionView};
use crate::seal::domain::{Domain, Scored};
use anyhow::{anyhow, bail, Result};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// The strategy's name in sessions and on screen.
pub const STRATEGY: &str = "arc-config";

pub struct ArcDomain {
    /// Never empty (see [`ArcDomain::new`]).
    tasks: Vec<ArcTask>,
    ttt: Ttt,
    /// The config grammar self-edits are sampled under, unless sampling is free.
    grammar: Option<ConfigGrammar>,
}

/// The self-edit prompt for `task` in `model`'s chat format.
pub fn self_edit_chat_prompt(model: &Model, task: &ArcTask, limits: &Limits) -> Result<String> {
    model.chat.prompt(&self_edit_prompt(task, limits))
}

/// One sampled self-edit: the text of the last sample drawn, and the config it prepared or why
/// no sample was usable.
pub struct SampledConfig {
    pub text: String,
    pub prepared: std::result::Result<super::ttt::Prepared, String>,
    pub samples: usize,
    pub secs: f64,
}

/// Samples a self-edit for `task`, drawing again (up to `max_resamples` times) while the output
/// is not a usable config; the `attempt`-th draw uses its own stream of `params.seed`.
pub fn sample_config(
    model: &Model,
    ttt: &Ttt,
    task: &ArcTask,
    params: &SamplingParams,
    cancel: Option<&AtomicBool>,
) -> Result<SampledConfig> {
    let start = Instant::now();
    let ids = model
        .tokenizer
        .encode(&self_edit_chat_prompt(model, task, &ttt.limits)?)?;
    let mut reasons = Vec::new();
    let attempts = 1 + ttt.settings.max_resamples;
    for attempt in 0..attempts {
        let params = SamplingParams {
            seed: params
                .seed
                .wrapping_add((attempt as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            ..params.clone()
        };
        let grammar = ttt
            .settings
            .constrained
            .then(|| ConfigGrammar::new(&ttt.limits));
        let constraint = grammar.as_ref().map(|g| g as &dyn Constraint);
        let gen =
            generate_constrained(model, None, &ids, &params, constraint, cancel, &mut |_| {})?;
        match ttt.prepare(task, &gen.text) {
            Ok(prepared) => {
                return Ok(SampledConfig {
                    text: gen.text,
                    prepared: Ok(prepared),
                    samples: attempt + 1,
                    secs: start.elapsed().as_secs_f64(),
                })
            }
            Err(why) if attempt + 1 == attempts => {
                reasons.push(format!("sample {}: {why}", attempt + 1));
                return Ok(SampledConfig {
                    text: gen.text,
                    prepared: Err(reasons.join(" | ")),
                    samples: attempts,
                    secs: start.elapsed().as_secs_f64(),
                });
            }
            Err(why) => reasons.push(format!("sample {}: {why}", attempt + 1)),
        }
    }
    bail!("no sample was drawn")
}

impl ArcDomain {
    /// Fails, naming the task, when a task's self-edit prompt does not fit the model's context:
    /// better at setup than as a failed run later.
    pub fn new(model: &Model, tasks: Vec<ArcTask>, ttt: Ttt) -> Result<ArcDomain> {
        if tasks.is_empty() {
            bail!("no ARC task selected");
        }
        let context = ttt.format.context();
        for task in &tasks {
            let prompt = self_edit_chat_prompt(model, task, &ttt.limits)?;
            let len = model.tokenizer.encode(&prompt)?.len();
            if len >= context {
                bail!(
                    "task {}: its self-edit prompt has {len} tokens, more than the model's context \
                     of {context}; choose smaller tasks or a model with a longer context",
                    task.id
                );
            }
        }
        let grammar = ttt
            .settings
            .constrained
            .then(|| ConfigGrammar::new(&ttt.limits));
        Ok(ArcDomain {
            tasks,
            ttt,
            grammar,
        })
    }

    fn task(&self, index: usize) -> &ArcTask {
        &self.tasks[index % self.tasks.len()]
    }
}

impl Domain for ArcDomain {
    fn name(&self) -> &'static str {
        "arc"
    }

    fn strategy(&self) -> String {
        STRATEGY.into()
    }

    fn grader(&self) -> String {
        GRADER.into()
    }

    fn num_contexts(&self) -> usize {
        self.tasks.len()
    }

    fn view(&self, index: usize) -> ContextView {
        let task = self.task(index);
        ContextView {
            id: task.id.clone(),
            title: format!("ARC {}", task.id),
            body: ContextBody::Arc { task: task.view() },
            questions: task
                .test
                .iter()
                .enumerate()
                .map(|(i, case)| QuestionView {
                    question: format!("test {}", i + 1),
                    answers: vec![case.output.to_text()],
                })
                .collect(),
        }
    }

    fn self_edit_request(&self, index: usize) -> Option<Prompt> {
        Some(self_edit_prompt(self.task(index), &self.ttt.limits))
    }

    fn check_self_edit(&self, index: usize, text: &str) -> std::result::Result<(), String> {
        self.ttt.prepare(self.task(index), text).map(|_| ())
    }

    fn max_resamples(&self) -> usize {
        self.ttt.settings.max_resamples
    }

    fn self_edit_constraint(&self) -> Option<&dyn Constraint> {
        self.grammar.as_ref().map(|g| g as &dyn Constraint)
    }

    /// ARC's reward is pass/fail against the task's fixed answer, and ReSTEM (as in SEAL)
    /// reinforces every config that makes the model solve the task, whether or not in-context
    /// learning solved it too; so the gain a config is kept for is its reward itself.
    fn gain_rule(&self) -> GainRule {
        GainRule::Reward
    }

    fn baseline(&self, model: &Model, index: usize, cancel: &AtomicBool) -> Result<Scored> {
        self.ttt
            .evaluate(model, None, self.task(index), Some(cancel))
    }

    fn apply(
        &self,
        model: &Model,
        index: usize,
        self_edit: &str,
        cfg: &TrainConfig,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> std::result::Result<TrainOutcome, TrainError> {
        // Checked again: a human may have edited the text since it was sampled.
        let prepared = self
            .ttt
            .prepare(self.task(index), self_edit)
            .map_err(|why| anyhow!("invalid self-edit: {why}"))?;
        self.ttt
            .train(model, &prepared, cfg, Some(cancel), on_event)
    }

    fn evaluate(
        &self,
        model: &Model,
        adapter: &LoraAdapter,
        index: usize,
        cancel: &AtomicBool,
    ) -> Result<Scored> {
        self.ttt
            .evaluate(model, Some(adapter), self.task(index), Some(cancel))
    }
}

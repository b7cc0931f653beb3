//! Test-time training (TTT) on one ARC task with the engine, and its evaluation.
//!
//! A self-edit config becomes (prompt, completion) pairs from the task's demonstrations
//! ([`build_training_data`]), priced against the step budget, and trained into a fresh LoRA
//! adapter with the config's learning rate, epochs and loss. The model, adapted or not, then
//! answers every test input under several invertible views; the answers are mapped back, voted
//! on, and the two most frequent are the attempts. The reward is 1 only if every test output is
//! among its attempts.

use super::augment::{Augmentation, Geometric, Pipeline};
use super::grid::{Grid, MAX_SIDE};
use super::prompt::{parse_answer, solver_prompt};
use super::selfedit::{parse_self_edit, Budget, Limits, SelfEditConfig, Strategy};
use super::task::{ArcTask, Example};
use super::training_data::{build_training_data, TrainingData, TrainingDataOptions, TrainingPair};
use super::vote::{reward, vote, Prediction, ATTEMPTS};
use crate::engine::sample::{generate_batch, SamplingParams};
use crate::engine::tokenizer::Tokenizer;
use crate::engine::train::{self, train_lora, LossOn, TrainConfig, TrainError, TrainEvent};
use crate::engine::{ChatTemplate, LoraAdapter, Message, Model};
use crate::record::{QuestionResult, Verdict};
use crate::seal::domain::Scored;
use anyhow::{bail, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The grader's name in verdicts and on screen.
pub const GRADER: &str = "exact";

/// Prompts answered in one batch; bounds the KV cache's memory.
const ANSWER_BATCH: usize = 8;

/// The answer views: the task as given, then the symmetries of the square in an order that
/// mixes transposing and turning early, so a small view count still sees different geometry.
const VIEWS: [Option<Geometric>; 8] = [
    None,
    Some(Geometric::Transpose),
    Some(Geometric::Rotate90),
    Some(Geometric::Rotate180),
    Some(Geometric::FlipLeftRight),
    Some(Geometric::Rotate270),
    Some(Geometric::FlipUpDown),
    Some(Geometric::AntiTranspose),
];

/// Test-time-training settings of a run (the `[arc]` section of a run configuration).
pub use crate::record::config::ArcSection as TttSettings;

/// The views answers are asked under: the identity first, then `n - 1` symmetries.
pub fn answer_views(n: usize) -> Vec<Pipeline> {
    VIEWS
        .iter()
        .take(n.clamp(1, VIEWS.len()))
        .map(|v| v.map_or_else(Pipeline::identity, |g| Augmentation::Geometric(g).into()))
        .collect()
}

/// How solver prompts look to one model, in training and in answering alike: a user turn in its
/// chat format (a base model gets the bare text), measured with its tokenizer.
#[derive(Clone)]
pub struct SolverFormat {
    chat: ChatTemplate,
    tokenizer: Arc<Tokenizer>,
    context: usize,
    /// Tokens of a full 30x30 grid, the longest answer ARC allows.
    largest_answer: usize,
}

impl SolverFormat {
    pub fn new(model: &Model) -> SolverFormat {
        let full = vec!["0".repeat(MAX_SIDE); MAX_SIDE].join("\n");
        SolverFormat {
            chat: model.chat.clone(),
            tokenizer: model.tokenizer.clone(),
            context: model.transformer.config.max_position_embeddings,
            largest_answer: model.tokenizer.encode(&full).map_or(2048, |ids| ids.len()),
        }
    }

    /// The model's context length in tokens.
    pub fn context(&self) -> usize {
        self.context
    }

    /// Token ids of a solver prompt, ending where the answer grid begins.
    pub fn prompt_ids(&self, text: &str) -> Result<Vec<u32>> {
        if self.chat.is_chat() {
            self.tokenizer
                .encode(&self.chat.render(&[Message::user(text)], true)?)
        } else {
            self.tokenizer.encode_document(text)
        }
    }

    /// Token ids of an answer as trained on: the grid, then what ends the model's turn, so the
    /// adapted model learns to stop after the grid.
    pub fn completion_ids(&self, grid_text: &str) -> Result<Vec<u32>> {
        let eot = self.chat.end_of_turn();
        let mut ids = self.tokenizer.encode(&format!("{grid_text}{eot}"))?;
        if eot.is_empty() {
            ids.extend(self.tokenizer.eos_ids.first());
        }
        Ok(ids)
    }

    pub fn example(&self, pair: &TrainingPair) -> Result<train::Example> {
        Ok(train::Example {
            prompt: self.prompt_ids(&pair.prompt)?,
            completion: self.completion_ids(&pair.completion)?,
        })
    }

    /// Tokens of a prompt followed by its completion, as the trainer will see them (an
    /// untokenizable text counts as endless, so it is dropped rather than trained on).
    fn measure(&self, prompt_and_completion: &str) -> usize {
        self.prompt_ids(prompt_and_completion)
            .map(|ids| ids.len() + 1)
            .unwrap_or(usize::MAX)
    }

    fn grid_tokens(&self, grid: &Grid) -> usize {
        self.tokenizer
            .encode(&grid.to_text())
            .map(|ids| ids.len())
            .unwrap_or(0)
    }

    /// How many tokens an answer may take: twice the longest demonstration output (outputs
    /// rarely grow more than that between examples), never more than a full 30x30 grid.
    fn answer_cap(&self, demonstrations: &[Example]) -> usize {
        let longest = demonstrations
            .iter()
            .map(|e| self.grid_tokens(&e.output))
            .max()
            .unwrap_or(0);
        (2 * longest + 8).min(self.largest_answer + 2)
    }
}

/// Test-time training and evaluation for one model and one run's settings.
#[derive(Clone)]
pub struct Ttt {
    pub format: SolverFormat,
    pub settings: TttSettings,
    pub limits: Limits,
    /// Examples per optimiser step (the trainer's batch size times accumulation).
    pub batch_size: usize,
    /// Pairs longer than this many tokens are dropped (the trainer would cut their answer off).
    pub max_seq_len: usize,
    /// Fixes the colour and order permutations of the generated data.
    pub seed: u64,
}

/// A self-edit that can be trained: its config and the data it generates.
#[derive(Clone, Debug)]
pub struct Prepared {
    pub config: SelfEditConfig,
    pub data: TrainingData,
    pub steps: usize,
}

impl Ttt {
    /// `base` supplies the batch size and sequence cap; its learning rate, epochs and loss are
    /// replaced by each config's.
    pub fn new(model: &Model, settings: TttSettings, base: &TrainConfig, seed: u64) -> Ttt {
        Ttt {
            format: SolverFormat::new(model),
            settings,
            limits: Limits::default(),
            batch_size: base.batch_size * base.grad_accum,
            max_seq_len: base.max_seq_len,
            seed,
        }
    }

    pub fn budget(&self) -> Budget {
        Budget {
            max_steps: self.settings.max_steps,
            batch_size: self.batch_size,
        }
    }

    /// The training pairs `config` generates from `task`'s demonstrations.
    pub fn data(&self, task: &ArcTask, config: &SelfEditConfig) -> TrainingData {
        let options = TrainingDataOptions {
            plan: config.augmentation_plan(self.seed),
            leave_two_out: self.settings.leave_two_out,
            max_tasks: self.settings.max_examples,
            max_tokens: self.max_seq_len.min(self.format.context),
        };
        build_training_data(task, &options, |text| self.format.measure(text))
    }

    /// Builds `config`'s data and prices it: refused when there is nothing to train on or the
    /// training would exceed the step budget.
    pub fn check(&self, task: &ArcTask, config: SelfEditConfig) -> Result<Prepared, String> {
        let data = self.data(task, &config);
        if data.pairs.is_empty() {
            return Err(if task.train.len() < 2 {
                "no training data: the task has fewer than two demonstrations to hold out".into()
            } else {
                format!(
                    "no training data: all {} generated pairs are longer than {} tokens",
                    data.too_long,
                    self.max_seq_len.min(self.format.context)
                )
            });
        }
        let steps = self.budget().check(&config, data.pairs.len())?;
        Ok(Prepared {
            config,
            data,
            steps,
        })
    }

    /// Parses model output as a self-edit and checks it (see [`Ttt::check`]).
    pub fn prepare(&self, task: &ArcTask, text: &str) -> Result<Prepared, String> {
        let config = parse_self_edit(text, &self.limits).map_err(|e| e.reasons.join("; "))?;
        self.check(task, config)
    }

    /// The trainer's settings for a config: `base` with the config's learning rate, epochs and
    /// loss.
    pub fn train_config(config: &SelfEditConfig, base: &TrainConfig) -> TrainConfig {
        TrainConfig {
            learning_rate: config.training.learning_rate,
            epochs: config.training.num_train_epochs as usize,
            loss: match config.training.strategy {
                Strategy::TrainUsingAllTokens => LossOn::All,
                Strategy::TrainUsingOutputTokens => LossOn::Completion,
            },
            ..base.clone()
        }
    }

    /// Fits a fresh adapter on a prepared self-edit.
    pub fn train(
        &self,
        model: &Model,
        prepared: &Prepared,
        base: &TrainConfig,
        cancel: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(&TrainEvent),
    ) -> std::result::Result<train::TrainOutcome, TrainError> {
        let examples = prepared
            .data
            .pairs
            .iter()
            .map(|pair| self.format.example(pair))
            .collect::<Result<Vec<_>>>()?;
        let cfg = Ttt::train_config(&prepared.config, base);
        train_lora(model, &examples, &cfg, cancel, on_event)
    }

    /// Answers every test input of `task` (with `adapter`, or in context only without one) and
    /// grades the voted attempts. `accuracy` is the reward: 1 only if every test output is
    /// among its attempts.
    pub fn evaluate(
        &self,
        model: &Model,
        adapter: Option<&LoraAdapter>,
        task: &ArcTask,
        cancel: Option<&AtomicBool>,
    ) -> Result<Scored> {
        let start = Instant::now();
        let views = answer_views(self.settings.views);
        // (test case, view, prompt ids, answer cap) for every view that fits the context.
        let mut asks: Vec<(usize, Pipeline, Vec<u32>, usize)> = Vec::new();
        let mut skipped: Vec<Vec<String>> = vec![Vec::new(); task.test.len()];
        let demonstrations = ArcTask {
            id: task.id.clone(),
            train: task.train.clone(),
            test: Vec::new(),
        };
        for (case, test) in task.test.iter().enumerate() {
            for view in &views {
                let shown = match view.apply_task(&demonstrations) {
                    Ok(shown) => view.apply_grid(&test.input).map(|query| (shown, query)),
                    Err(e) => Err(e),
                };
                let (shown, query) = match shown {
                    Ok(x) => x,
                    Err(e) => {
                        skipped[case].push(format!("{view}: {e}"));
                        continue;
                    }
                };
                let ids = self
                    .format
                    .prompt_ids(&solver_prompt(&shown.train, &query))?;
                let cap = self.format.answer_cap(&shown.train);
                if ids.len() + cap > self.format.context {
                    skipped[case].push(format!(
                        "{view}: the prompt ({} tokens) and answer ({cap}) exceed the context ({})",
                        ids.len(),
                        self.format.context
                    ));
                    continue;
                }
                asks.push((case, view.clone(), ids, cap));
            }
        }

        // Similar caps share a batch, so one long answer does not make every row decode long.
        let mut order: Vec<usize> = (0..asks.len()).collect();
        order.sort_by_key(|&i| asks[i].3);
        let mut texts: Vec<String> = vec![String::new(); asks.len()];
        let mut stop = vec!["\n\n".to_string()];
        stop.extend(model.chat.stop_strings());
        for chunk in order.chunks(ANSWER_BATCH) {
            let prompts: Vec<Vec<u32>> = chunk.iter().map(|&i| asks[i].2.clone()).collect();
            let cap = chunk.iter().map(|&i| asks[i].3).max().unwrap_or(1).max(1);
            let params = SamplingParams {
                stop: stop.clone(),
                ..SamplingParams::greedy(cap)
            };
            let generations = generate_batch(model, adapter, &prompts, &params, cancel)?;
            if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                bail!("cancelled");
            }
            for (&i, g) in chunk.iter().zip(generations) {
                texts[i] = g.text;
            }
        }

        let mut attempts: Vec<Vec<Grid>> = Vec::with_capacity(task.test.len());
        let mut results = Vec::with_capacity(task.test.len());
        for (case, test) in task.test.iter().enumerate() {
            let mine: Vec<(&Pipeline, &String)> = asks
                .iter()
                .zip(&texts)
                .filter(|((c, ..), _)| *c == case)
                .map(|((_, view, ..), text)| (view, text))
                .collect();
            let mut unreadable = 0;
            let predictions: Vec<Prediction> = mine
                .iter()
                .filter_map(|(view, text)| match parse_answer(text) {
                    Ok(output) => Some(Prediction {
                        pipeline: (*view).clone(),
                        output,
                    }),
                    Err(_) => {
                        unreadable += 1;
                        None
                    }
                })
                .collect();
            let voted = vote(&predictions);
            let tries = voted.attempts();
            let hit = tries.iter().position(|t| *t == test.output);
            // The answer shown is the attempt that solved it, else the favourite; with no
            // readable answer at all, what the model wrote as the task was given.
            let answer = match (hit, tries.first()) {
                (Some(i), _) => tries[i].to_text(),
                (None, Some(first)) => first.to_text(),
                (None, None) => mine
                    .first()
                    .map(|(_, t)| t.trim().to_string())
                    .unwrap_or_default(),
            };
            let votes: Vec<String> = voted
                .candidates
                .iter()
                .take(ATTEMPTS)
                .map(|c| c.votes.to_string())
                .collect();
            let mut raw = format!(
                "{} of {} views answered readably; attempt votes [{}]",
                predictions.len(),
                views.len(),
                votes.join(", ")
            );
            if let Some(i) = hit {
                raw.push_str(&format!("; attempt {} matches", i + 1));
            }
            if unreadable > 0 {
                raw.push_str(&format!("; {unreadable} unreadable"));
            }
            for note in voted.unmappable.iter().chain(&skipped[case]) {
                raw.push_str("; ");
                raw.push_str(note);
            }
            results.push(QuestionResult {
                question: case,
                answer,
                grid: tries.get(hit.unwrap_or(0)).map(Grid::view),
                verdict: Verdict {
                    grader: GRADER.to_string(),
                    correct: hit.is_some(),
                    score: if hit.is_some() { 1.0 } else { 0.0 },
                    raw,
                },
            });
            attempts.push(tries);
        }
        let expected: Vec<Grid> = task.test.iter().map(|t| t.output.clone()).collect();
        Ok(Scored {
            accuracy: reward(&attempts, &expected),
            results,
            secs: start.elapsed().as_secs_f64(),
            self_check: None,
        })
    }
}

/// A hand-written config for the "oracle" condition: every augmentation family, loss on the
/// answer only, a LoRA learning rate and epoch count that suit small models.
pub fn oracle_config() -> SelfEditConfig {
    use super::selfedit::{DataGeneration, TrainingSettings};
    SelfEditConfig {
        data_generation: DataGeneration {
            use_basic_augmentations: true,
            use_size_augmentations: true,
            use_chain_augmentations: true,
            use_repeat_augmentations: true,
            permute_colours: false,
            shuffle_examples: false,
        },
        training: TrainingSettings {
            strategy: Strategy::TrainUsingOutputTokens,
            learning_rate: 1e-4,
            num_train_epochs: 3,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_start_with_the_identity_and_are_distinct() {
        let views = answer_views(8);
        assert_eq!(views.len(), 8);
        assert!(views[0].is_identity());
        for (i, a) in views.iter().enumerate() {
            assert!(views[i + 1..].iter().all(|b| b != a));
        }
        assert_eq!(answer_views(0).len(), 1);
        assert_eq!(answer_views(99).len(), 8);
    }

    #[test]
    fn settings_are_checked() {
        TttSettings::default().validate().unwrap();
        let bad = TttSettings {
            views: 9,
            ..TttSettings::default()
        };
        assert!(bad.validate().is_err());
        let bad = TttSettings {
            max_steps: 0,
            ..TttSettings::default()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_config_sets_learning_rate_epochs_and_loss() {
        let base = TrainConfig::default();
        let cfg = Ttt::train_config(&oracle_config(), &base);
        assert_eq!(cfg.learning_rate, 1e-4);
        assert_eq!(cfg.epochs, 3);
        assert_eq!(cfg.loss, LossOn::Completion);
        assert_eq!(cfg.lora, base.lora);
        let mut all = oracle_config();
        all.training.strategy = Strategy::TrainUsingAllTokens;
        assert_eq!(Ttt::train_config(&all, &base).loss, LossOn::All);
    }
}

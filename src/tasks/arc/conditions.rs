//! The rows of the SEAL paper's few-shot table (Table 1) on chosen ARC tasks: in-context learning
//! without training, test-time training with configs the base model writes (no RL), the same
//! with configs an RL-trained policy writes (SEAL), and test-time training with a fixed
//! hand-written config (the oracle).
//!
//! The self-edit rows count (task, config) pairs, as the paper does: their rate is the fraction
//! of sampled configs whose adapted model solves its task (an unusable config counts as a
//! failure). The other rows count tasks.

use super::domain::sample_config;
use super::selfedit::SelfEditConfig;
use super::task::ArcTask;
use super::ttt::{Prepared, Ttt};
use crate::engine::sample::SamplingParams;
use crate::engine::train::TrainConfig;
use crate::engine::Model;
use crate::record::metrics::wilson95;
use crate::record::QuestionResult;
use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    Icl,
    SelfEdit,
    Seal,
    Oracle,
}

impl Condition {
    pub const ALL: [Condition; 4] = [
        Condition::Icl,
        Condition::SelfEdit,
        Condition::Seal,
        Condition::Oracle,
    ];

    pub fn parse(name: &str) -> Option<Condition> {
        match name.trim() {
            "icl" => Some(Condition::Icl),
            "self-edit" => Some(Condition::SelfEdit),
            "seal" => Some(Condition::Seal),
            "oracle" => Some(Condition::Oracle),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Condition::Icl => "in-context learning (no training)",
            Condition::SelfEdit => "TTT + self-edit configs (no RL)",
            Condition::Seal => "SEAL: TTT + self-edit configs after RL",
            Condition::Oracle => "TTT with the oracle config",
        }
    }

    /// What one counted trial is.
    pub fn unit(self) -> &'static str {
        match self {
            Condition::SelfEdit | Condition::Seal => "task x config",
            Condition::Icl | Condition::Oracle => "task",
        }
    }
}

/// One trial: a task answered in context, or a config trained and evaluated on it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Trial {
    pub task: String,
    /// Which sampled config (0 for the one-per-task conditions).
    pub sample: usize,
    /// The raw self-edit text, for sampled configs.
    pub self_edit: Option<String>,
    /// The config trained with, when there was a usable one.
    pub config: Option<SelfEditConfig>,
    /// Why nothing was trained (an unusable self-edit, a refused or failed finetune).
    pub failure: Option<String>,
    pub solved: bool,
    pub results: Vec<QuestionResult>,
    pub examples: usize,
    pub steps: usize,
    /// Tokens trained on, over all epochs.
    pub train_tokens: usize,
    pub sample_secs: f64,
    pub train_secs: f64,
    pub answer_secs: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConditionReport {
    pub condition: Condition,
    pub label: String,
    pub unit: String,
    pub solved: usize,
    pub trials: usize,
    pub rate: f64,
    pub ci95: (f64, f64),
    pub secs: f64,
    pub runs: Vec<Trial>,
}

impl ConditionReport {
    /// Sampled configs that parsed and passed every check (the step budget included), of all
    /// sampled.
    pub fn valid_configs(&self) -> (usize, usize) {
        let sampled = self.runs.iter().filter(|t| t.self_edit.is_some());
        let valid = sampled
            .clone()
            .filter(|t| {
                !t.failure
                    .as_deref()
                    .is_some_and(|f| f.starts_with("invalid self-edit"))
            })
            .count();
        (valid, sampled.count())
    }
}

pub struct EvalPlan {
    pub conditions: Vec<Condition>,
    /// Configs sampled per task for the self-edit rows.
    pub k: usize,
    pub sampling: SamplingParams,
    /// The trainer's settings; each config replaces the learning rate, epochs and loss.
    pub train: TrainConfig,
    pub oracle: SelfEditConfig,
    /// Sampled configs are checked but not trained (the share of valid configs alone).
    pub sample_only: bool,
}

/// One finished trial as a journal keeps it, so an interrupted table can be continued.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishedTrial {
    pub condition: Condition,
    /// The policy the SEAL row's trial sampled from and adapted (as named on the command
    /// line); empty for the other rows, which do not depend on it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
    pub trial: Trial,
}

/// The trials an interrupted table already finished, and where each new one goes as it ends.
pub struct TrialLog<'a> {
    pub finished: &'a [FinishedTrial],
    /// The policy's name, as [`FinishedTrial::policy`] records it: a SEAL trial is reused only
    /// for the same policy.
    pub policy: Vec<String>,
    pub record: &'a mut dyn FnMut(&FinishedTrial) -> Result<()>,
}

impl TrialLog<'_> {
    fn policy_of(&self, condition: Condition) -> Vec<String> {
        match condition {
            Condition::Seal => self.policy.clone(),
            _ => Vec::new(),
        }
    }
}

/// Runs the planned conditions over `tasks`. `policy` is the RL-trained model the SEAL row
/// samples configs from and adapts; that row is skipped without it. A trial found in
/// `log.finished` (same condition, task and sample) is taken as it is instead of being run
/// again; every trial run here is handed to `log.record` as soon as it ends.
pub fn run_conditions(
    base: &Model,
    policy: Option<&Model>,
    ttt: &Ttt,
    tasks: &[ArcTask],
    plan: &EvalPlan,
    log: TrialLog,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ConditionReport>> {
    let mut reports = Vec::new();
    for &condition in &plan.conditions {
        if condition == Condition::Seal && policy.is_none() {
            progress("SEAL row skipped: it needs --policy");
            continue;
        }
        let mut runs = Vec::new();
        for (t, task) in tasks.iter().enumerate() {
            let samples = match condition {
                Condition::SelfEdit | Condition::Seal => plan.k,
                Condition::Icl | Condition::Oracle => 1,
            };
            for sample in 0..samples {
                let policy_name = log.policy_of(condition);
                let earlier = log.finished.iter().find(|f| {
                    f.condition == condition
                        && f.policy == policy_name
                        && f.trial.task == task.id
                        && f.trial.sample == sample
                });
                let trial = match earlier {
                    Some(f) => f.trial.clone(),
                    None => {
                        let trial = run_trial(base, policy, ttt, task, t, sample, condition, plan)?;
                        (log.record)(&FinishedTrial {
                            condition,
                            policy: policy_name,
                            trial: trial.clone(),
                        })?;
                        trial
                    }
                };
                progress(&progress_line(condition, &trial, earlier.is_some()));
                runs.push(trial);
            }
        }
        let solved = runs.iter().filter(|r| r.solved).count();
        reports.push(ConditionReport {
            condition,
            label: condition.label().to_string(),
            unit: condition.unit().to_string(),
            solved,
            trials: runs.len(),
            rate: solved as f64 / runs.len().max(1) as f64,
            ci95: wilson95(solved, runs.len()),
            // Summed over trials, so a table finished over several runs counts its work once.
            secs: runs
                .iter()
                .map(|r| r.sample_secs + r.train_secs + r.answer_secs)
                .sum(),
            runs,
        });
    }
    Ok(reports)
}

/// Runs one trial: answers in context, or samples (or takes the oracle's) config, trains and
/// answers. `t` is the task's index, which with `sample` seeds the sampling.
#[allow(clippy::too_many_arguments)]
fn run_trial(
    base: &Model,
    policy: Option<&Model>,
    ttt: &Ttt,
    task: &ArcTask,
    t: usize,
    sample: usize,
    condition: Condition,
    plan: &EvalPlan,
) -> Result<Trial> {
    match condition {
        Condition::Icl => {
            let scored = ttt.evaluate(base, None, task, None)?;
            Ok(Trial {
                solved: scored.accuracy >= 1.0,
                results: scored.results,
                answer_secs: scored.secs,
                ..Trial::new(task, 0)
            })
        }
        Condition::SelfEdit | Condition::Seal => {
            let model = match condition {
                Condition::Seal => policy.context("the SEAL row needs a policy")?,
                _ => base,
            };
            let params = SamplingParams {
                seed: plan.sampling.seed ^ ((t as u64) << 32) ^ sample as u64,
                ..plan.sampling.clone()
            };
            let sampled = sample_config(model, ttt, task, &params, None)?;
            let mut trial = match sampled.prepared {
                Ok(_) if plan.sample_only => {
                    failed(task, sample, "not trained (--sample-only)".into())
                }
                Ok(prepared) => adapted(model, ttt, task, &prepared, plan, sample)?,
                Err(why) => failed(task, sample, format!("invalid self-edit: {why}")),
            };
            trial.self_edit = Some(sampled.text);
            trial.sample_secs = sampled.secs;
            Ok(trial)
        }
        Condition::Oracle => {
            // The hand-written config is the human upper bound, so the step budget meant for
            // the policy does not refuse it; its data is capped like any.
            let no_budget = Ttt {
                settings: super::ttt::TttSettings {
                    max_steps: usize::MAX,
                    ..ttt.settings.clone()
                },
                ..ttt.clone()
            };
            match no_budget.check(task, plan.oracle) {
                Ok(prepared) => adapted(base, ttt, task, &prepared, plan, 0),
                Err(why) => Ok(failed(task, 0, why)),
            }
        }
    }
}

fn progress_line(condition: Condition, r: &Trial, recorded: bool) -> String {
    format!(
        "{}: task {} #{}: {} ({} examples, {} steps, {} tokens; sample {:.1} s, train {:.1} s, answer {:.1} s){}{}",
        condition.label(),
        r.task,
        r.sample,
        if r.solved { "solved" } else { "not solved" },
        r.examples,
        r.steps,
        r.train_tokens,
        r.sample_secs,
        r.train_secs,
        r.answer_secs,
        r.failure.as_deref().map(|f| format!(": {f}")).unwrap_or_default(),
        if recorded { " [recorded earlier]" } else { "" }
    )
}

impl Trial {
    fn new(task: &ArcTask, sample: usize) -> Trial {
        Trial::blank(&task.id, sample)
    }

    /// A trial of `task` with nothing done yet.
    fn blank(task: &str, sample: usize) -> Trial {
        Trial {
            task: task.to_string(),
            sample,
            self_edit: None,
            config: None,
            failure: None,
            solved: false,
            results: Vec::new(),
            examples: 0,
            steps: 0,
            train_tokens: 0,
            sample_secs: 0.0,
            train_secs: 0.0,
            answer_secs: 0.0,
        }
    }
}

fn failed(task: &ArcTask, sample: usize, why: String) -> Trial {
    Trial {
        failure: Some(why),
        ..Trial::new(task, sample)
    }
}

fn adapted(
    model: &Model,
    ttt: &Ttt,
    task: &ArcTask,
    prepared: &Prepared,
    plan: &EvalPlan,
    sample: usize,
) -> Result<Trial> {
    let train = TrainConfig {
        seed: plan.train.seed.wrapping_add(sample as u64),
        ..plan.train.clone()
    };
    let mut trial = Trial {
        config: Some(prepared.config),
        examples: prepared.data.pairs.len(),
        steps: prepared.steps,
        ..Trial::new(task, sample)
    };
    let outcome = match ttt.train(model, prepared, &train, None, &mut |_| {}) {
        Ok(o) => o,
        // A failed finetune (a diverging loss, say) scores 0, as it does in a run.
        Err(e) => {
            trial.failure = Some(format!("test-time training failed: {e}"));
            return Ok(trial);
        }
    };
    let scored = ttt.evaluate(model, Some(&outcome.adapter), task, None)?;
    trial.solved = scored.accuracy >= 1.0;
    trial.results = scored.results;
    trial.train_secs = outcome.secs;
    trial.train_tokens = outcome.tokens;
    trial.answer_secs = scored.secs;
    Ok(trial)
}

/// The printed table: one row per condition.
pub fn format_table(reports: &[ConditionReport]) -> String {
    let mut out = String::new();
    out.push_str(
        "| method | success | 95% interval | solved | counted | valid configs | seconds |\n",
    );
    out.push_str("|---|---:|---:|---:|---|---:|---:|\n");
    for r in reports {
        let valid = match r.condition {
            Condition::SelfEdit | Condition::Seal => {
                let (n, total) = r.valid_configs();
                format!("{n}/{total}")
            }
            Condition::Icl | Condition::Oracle => "–".to_string(),
        };
        out.push_str(&format!(
            "| {} | {:.1}% | {:.1}-{:.1}% | {}/{} | {} | {} | {:.1} |\n",
            r.label,
            r.rate * 100.0,
            r.ci95.0 * 100.0,
            r.ci95.1 * 100.0,
            r.solved,
            r.trials,
            r.unit,
            valid,
            r.secs
        ));
    }
    out
}

/// Which tasks each row solved: one line per task (in the order first met), one column per
/// row; a task-level row shows `solved`/`no`, a config-level row how many of its configs did.
pub fn format_tasks(reports: &[ConditionReport]) -> String {
    let mut tasks: Vec<&str> = Vec::new();
    for t in reports.iter().flat_map(|r| &r.runs) {
        if !tasks.contains(&t.task.as_str()) {
            tasks.push(&t.task);
        }
    }
    let mut out = String::from("| task |");
    for r in reports {
        out.push_str(&format!(" {} |", r.label));
    }
    out.push_str("\n|---|");
    out.push_str(&"---|".repeat(reports.len()));
    out.push('\n');
    for task in tasks {
        out.push_str(&format!("| {task} |"));
        for r in reports {
            let runs: Vec<&Trial> = r.runs.iter().filter(|t| t.task == task).collect();
            let solved = runs.iter().filter(|t| t.solved).count();
            let cell = match (r.condition, runs.len()) {
                (_, 0) => "–".to_string(),
                (Condition::Icl | Condition::Oracle, _) => {
                    if solved > 0 { "solved" } else { "no" }.to_string()
                }
                (Condition::SelfEdit | Condition::Seal, n) => format!("{solved}/{n} configs"),
            };
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_names_round_trip() {
        for c in Condition::ALL {
            let name = serde_json::to_value(c).unwrap();
            assert_eq!(Condition::parse(name.as_str().unwrap()), Some(c));
        }
        assert_eq!(Condition::parse("baseline"), None);
    }

    #[test]
    fn the_task_table_marks_each_rows_solved_tasks() {
        let trial = |task: &str, sample: usize, solved: bool| Trial {
            solved,
            ..Trial::blank(task, sample)
        };
        let row = |condition: Condition, runs: Vec<Trial>| ConditionReport {
            condition,
            label: condition.label().into(),
            unit: condition.unit().into(),
            solved: runs.iter().filter(|t| t.solved).count(),
            trials: runs.len(),
            rate: 0.0,
            ci95: (0.0, 0.0),
            secs: 0.0,
            runs,
        };
        let reports = [
            row(
                Condition::Icl,
                vec![trial("a", 0, false), trial("b", 0, true)],
            ),
            row(
                Condition::SelfEdit,
                vec![
                    trial("a", 0, true),
                    trial("a", 1, false),
                    trial("b", 0, false),
                ],
            ),
            row(Condition::Oracle, vec![trial("a", 0, true)]),
        ];
        let table = format_tasks(&reports);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(
            lines[2].starts_with("| a | no | 1/2 configs | solved |"),
            "{table}"
        );
        assert!(
            lines[3].starts_with("| b | solved | 0/1 configs | – |"),
            "{table}"
        );
    }
}

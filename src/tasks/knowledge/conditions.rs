//! The knowledge-incorporation baselines of the SEAL paper's table: the unadapted model, a
//! finetune on the passage alone, on the passage plus the model's own self-edits, and on the
//! passage plus synthetic data a user brings (to reproduce the "GPT-4.1 data" row).

use super::inner::{sample_self_edit, train_on_texts, KnowledgeEval};
use super::passage::Passage;
use super::templates::PromptTemplate;
use crate::engine::sample::SamplingParams;
use crate::engine::train::TrainConfig;
use crate::engine::Model;
use crate::record::metrics::wilson95;
use crate::record::metrics::{mean, spearman, spearman_ci95};
use crate::record::{QuestionResult, SelfCheck};
use crate::seal::domain::Scored;
use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Condition {
    Base,
    Passage,
    PassageSelfEdit,
    PassageSynthetic,
    /// The policy after RL writes the self-edit and is trained on it (the paper's SEAL row).
    Seal,
}

impl Condition {
    pub fn label(self) -> &'static str {
        match self {
            Condition::Base => "base model (no adaptation)",
            Condition::Passage => "train on passage",
            Condition::PassageSelfEdit => "train on passage + self-edit",
            Condition::PassageSynthetic => "train on passage + synthetic data",
            Condition::Seal => "SEAL: passage + self-edit of the RL policy",
        }
    }

    pub fn parse(s: &str) -> Option<Condition> {
        match s.trim() {
            "base" => Some(Condition::Base),
            "passage" => Some(Condition::Passage),
            "passage-self-edit" | "self-edit" => Some(Condition::PassageSelfEdit),
            "passage-synthetic" | "synthetic" => Some(Condition::PassageSynthetic),
            "seal" => Some(Condition::Seal),
            _ => None,
        }
    }
}

/// One adapted (or unadapted) run over a passage's questions.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunResult {
    pub self_edit: Option<String>,
    pub sample: usize,
    pub repeat: usize,
    pub accuracy: f64,
    /// Accuracy minus the unadapted model's on the same passage.
    pub gain: f64,
    pub results: Vec<QuestionResult>,
    pub sample_secs: f64,
    pub train_secs: f64,
    pub answer_secs: f64,
    pub train_tokens: usize,
    /// `--questions both`: the same model graded on the questions it wrote about the passage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub self_check: Option<SelfCheck>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PassageResult {
    pub index: usize,
    pub title: String,
    pub runs: Vec<RunResult>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ConditionReport {
    pub condition: Condition,
    /// The self-edit template of a row that samples self-edits.
    #[serde(default)]
    pub template: Option<String>,
    pub label: String,
    pub correct: usize,
    pub graded: usize,
    pub accuracy: f64,
    pub ci95: (f64, f64),
    pub questions: usize,
    pub secs: f64,
    pub passages: Vec<PassageResult>,
}

/// Synthetic training texts per passage, from a JSON or JSONL file whose rows are
/// `{"passage": <index in the data file>, "texts": [...]}` (or `"text": "..."`), or
/// `{"context": "<the passage text>", ...}` to match by content.
pub struct Synthetic {
    by_index: HashMap<usize, Vec<String>>,
    by_context: HashMap<String, Vec<String>>,
}

impl Synthetic {
    pub fn load(path: &Path) -> Result<Synthetic> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let rows: Vec<serde_json::Value> = match serde_json::from_str::<serde_json::Value>(&text) {
            Ok(serde_json::Value::Array(rows)) => rows,
            Ok(other) => vec![other],
            Err(_) => text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
                .map(|(i, l)| {
                    serde_json::from_str(l).with_context(|| {
                        format!("{}: line {}: malformed JSON", path.display(), i + 1)
                    })
                })
                .collect::<Result<_>>()?,
        };
        let mut s = Synthetic {
            by_index: HashMap::new(),
            by_context: HashMap::new(),
        };
        for (i, row) in rows.iter().enumerate() {
            let at = || format!("{}: row {}", path.display(), i + 1);
            let mut texts: Vec<String> = Vec::new();
            if let Some(t) = row.get("text").and_then(|t| t.as_str()) {
                texts.push(t.to_string());
            }
            if let Some(list) = row.get("texts") {
                let list = list
                    .as_array()
                    .with_context(|| format!("{}: `texts` must be a list of strings", at()))?;
                for t in list {
                    texts.push(
                        t.as_str()
                            .with_context(|| format!("{}: `texts` holds a non-string", at()))?
                            .to_string(),
                    );
                }
            }
            if texts.is_empty() {
                bail!("{}: no `text` or `texts`", at());
            }
            if let Some(idx) = row.get("passage").and_then(|p| p.as_u64()) {
                s.by_index.entry(idx as usize).or_default().extend(texts);
            } else if let Some(ctx) = row.get("context").and_then(|c| c.as_str()) {
                s.by_context
                    .entry(ctx.trim().to_string())
                    .or_default()
                    .extend(texts);
            } else {
                bail!(
                    "{}: needs `passage` (an index) or `context` (the passage text)",
                    at()
                );
            }
        }
        Ok(s)
    }

    /// Synthetic data written on the fly by a served model (the paper's "GPT-4.1 synthetic
    /// data" row, with any model behind an OpenAI-compatible API): each passage's self-edit
    /// prompt is sent to the server, and its reply split into training sequences as the
    /// template splits a self-edit. `on_piece` sees the reply as it streams.
    pub fn from_server(
        client: &crate::openai::Client,
        template: &PromptTemplate,
        passages: &[(usize, Passage)],
        sampling: &SamplingParams,
        progress: &mut dyn FnMut(&str),
        on_piece: &mut dyn FnMut(&str),
    ) -> Result<Synthetic> {
        use crate::openai::{Ask, Message, Sampling};
        // The passage goes into the condition's training data once, by the condition itself.
        let split = PromptTemplate {
            include_passage: false,
            ..template.clone()
        };
        let mut by_index = HashMap::new();
        for (i, (index, passage)) in passages.iter().enumerate() {
            let prompt = template.render(passage).ok_or_else(|| {
                anyhow!(
                    "template {} samples nothing; choose one that asks for text (such as \
                     implications)",
                    template.name
                )
            })?;
            let mut messages = Vec::new();
            if let Some(system) = prompt.system {
                messages.push(Message {
                    role: "system",
                    content: system,
                });
            }
            messages.push(Message {
                role: "user",
                content: prompt.user,
            });
            let sampling = Sampling {
                temperature: sampling.temperature,
                top_p: sampling.top_p,
                max_tokens: sampling.max_tokens,
                seed: Some(sampling.seed.wrapping_add(i as u64)),
            };
            let start = Instant::now();
            let reply = client
                .stream(&Ask::Chat(&messages), &sampling, None, on_piece)
                .with_context(|| format!("synthetic data for passage {index}"))?;
            let texts = split.training_sequences(passage, &reply.text);
            progress(&format!(
                "synthetic: passage {index} ({}): {} tokens, {} training sequences, {:.1} s",
                passage.title,
                reply.tokens,
                texts.len(),
                start.elapsed().as_secs_f64()
            ));
            by_index.insert(*index, texts);
        }
        Ok(Synthetic {
            by_index,
            by_context: HashMap::new(),
        })
    }

    /// Every passage's synthetic texts, by data-set index (to write beside the results).
    pub fn by_index(&self) -> &HashMap<usize, Vec<String>> {
        &self.by_index
    }

    pub fn texts_for(&self, index: usize, passage: &Passage) -> Option<&Vec<String>> {
        self.by_index
            .get(&index)
            .or_else(|| self.by_context.get(passage.context.trim()))
    }
}

pub struct EvalPlan<'a> {
    pub conditions: Vec<Condition>,
    /// Self-edit strategies; the self-edit and SEAL rows are run once per template (the
    /// paper's prompt comparison), the others with the first.
    pub templates: Vec<&'a PromptTemplate>,
    pub k: usize,
    pub repeats: usize,
    pub sampling: SamplingParams,
    pub train: TrainConfig,
    pub synthetic: Option<&'a Synthetic>,
    pub seed: u64,
    /// The policy after RL (the base merged with a session's policy updates), for the SEAL row:
    /// it writes the self-edits and is the model they are trained into.
    pub policy: Option<&'a Model>,
    /// `--questions both`: each passage (by index) with the questions the model wrote, graded
    /// beside the gold ones in the table's rows.
    pub also: Option<&'a HashMap<usize, Passage>>,
}

impl EvalPlan<'_> {
    fn also(&self, idx: usize) -> Option<&Passage> {
        self.also.and_then(|m| m.get(&idx))
    }

    fn first_template(&self) -> &PromptTemplate {
        self.templates[0]
    }

    /// The passage alone, as the "train on passage" row trains on it.
    fn passage_only(&self) -> PromptTemplate {
        self.first_template().passage_only()
    }

    /// The model a row samples from and trains: the SEAL row the policy, every other the base.
    fn learner<'m>(&'m self, condition: Condition, model: &'m Model) -> &'m Model {
        match condition {
            Condition::Seal => self.policy.unwrap_or(model),
            _ => model,
        }
    }

    /// A plan whose rows can all be run: the SEAL row has a policy.
    fn check(&self) -> Result<()> {
        if self.conditions.contains(&Condition::Seal) && self.policy.is_none() {
            bail!("the SEAL row needs a policy (--policy SESSION/policy/round-N)");
        }
        Ok(())
    }

    fn sampling_for(&self, idx: usize, sample: usize) -> SamplingParams {
        SamplingParams {
            seed: self.seed ^ ((idx as u64) << 20) ^ sample as u64,
            ..self.sampling.clone()
        }
    }
}

/// Samples a self-edit for `passage` from `model` and returns it with the texts a trial trains
/// on: the passage (the rows' names promise it, whatever the template says) and the self-edit's
/// sequences.
fn self_edit_texts(
    model: &Model,
    template: &PromptTemplate,
    passage_only: &PromptTemplate,
    passage: &Passage,
    params: &SamplingParams,
) -> Result<(String, Vec<String>, f64)> {
    let t0 = Instant::now();
    let text = match sample_self_edit(model, template, passage, params, None, &mut |_| {})? {
        Some((_, gen)) => gen.text,
        None => String::new(),
    };
    let secs = t0.elapsed().as_secs_f64();
    let mut texts = passage_only.training_sequences(passage, "");
    for t in template.training_sequences(passage, &text) {
        if !texts.contains(&t) {
            texts.push(t);
        }
    }
    Ok((text, texts, secs))
}

/// The rows of the table: each condition with the template it runs (several templates only
/// multiply the rows that sample self-edits).
fn rows<'p>(plan: &'p EvalPlan<'p>) -> Vec<(Condition, &'p PromptTemplate)> {
    let mut out = Vec::new();
    for &c in &plan.conditions {
        match c {
            Condition::PassageSelfEdit | Condition::Seal => {
                out.extend(plan.templates.iter().map(|t| (c, *t)))
            }
            _ => out.push((c, plan.first_template())),
        }
    }
    out
}

fn row_label(condition: Condition, template: &PromptTemplate, several: bool) -> String {
    match condition {
        Condition::PassageSelfEdit | Condition::Seal if several => {
            format!("{} ({})", condition.label(), template.name)
        }
        _ => condition.label().to_string(),
    }
}

fn report(
    condition: Condition,
    template: Option<String>,
    label: String,
    per_passage: Vec<PassageResult>,
    questions: usize,
    secs: f64,
) -> ConditionReport {
    let runs = per_passage.iter().flat_map(|p| &p.runs);
    let graded: usize = runs.clone().map(|r| r.results.len()).sum();
    let correct: usize = runs
        .map(|r| r.results.iter().filter(|q| q.verdict.correct).count())
        .sum();
    ConditionReport {
        condition,
        template,
        label,
        correct,
        graded,
        accuracy: correct as f64 / graded.max(1) as f64,
        ci95: wilson95(correct, graded),
        questions,
        secs,
        passages: per_passage,
    }
}

/// One finished piece of the table as a journal keeps it, so an interrupted table can be
/// continued: the unadapted model's answers on a passage, or one row's trial on a passage.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "piece", rename_all = "snake_case")]
pub enum FinishedPiece {
    Base {
        passage: usize,
        accuracy: f64,
        secs: f64,
        results: Vec<QuestionResult>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        self_check: Option<SelfCheck>,
    },
    /// The passage, one self-edit or the synthetic data, trained and answered `repeats` times.
    Trial { key: TrialKey, runs: Vec<RunResult> },
}

/// What makes a trial the same trial in a later run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialKey {
    pub condition: Condition,
    pub passage: usize,
    pub sample: usize,
    /// What the trial's texts came from, hashed: the template's file for the passage and
    /// self-edit rows, the synthetic data for the synthetic row.
    pub source: String,
    /// The SEAL row's policy as named on the command line; empty for the other rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy: Vec<String>,
}

/// The pieces an interrupted table already finished, and where each new one goes as it ends.
pub struct PieceLog<'a> {
    pub finished: &'a [FinishedPiece],
    /// The policy's name, as [`TrialKey::policy`] records it.
    pub policy: Vec<String>,
    pub record: &'a mut dyn FnMut(&FinishedPiece) -> Result<()>,
}

impl PieceLog<'_> {
    fn base(&self, passage: usize) -> Option<Scored> {
        self.finished.iter().find_map(|f| match f {
            FinishedPiece::Base {
                passage: p,
                accuracy,
                secs,
                results,
                self_check,
            } if *p == passage => Some(Scored {
                results: results.clone(),
                accuracy: *accuracy,
                secs: *secs,
                self_check: self_check.clone(),
            }),
            _ => None,
        })
    }

    fn trial(&self, key: &TrialKey) -> Option<Vec<RunResult>> {
        self.finished.iter().find_map(|f| match f {
            FinishedPiece::Trial { key: k, runs } if k == key => Some(runs.clone()),
            _ => None,
        })
    }

    fn key(&self, condition: Condition, passage: usize, sample: usize, source: String) -> TrialKey {
        TrialKey {
            condition,
            passage,
            sample,
            source,
            policy: match condition {
                Condition::Seal => self.policy.clone(),
                _ => Vec::new(),
            },
        }
    }

    /// The finished runs of `key`, or those `run` makes, recorded before they are returned.
    fn trial_or(
        &mut self,
        key: TrialKey,
        run: impl FnOnce() -> Result<Vec<RunResult>>,
    ) -> Result<(Vec<RunResult>, bool)> {
        if let Some(runs) = self.trial(&key) {
            return Ok((runs, true));
        }
        let runs = run()?;
        (self.record)(&FinishedPiece::Trial {
            key,
            runs: runs.clone(),
        })?;
        Ok((runs, false))
    }
}

/// A short hash of some text, to tell in a later run whether a trial's inputs are the same.
fn digest<'t>(texts: impl IntoIterator<Item = &'t str>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for t in texts {
        h.update((t.len() as u64).to_le_bytes());
        h.update(t.as_bytes());
    }
    h.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The unadapted model's score on every passage, which every gain is measured against.
fn base_scores(
    model: &Model,
    eval: &KnowledgeEval<'_>,
    passages: &[(usize, Passage)],
    plan: &EvalPlan<'_>,
    mut log: Option<&mut PieceLog>,
    progress: &mut dyn FnMut(&str),
) -> Result<(HashMap<usize, Scored>, f64)> {
    let mut scores = HashMap::new();
    for (i, p) in passages {
        let earlier = log.as_ref().and_then(|l| l.base(*i));
        let recorded = earlier.is_some();
        let s = match earlier {
            Some(s) => s,
            None => {
                let s = eval.score_both(model, None, p, plan.also(*i), None)?;
                if let Some(log) = log.as_mut() {
                    (log.record)(&FinishedPiece::Base {
                        passage: *i,
                        accuracy: s.accuracy,
                        secs: s.secs,
                        results: s.results.clone(),
                        self_check: s.self_check.clone(),
                    })?;
                }
                s
            }
        };
        progress(&format!(
            "base: passage {} ({}): {:.1}% of {} questions, {:.1} s{}",
            i + 1,
            p.title,
            s.accuracy * 100.0,
            p.questions.len(),
            s.secs,
            recorded_mark(recorded)
        ));
        scores.insert(*i, s);
    }
    // Summed over passages, so a table finished over several runs counts its work once.
    let secs = scores.values().map(|s| s.secs).sum();
    Ok((scores, secs))
}

fn recorded_mark(recorded: bool) -> &'static str {
    if recorded {
        " [recorded earlier]"
    } else {
        ""
    }
}

fn base_run(base: &Scored) -> RunResult {
    RunResult {
        self_edit: None,
        sample: 0,
        repeat: 0,
        accuracy: base.accuracy,
        gain: 0.0,
        results: base.results.clone(),
        sample_secs: 0.0,
        train_secs: 0.0,
        answer_secs: base.secs,
        train_tokens: 0,
        self_check: base.self_check.clone(),
    }
}

/// Runs every planned row over `passages` (each paired with its index in the data file). A
/// piece found in `log.finished` is taken as it is instead of being run again; every piece run
/// here is handed to `log.record` as soon as it ends.
pub fn run_conditions(
    model: &Model,
    eval: &KnowledgeEval<'_>,
    passages: &[(usize, Passage)],
    plan: &EvalPlan<'_>,
    mut log: PieceLog,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ConditionReport>> {
    plan.check()?;
    let (base_scores, base_secs) =
        base_scores(model, eval, passages, plan, Some(&mut log), progress)?;
    let passage_only = plan.passage_only();
    let several = plan.templates.len() > 1;
    let mut reports = Vec::new();
    for (condition, template) in rows(plan) {
        let label = row_label(condition, template, several);
        let learner = plan.learner(condition, model);
        let source = digest([template.source.as_str()]);
        let mut per_passage = Vec::new();
        for (idx, passage) in passages {
            let base = &base_scores[idx];
            // Each trial's runs, and whether they were recorded by an earlier run.
            let mut trials: Vec<(Vec<RunResult>, bool)> = Vec::new();
            match condition {
                Condition::Base => trials.push((vec![base_run(base)], false)),
                Condition::PassageSelfEdit | Condition::Seal => {
                    for sample in 0..plan.k {
                        let key = log.key(condition, *idx, sample, source.clone());
                        trials.push(log.trial_or(key, || {
                            let (text, texts, sample_secs) = self_edit_texts(
                                learner,
                                template,
                                &passage_only,
                                passage,
                                &plan.sampling_for(*idx, sample),
                            )?;
                            run_trial(
                                learner,
                                eval,
                                (*idx, passage),
                                base,
                                plan,
                                &Trial {
                                    texts,
                                    self_edit: Some(&text),
                                    sample,
                                    sample_secs,
                                },
                            )
                        })?);
                    }
                }
                Condition::Passage | Condition::PassageSynthetic => {
                    let mut texts = passage_only.training_sequences(passage, "");
                    let mut texts_source = source.clone();
                    if condition == Condition::PassageSynthetic {
                        let synthetic = plan
                            .synthetic
                            .ok_or_else(|| anyhow!("the synthetic row needs --synthetic FILE"))?;
                        let Some(extra) = synthetic.texts_for(*idx, passage) else {
                            progress(&format!(
                                "synthetic: no data for passage {}; skipped",
                                idx + 1
                            ));
                            continue;
                        };
                        texts.extend(extra.iter().cloned());
                        texts_source =
                            digest(texts.iter().map(String::as_str).chain([source.as_str()]));
                    }
                    let key = log.key(condition, *idx, 0, texts_source);
                    trials.push(log.trial_or(key, || {
                        run_trial(
                            learner,
                            eval,
                            (*idx, passage),
                            base,
                            plan,
                            &Trial::plain(texts),
                        )
                    })?);
                }
            }
            let mut runs = Vec::new();
            for (trial, recorded) in trials {
                for r in trial.iter().filter(|_| condition != Condition::Base) {
                    progress(&format!(
                        "{label}: passage {} sample {} repeat {}: {:.1}% (gain {:+.1}), sample {:.1} s + train {:.1} s ({} tokens) + answer {:.1} s{}",
                        idx + 1,
                        r.sample + 1,
                        r.repeat + 1,
                        r.accuracy * 100.0,
                        r.gain * 100.0,
                        r.sample_secs,
                        r.train_secs,
                        r.train_tokens,
                        r.answer_secs,
                        recorded_mark(recorded)
                    ));
                }
                runs.extend(trial);
            }
            per_passage.push(PassageResult {
                index: *idx,
                title: passage.title.clone(),
                runs,
            });
        }
        let questions = per_passage
            .iter()
            .filter(|p| !p.runs.is_empty())
            .filter_map(|p| passages.iter().find(|(i, _)| *i == p.index))
            .map(|(_, x)| x.questions.len())
            .sum();
        // Summed over trials, so a table finished over several runs counts its work once.
        let secs = match condition {
            Condition::Base => base_secs,
            _ => per_passage
                .iter()
                .flat_map(|p| &p.runs)
                .map(|r| r.sample_secs + r.train_secs + r.answer_secs)
                .sum(),
        };
        let uses_template = matches!(condition, Condition::PassageSelfEdit | Condition::Seal);
        reports.push(report(
            condition,
            uses_template.then(|| template.name.clone()),
            label,
            per_passage,
            questions,
            secs,
        ));
    }
    Ok(reports)
}

/// Continued pretraining (the paper's multi-passage setting): every row fits ONE adapter on the
/// pooled training texts of all passages (one self-edit each for the self-edit rows) and grades
/// every passage's questions with it.
pub fn run_cpt(
    model: &Model,
    eval: &KnowledgeEval<'_>,
    passages: &[(usize, Passage)],
    plan: &EvalPlan<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<ConditionReport>> {
    plan.check()?;
    let (base_scores, base_secs) = base_scores(model, eval, passages, plan, None, progress)?;
    let passage_only = plan.passage_only();
    let several = plan.templates.len() > 1;
    let questions: usize = passages.iter().map(|(_, p)| p.questions.len()).sum();
    let mut reports = Vec::new();
    for (condition, template) in rows(plan) {
        let start = Instant::now();
        let label = format!("CPT: {}", row_label(condition, template, several));
        let learner = plan.learner(condition, model);
        if condition == Condition::Base {
            let per_passage = passages
                .iter()
                .map(|(i, p)| PassageResult {
                    index: *i,
                    title: p.title.clone(),
                    runs: vec![base_run(&base_scores[i])],
                })
                .collect();
            reports.push(report(
                condition,
                None,
                label,
                per_passage,
                questions,
                base_secs,
            ));
            continue;
        }
        let mut pooled = Vec::new();
        let mut edits: HashMap<usize, String> = HashMap::new();
        for (idx, passage) in passages {
            match condition {
                Condition::Passage => pooled.extend(passage_only.training_sequences(passage, "")),
                Condition::PassageSelfEdit | Condition::Seal => {
                    let (text, texts, _) = self_edit_texts(
                        learner,
                        template,
                        &passage_only,
                        passage,
                        &plan.sampling_for(*idx, 0),
                    )?;
                    pooled.extend(texts);
                    edits.insert(*idx, text);
                }
                Condition::PassageSynthetic => {
                    let synthetic = plan
                        .synthetic
                        .ok_or_else(|| anyhow!("the synthetic row needs --synthetic FILE"))?;
                    pooled.extend(passage_only.training_sequences(passage, ""));
                    if let Some(extra) = synthetic.texts_for(*idx, passage) {
                        pooled.extend(extra.iter().cloned());
                    }
                }
                Condition::Base => {}
            }
        }
        let mut per_passage: Vec<PassageResult> = passages
            .iter()
            .map(|(i, p)| PassageResult {
                index: *i,
                title: p.title.clone(),
                runs: Vec::new(),
            })
            .collect();
        for repeat in 0..plan.repeats {
            let cfg = TrainConfig {
                seed: plan.train.seed.wrapping_add(repeat as u64),
                ..plan.train.clone()
            };
            let outcome = train_on_texts(learner, &pooled, &cfg, None, &mut |_| {})
                .map_err(|e| anyhow!("the pooled finetune failed: {e}"))?;
            progress(&format!(
                "{label}: one adapter on {} texts of {} passages ({} tokens), {:.1} s",
                pooled.len(),
                passages.len(),
                outcome.tokens,
                outcome.secs
            ));
            for (slot, (idx, passage)) in per_passage.iter_mut().zip(passages) {
                let scored = eval.score(learner, Some(&outcome.adapter), passage, None)?;
                slot.runs.push(RunResult {
                    self_edit: edits.get(idx).cloned(),
                    sample: 0,
                    repeat,
                    accuracy: scored.accuracy,
                    gain: scored.accuracy - base_scores[idx].accuracy,
                    results: scored.results,
                    sample_secs: 0.0,
                    train_secs: outcome.secs,
                    answer_secs: scored.secs,
                    train_tokens: outcome.tokens,
                    self_check: None,
                });
            }
        }
        let uses_template = matches!(condition, Condition::PassageSelfEdit | Condition::Seal);
        reports.push(report(
            condition,
            uses_template.then(|| template.name.clone()),
            label,
            per_passage,
            questions,
            start.elapsed().as_secs_f64(),
        ));
    }
    Ok(reports)
}

/// Continual learning (the paper's forgetting experiment): passages are learnt one after another,
/// each from a self-edit the current model writes, with the adapter merged before the next;
/// after each update every passage learnt so far is graded again.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContinualReport {
    pub titles: Vec<String>,
    /// The unadapted model's accuracy on each passage.
    pub base: Vec<f64>,
    /// `matrix[i][j]`, `j <= i`: accuracy on passage `j` after the update for passage `i`.
    pub matrix: Vec<Vec<f64>>,
    pub template: String,
    pub secs: f64,
}

pub fn run_continual(
    model: &Model,
    eval: &KnowledgeEval<'_>,
    passages: &[(usize, Passage)],
    plan: &EvalPlan<'_>,
    progress: &mut dyn FnMut(&str),
) -> Result<ContinualReport> {
    let start = Instant::now();
    let (base_scores, _) = base_scores(model, eval, passages, plan, None, progress)?;
    let passage_only = plan.passage_only();
    let template = plan.first_template();
    let mut current = plan.policy.unwrap_or(model).clone();
    let mut matrix = Vec::with_capacity(passages.len());
    for (i, (idx, passage)) in passages.iter().enumerate() {
        let (_, texts, _) = self_edit_texts(
            &current,
            template,
            &passage_only,
            passage,
            &plan.sampling_for(*idx, 0),
        )?;
        let outcome = train_on_texts(&current, &texts, &plan.train, None, &mut |_| {})
            .map_err(|e| anyhow!("the update for passage {}: {e}", idx + 1))?;
        current = current.with_transformer(current.transformer.merged(&outcome.adapter)?);
        let mut row = Vec::with_capacity(i + 1);
        for (_, earlier) in &passages[..=i] {
            row.push(eval.score(&current, None, earlier, None)?.accuracy);
        }
        progress(&format!(
            "update {} ({}): accuracy on passages 1..={}: {}",
            i + 1,
            passage.title,
            i + 1,
            row.iter()
                .map(|a| format!("{:.0}%", a * 100.0))
                .collect::<Vec<_>>()
                .join(" ")
        ));
        matrix.push(row);
    }
    Ok(ContinualReport {
        titles: passages.iter().map(|(_, p)| p.title.clone()).collect(),
        base: passages
            .iter()
            .map(|(i, _)| base_scores[i].accuracy)
            .collect(),
        matrix,
        template: template.name.clone(),
        secs: start.elapsed().as_secs_f64(),
    })
}

/// What one adapted run trains on.
struct Trial<'t> {
    texts: Vec<String>,
    self_edit: Option<&'t str>,
    sample: usize,
    sample_secs: f64,
}

impl Trial<'_> {
    fn plain(texts: Vec<String>) -> Trial<'static> {
        Trial {
            texts,
            self_edit: None,
            sample: 0,
            sample_secs: 0.0,
        }
    }
}

/// Finetunes a fresh adapter on the trial's texts and scores it, `plan.repeats` times with
/// different training seeds.
fn run_trial(
    model: &Model,
    eval: &KnowledgeEval<'_>,
    (idx, passage): (usize, &Passage),
    base: &Scored,
    plan: &EvalPlan<'_>,
    trial: &Trial<'_>,
) -> Result<Vec<RunResult>> {
    (0..plan.repeats)
        .map(|repeat| {
            let cfg = TrainConfig {
                seed: plan.train.seed.wrapping_add(repeat as u64),
                ..plan.train.clone()
            };
            let outcome = train_on_texts(model, &trial.texts, &cfg, None, &mut |_| {})
                .map_err(|e| anyhow!("finetune on passage {:?} failed: {e}", passage.title))?;
            let scored =
                eval.score_both(model, Some(&outcome.adapter), passage, plan.also(idx), None)?;
            Ok(RunResult {
                self_edit: trial.self_edit.map(str::to_string),
                sample: trial.sample,
                repeat,
                accuracy: scored.accuracy,
                gain: scored.accuracy - base.accuracy,
                results: scored.results,
                sample_secs: trial.sample_secs,
                train_secs: outcome.secs,
                answer_secs: scored.secs,
                train_tokens: outcome.tokens,
                self_check: scored.self_check,
            })
        })
        .collect()
}

/// One self-edit's reward on the gold questions and on the questions the model wrote (means
/// over its repeats).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgreementPoint {
    pub row: String,
    pub passage: usize,
    pub title: String,
    pub sample: usize,
    pub gold: f64,
    #[serde(rename = "self")]
    pub self_written: f64,
    /// How many self-written questions it was graded on.
    pub self_questions: usize,
}

/// How well the self-written reward ranks self-edits as the gold reward does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Agreement {
    pub points: Vec<AgreementPoint>,
    /// Spearman's rank correlation over the self-edits; none when undefined (fewer than three,
    /// or one side constant).
    pub spearman: Option<f64>,
    /// Its 95% interval (Fisher z; see `record::metrics::spearman_ci95`).
    pub ci95: Option<(f64, f64)>,
    /// Self-edits left out because no self-written question could be graded for their passage.
    pub excluded: usize,
    /// Spearman's correlation after each passage's mean is taken from both rewards, over
    /// passages with two or more self-edits: how the rewards order self-edits of the same
    /// passage, which is all ReSTEM's choice rests on (the pooled figure also counts that both
    /// rewards are higher on easy passages).
    #[serde(default)]
    pub within_passage: Option<f64>,
    /// How often the self-written reward's favourite self-edit is a gold-best one.
    #[serde(default)]
    pub best_pick: Option<BestPick>,
}

/// Over passages whose self-edits' gold rewards differ: the share where the self-written
/// reward's top self-edit is a gold-best one (ties in it share the credit), and the share a
/// pick at random would get.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BestPick {
    pub passages: usize,
    pub share: f64,
    pub at_random: f64,
}

/// The points grouped by (row, passage), keeping passages with two or more self-edits.
fn passage_groups(points: &[AgreementPoint]) -> Vec<Vec<(f64, f64)>> {
    let mut groups: std::collections::BTreeMap<(&str, usize), Vec<(f64, f64)>> = Default::default();
    for p in points {
        groups
            .entry((p.row.as_str(), p.passage))
            .or_default()
            .push((p.gold, p.self_written));
    }
    groups.into_values().filter(|g| g.len() > 1).collect()
}

fn within_passage_spearman(groups: &[Vec<(f64, f64)>]) -> Option<f64> {
    let (mut gold, mut own) = (Vec::new(), Vec::new());
    // Rounded so that equal gaps left by the subtraction rank as ties, not by float noise.
    let round = |v: f64| (v * 1e9).round() / 1e9;
    for g in groups {
        let n = g.len() as f64;
        let mean_gold = g.iter().map(|p| p.0).sum::<f64>() / n;
        let mean_own = g.iter().map(|p| p.1).sum::<f64>() / n;
        gold.extend(g.iter().map(|p| round(p.0 - mean_gold)));
        own.extend(g.iter().map(|p| round(p.1 - mean_own)));
    }
    spearman(&gold, &own)
}

fn best_pick(groups: &[Vec<(f64, f64)>]) -> Option<BestPick> {
    let (mut share, mut at_random, mut passages) = (0.0, 0.0, 0);
    for g in groups {
        let best = g.iter().map(|p| p.0).fold(f64::MIN, f64::max);
        if g.iter().all(|p| p.0 == best) {
            continue;
        }
        let top = g.iter().map(|p| p.1).fold(f64::MIN, f64::max);
        let picked: Vec<f64> = g.iter().filter(|p| p.1 == top).map(|p| p.0).collect();
        share += picked.iter().filter(|&&gold| gold == best).count() as f64 / picked.len() as f64;
        at_random += g.iter().filter(|p| p.0 == best).count() as f64 / g.len() as f64;
        passages += 1;
    }
    (passages > 0).then(|| BestPick {
        passages,
        share: share / passages as f64,
        at_random: at_random / passages as f64,
    })
}

/// The gold and self-written rewards of every self-edit in the self-edit and SEAL rows.
pub fn agreement(reports: &[ConditionReport]) -> Agreement {
    let mut points = Vec::new();
    let mut excluded = 0;
    for r in reports
        .iter()
        .filter(|r| matches!(r.condition, Condition::PassageSelfEdit | Condition::Seal))
    {
        for p in &r.passages {
            let mut samples: Vec<usize> = p.runs.iter().map(|run| run.sample).collect();
            samples.dedup();
            for sample in samples {
                let runs: Vec<&RunResult> = p.runs.iter().filter(|x| x.sample == sample).collect();
                let checks: Vec<&SelfCheck> =
                    runs.iter().filter_map(|x| x.self_check.as_ref()).collect();
                let graded = checks.first().map_or(0, |c| c.results.len());
                if graded == 0 {
                    excluded += 1;
                    continue;
                }
                let gold: Vec<f64> = runs.iter().map(|x| x.accuracy).collect();
                let own: Vec<f64> = checks.iter().map(|c| c.accuracy).collect();
                points.push(AgreementPoint {
                    row: r.label.clone(),
                    passage: p.index,
                    title: p.title.clone(),
                    sample,
                    gold: mean(&gold).unwrap_or(0.0),
                    self_written: mean(&own).unwrap_or(0.0),
                    self_questions: graded,
                });
            }
        }
    }
    let gold: Vec<f64> = points.iter().map(|p| p.gold).collect();
    let own: Vec<f64> = points.iter().map(|p| p.self_written).collect();
    let rho = spearman(&gold, &own);
    let groups = passage_groups(&points);
    Agreement {
        ci95: rho.and_then(|r| spearman_ci95(r, points.len())),
        spearman: rho,
        within_passage: within_passage_spearman(&groups),
        best_pick: best_pick(&groups),
        points,
        excluded,
    }
}

/// The agreement as a table of self-edits and one line with the correlation.
pub fn format_agreement(a: &Agreement) -> String {
    let mut out = String::from(
        "| row | passage | self-edit | gold reward | self-question reward | self questions |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for p in &a.points {
        out.push_str(&format!(
            "| {} | {} | {} | {:.1}% | {:.1}% | {} |\n",
            p.row,
            p.passage + 1,
            p.sample + 1,
            p.gold * 100.0,
            p.self_written * 100.0,
            p.self_questions
        ));
    }
    let rho = match (a.spearman, a.ci95) {
        (Some(r), Some((lo, hi))) => format!("{r:+.3} (95% interval {lo:+.3} to {hi:+.3})"),
        (Some(r), None) => format!("{r:+.3} (too few self-edits for an interval)"),
        (None, _) => "undefined (fewer than 3 self-edits, or one reward never varies)".into(),
    };
    out.push_str(&format!(
        "\nSpearman rank correlation, gold vs self-question reward, over {} self-edits: {rho}\n",
        a.points.len()
    ));
    out.push_str(&match a.within_passage {
        Some(r) => format!(
            "Within passages (each passage's mean taken from both rewards): {r:+.3} \
             (an interval over passages: scripts/study-table)\n"
        ),
        None => "Within passages: undefined (too few self-edits share a passage, or a reward \
                 never varies within one)\n"
            .into(),
    });
    if let Some(b) = &a.best_pick {
        out.push_str(&format!(
            "The self-written reward's best self-edit is a gold-best one in {:.0}% of {} \
             passage(s) whose gold rewards differ (a pick at random: {:.0}%)\n",
            b.share * 100.0,
            b.passages,
            b.at_random * 100.0
        ));
    }
    if a.excluded > 0 {
        out.push_str(&format!(
            "{} self-edit(s) left out: no usable self-written question for their passage\n",
            a.excluded
        ));
    }
    out
}

/// The printed table: condition, accuracy, 95% interval, questions, seconds.
pub fn format_table(reports: &[ConditionReport]) -> String {
    let mut out = String::new();
    out.push_str(
        "| condition | accuracy | 95% interval | questions | graded answers | seconds |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|\n");
    for r in reports {
        out.push_str(&format!(
            "| {} | {:.1}% | {:.1}-{:.1}% | {} | {} | {:.1} |\n",
            r.label,
            r.accuracy * 100.0,
            r.ci95.0 * 100.0,
            r.ci95.1 * 100.0,
            r.questions,
            r.graded,
            r.secs
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agreement_within_passages_is_not_fooled_by_easy_passages() {
        // Both rewards are high on the easy passage and low on the hard one, but within each
        // passage the self-written reward orders the self-edits backwards.
        let rewards = [
            (0, [(0.8, 0.5), (0.6, 0.6), (0.7, 0.55)]),
            (1, [(0.1, 0.05), (0.0, 0.1), (0.2, 0.0)]),
            (2, [(0.4, 0.3), (0.4, 0.3), (0.4, 0.3)]),
        ];
        let mut points = Vec::new();
        for (passage, edits) in rewards {
            for (sample, (gold, own)) in edits.into_iter().enumerate() {
                points.push(AgreementPoint {
                    row: "passage + self-edit".into(),
                    passage,
                    title: String::new(),
                    sample,
                    gold,
                    self_written: own,
                    self_questions: 4,
                });
            }
        }
        let gold: Vec<f64> = points.iter().map(|p| p.gold).collect();
        let own: Vec<f64> = points.iter().map(|p| p.self_written).collect();
        assert!(spearman(&gold, &own).unwrap() > 0.5);
        let groups = passage_groups(&points);
        assert_eq!(groups.len(), 3);
        assert!((within_passage_spearman(&groups).unwrap() + 1.0).abs() < 1e-9);
        // The third passage's gold rewards never differ: it has no best self-edit to pick.
        let pick = best_pick(&groups).unwrap();
        assert_eq!(pick.passages, 2);
        assert_eq!(pick.share, 0.0);
        assert!((pick.at_random - 1.0 / 3.0).abs() < 1e-12);

        // A tie at the self-written top shares the credit.
        let tied = vec![vec![(1.0, 0.5), (0.0, 0.5), (0.0, 0.1)]];
        assert_eq!(best_pick(&tied).unwrap().share, 0.5);
    }

    #[test]
    fn synthetic_files_in_both_shapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.jsonl");
        std::fs::write(
            &p,
            "{\"passage\": 3, \"texts\": [\"a\", \"b\"]}\n{\"context\": \"The text.\", \"text\": \"c\"}\n",
        )
        .unwrap();
        let s = Synthetic::load(&p).unwrap();
        let passage = Passage {
            title: "T".into(),
            context: "The text.".into(),
            questions: vec![],
        };
        assert_eq!(
            s.texts_for(3, &passage).unwrap(),
            &vec!["a".to_string(), "b".to_string()]
        );
        assert_eq!(s.texts_for(9, &passage).unwrap(), &vec!["c".to_string()]);
        std::fs::write(&p, "{\"passage\": 1}\n").unwrap();
        let err = Synthetic::load(&p).err().unwrap().to_string();
        assert!(err.contains("row 1"), "{err}");
    }
}

//! The knowledge domain on the engine: sampling a self-edit, turning it into training data,
//! fitting a LoRA adapter on it, and answering the passage's questions without the passage.

use super::grading::{grade_em, grade_f1, Grader, Verdict};
use super::judge::{verdict_from_reply, HttpJudge, JudgeTemplate};
use super::passage::Passage;
use super::templates::{AnswerTemplate, PromptTemplate};
use crate::engine::sample::{generate, generate_batch, Generation, SamplingParams};
use crate::engine::train::{
    train_lora, Example, TrainConfig, TrainError, TrainEvent, TrainOutcome,
};
use crate::engine::{LoraAdapter, Model};
use crate::record::{QuestionResult, SelfCheck};
use crate::seal::domain::{GradingFailed, Scored};
use anyhow::{Context, Result};
use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

/// Questions answered in one batch; bounds the KV cache's memory.
const ANSWER_BATCH: usize = 32;

/// Samples one self-edit for `passage`; `None` for a template that samples nothing.
pub fn sample_self_edit(
    model: &Model,
    template: &PromptTemplate,
    passage: &Passage,
    base: &SamplingParams,
    cancel: Option<&AtomicBool>,
    on_piece: &mut dyn FnMut(&str),
) -> Result<Option<(String, Generation)>> {
    let (Some(text), Some(sampling)) = (template.render(passage), template.sampling.as_ref())
    else {
        return Ok(None);
    };
    let prompt = model.chat.prompt(&text)?;
    let ids = model.tokenizer.encode(&prompt)?;
    let params = SamplingParams {
        temperature: sampling.temperature.unwrap_or(base.temperature),
        max_tokens: sampling.max_tokens.min(base.max_tokens),
        ..base.clone()
    };
    let gen = generate(model, None, &ids, &params, cancel, on_piece)?;
    Ok(Some((prompt, gen)))
}

/// Plain-text training sequences as examples whose every token counts.
pub fn text_examples(model: &Model, texts: &[String]) -> Result<Vec<Example>> {
    texts
        .iter()
        .filter(|t| !t.trim().is_empty())
        .map(|t| {
            Ok(Example {
                prompt: Vec::new(),
                completion: model.tokenizer.encode_document(t)?,
            })
        })
        .collect()
}

/// How answers are graded, with whatever the grader needs (a judge model or endpoint).
pub struct Grading {
    grader: Grader,
    judge_template: Option<JudgeTemplate>,
    http: Option<HttpJudge>,
    judge_model: Option<Model>,
}

impl Grading {
    /// `judge_model` is the model a local judge runs on; it is required for `judge-local`.
    pub fn new(grader: &Grader, prompts_dir: &Path, judge_model: Option<Model>) -> Result<Grading> {
        let needs_template = matches!(grader, Grader::JudgeLocal | Grader::JudgeHttp(_));
        let judge_template = if needs_template {
            Some(JudgeTemplate::find(prompts_dir)?)
        } else {
            None
        };
        let http = match grader {
            Grader::JudgeHttp(cfg) => Some(HttpJudge::new(
                cfg.clone(),
                judge_template.clone().context("judge template")?,
            )),
            _ => None,
        };
        if matches!(grader, Grader::JudgeLocal) && judge_model.is_none() {
            anyhow::bail!("the judge-local grader needs a judge model");
        }
        Ok(Grading {
            grader: grader.clone(),
            judge_template,
            http,
            judge_model,
        })
    }

    pub fn label(&self) -> String {
        self.grader.label()
    }

    /// Grades each answer against its question's gold answers.
    pub fn grade(&self, passage: &Passage, answers: &[String]) -> Result<Vec<Verdict>> {
        let pairs = passage.questions.iter().zip(answers);
        match &self.grader {
            Grader::Em => Ok(pairs.map(|(q, a)| grade_em(a, &q.answers)).collect()),
            Grader::F1 { threshold } => Ok(pairs
                .map(|(q, a)| grade_f1(a, &q.answers, *threshold))
                .collect()),
            Grader::JudgeHttp(_) => {
                let judge = self.http.as_ref().context("HTTP judge")?;
                // A judge that cannot answer is not a wrong answer: the first failure (after
                // the judge's own retries) stops the grading, and nothing is scored.
                pairs
                    .enumerate()
                    .map(|(n, (q, a))| {
                        judge.judge(&q.question, &q.answers, a).map_err(|e| {
                            GradingFailed(format!(
                                "the HTTP judge could not grade question {} of {:?}: {e}",
                                n + 1,
                                passage.title
                            ))
                            .into()
                        })
                    })
                    .collect()
            }
            Grader::JudgeLocal => {
                let model = self.judge_model.as_ref().context("judge model")?;
                let template = self.judge_template.as_ref().context("judge template")?;
                let prompts: Vec<Vec<u32>> = pairs
                    .map(|(q, a)| {
                        let text = template.render(&q.question, &q.answers, a);
                        model.prompt_ids(&text)
                    })
                    .collect::<Result<_>>()?;
                let params = SamplingParams::greedy(template.chat.max_tokens);
                let mut verdicts = Vec::with_capacity(prompts.len());
                for chunk in prompts.chunks(ANSWER_BATCH) {
                    for g in generate_batch(model, None, chunk, &params, None)? {
                        verdicts.push(verdict_from_reply(&self.label(), &g.text));
                    }
                }
                Ok(verdicts)
            }
        }
    }
}

/// Answers every question of `passage` without showing the passage (its title is the topic),
/// greedily and in batches.
pub fn answer_questions(
    model: &Model,
    adapter: Option<&LoraAdapter>,
    template: &AnswerTemplate,
    passage: &Passage,
    cancel: Option<&AtomicBool>,
) -> Result<Vec<String>> {
    let prompts: Vec<Vec<u32>> = passage
        .questions
        .iter()
        .map(|q| {
            let text = template.render(&passage.title, &q.question);
            model.prompt_ids(&text)
        })
        .collect::<Result<_>>()?;
    let params = SamplingParams {
        stop: vec!["\n".into()],
        ..SamplingParams::greedy(template.chat.max_tokens)
    };
    let mut answers = Vec::with_capacity(prompts.len());
    for chunk in prompts.chunks(ANSWER_BATCH) {
        for g in generate_batch(model, adapter, chunk, &params, cancel)? {
            answers.push(g.text.trim().to_string());
        }
    }
    Ok(answers)
}

/// Everything needed to score a passage with and without an adapter.
pub struct KnowledgeEval<'a> {
    pub answer: &'a AnswerTemplate,
    pub grading: &'a Grading,
}

impl KnowledgeEval<'_> {
    /// Scores `passage`, and when `also` is given grades the same model on those questions
    /// too (the self-written questions beside the gold ones).
    pub fn score_both(
        &self,
        model: &Model,
        adapter: Option<&LoraAdapter>,
        passage: &Passage,
        also: Option<&Passage>,
        cancel: Option<&AtomicBool>,
    ) -> Result<Scored> {
        let mut scored = self.score(model, adapter, passage, cancel)?;
        if let Some(also) = also {
            let side = self.score(model, adapter, also, cancel)?;
            scored.secs += side.secs;
            scored.self_check = Some(SelfCheck {
                results: side.results,
                accuracy: side.accuracy,
            });
        }
        Ok(scored)
    }

    pub fn score(
        &self,
        model: &Model,
        adapter: Option<&LoraAdapter>,
        passage: &Passage,
        cancel: Option<&AtomicBool>,
    ) -> Result<Scored> {
        let start = Instant::now();
        let answers = answer_questions(model, adapter, self.answer, passage, cancel)?;
        let verdicts = self.grading.grade(passage, &answers)?;
        let correct = verdicts.iter().filter(|v| v.correct).count();
        let results = answers
            .into_iter()
            .zip(verdicts)
            .enumerate()
            .map(|(question, (answer, verdict))| QuestionResult {
                question,
                answer,
                grid: None,
                verdict,
            })
            .collect::<Vec<_>>();
        Ok(Scored {
            accuracy: correct as f64 / results.len().max(1) as f64,
            results,
            secs: start.elapsed().as_secs_f64(),
            self_check: None,
        })
    }
}

/// Fits a fresh adapter on plain-text sequences (the inner loop's finetune).
pub fn train_on_texts(
    model: &Model,
    texts: &[String],
    cfg: &TrainConfig,
    cancel: Option<&AtomicBool>,
    on_event: &mut dyn FnMut(&TrainEvent),
) -> std::result::Result<TrainOutcome, TrainError> {
    let examples = text_examples(model, texts)?;
    train_lora(model, &examples, cfg, cancel, on_event)
}

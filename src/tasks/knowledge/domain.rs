//! Knowledge incorporation as a SEAL domain: contexts are passages, a self-edit is text the
//! model writes about the passage, the inner loop finetunes on it, and the reward is how many of
//! the passage's questions the adapted model then answers without seeing it.

use super::inner::{train_on_texts, Grading, KnowledgeEval};
use super::passage::Passage;
use super::templates::{AnswerTemplate, PromptTemplate};
use crate::engine::sample::SamplingParams;
use crate::engine::train::{TrainConfig, TrainError, TrainEvent, TrainOutcome};
use crate::engine::{LoraAdapter, Model, Prompt};
use crate::record::{ContextBody, ContextView, QuestionView};
use crate::seal::domain::{Domain, Scored};
use anyhow::Result;
use std::sync::atomic::AtomicBool;

pub struct KnowledgeDomain {
    pub passages: Vec<Passage>,
    pub template: PromptTemplate,
    pub answer: AnswerTemplate,
    pub grading: Grading,
}

impl KnowledgeDomain {
    fn passage(&self, index: usize) -> &Passage {
        &self.passages[index % self.passages.len()]
    }

    fn eval(&self) -> KnowledgeEval<'_> {
        KnowledgeEval {
            answer: &self.answer,
            grading: &self.grading,
        }
    }
}

impl Domain for KnowledgeDomain {
    fn name(&self) -> &'static str {
        "knowledge"
    }

    fn strategy(&self) -> String {
        self.template.name.clone()
    }

    fn grader(&self) -> String {
        self.grading.label()
    }

    fn num_contexts(&self) -> usize {
        self.passages.len()
    }

    fn view(&self, index: usize) -> ContextView {
        let p = self.passage(index);
        ContextView {
            id: format!("passage {}", index + 1),
            title: p.title.clone(),
            body: ContextBody::Passage {
                text: p.context.clone(),
            },
            questions: p
                .questions
                .iter()
                .map(|q| QuestionView {
                    question: q.question.clone(),
                    answers: q.answers.clone(),
                })
                .collect(),
        }
    }

    fn self_edit_request(&self, index: usize) -> Option<Prompt> {
        self.template.render(self.passage(index))
    }

    fn self_edit_sampling(&self, run: &SamplingParams) -> SamplingParams {
        match &self.template.sampling {
            Some(s) => SamplingParams {
                temperature: s.temperature.unwrap_or(run.temperature),
                max_tokens: s.max_tokens.min(run.max_tokens),
                ..run.clone()
            },
            None => run.clone(),
        }
    }

    fn baseline(&self, model: &Model, index: usize, cancel: &AtomicBool) -> Result<Scored> {
        self.eval()
            .score(model, None, self.passage(index), Some(cancel))
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
        let texts = self
            .template
            .training_sequences(self.passage(index), self_edit);
        train_on_texts(model, &texts, cfg, Some(cancel), on_event)
    }

    fn evaluate(
        &self,
        model: &Model,
        adapter: &LoraAdapter,
        index: usize,
        cancel: &AtomicBool,
    ) -> Result<Scored> {
        self.eval()
            .score(model, Some(adapter), self.passage(index), Some(cancel))
    }
}

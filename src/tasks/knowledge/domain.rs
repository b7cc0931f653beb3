//! Knowledge incorporation as a SEAL domain: contexts are passages, a self-edit is text the
//! model writes about the passage, the inner loop finetunes on it, and the reward is how many of
//! the passage's questions the adapted model then answers without seeing it. Those questions
//! are the data's gold ones, or ones the model wrote about the passage before it was hidden
//! (`[knowledge] questions`).

use super::inner::{train_on_texts, Grading, KnowledgeEval};
use super::passage::Passage;
use super::questions::{with_questions, write_questions, QuestionsTemplate};
use super::templates::{AnswerTemplate, PromptTemplate};
use crate::engine::sample::SamplingParams;
use crate::engine::train::{TrainConfig, TrainError, TrainEvent, TrainOutcome};
use crate::engine::{LoraAdapter, Model, Prompt};
use crate::record::{ContextBody, ContextView, QuestionSource, QuestionView, SelfQuestions};
use crate::seal::domain::{Domain, Scored};
use anyhow::{anyhow, Result};
use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::Mutex;

pub struct KnowledgeDomain {
    pub passages: Vec<Passage>,
    pub template: PromptTemplate,
    pub answer: AnswerTemplate,
    pub grading: Grading,
    pub questions: Questions,
}

/// Which questions a context is graded on, and the ones the model wrote so far.
pub struct Questions {
    pub source: QuestionSource,
    /// The template and the number of pairs asked for (needed unless `source` is gold).
    pub writer: Option<(QuestionsTemplate, usize)>,
    /// By passage index; written once per session and read back on resume.
    written: Mutex<HashMap<usize, SelfQuestions>>,
}

impl Questions {
    /// The data's gold questions only.
    pub fn gold() -> Questions {
        Questions::new(QuestionSource::Gold, None)
    }

    pub fn new(source: QuestionSource, writer: Option<(QuestionsTemplate, usize)>) -> Questions {
        Questions {
            source,
            writer,
            written: Mutex::new(HashMap::new()),
        }
    }

    fn written(&self, index: usize) -> Option<SelfQuestions> {
        let map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&index).cloned()
    }

    fn remember(&self, questions: SelfQuestions) {
        let mut map = self.written.lock().unwrap_or_else(|e| e.into_inner());
        map.insert(questions.index, questions);
    }
}

impl KnowledgeDomain {
    fn index(&self, index: usize) -> usize {
        index % self.passages.len()
    }

    fn passage(&self, index: usize) -> &Passage {
        &self.passages[self.index(index)]
    }

    /// The passage with the written questions, once they are written.
    fn self_passage(&self, index: usize) -> Result<Passage> {
        let written = self.questions.written(self.index(index)).ok_or_else(|| {
            anyhow!(
                "passage {}: its questions have not been written yet",
                self.index(index) + 1
            )
        })?;
        Ok(with_questions(self.passage(index), &written))
    }

    /// The graded passage, and the one graded beside it (`both`).
    fn graded(&self, index: usize) -> Result<(Passage, Option<Passage>)> {
        Ok(match self.questions.source {
            QuestionSource::Gold => (self.passage(index).clone(), None),
            QuestionSource::SelfWritten => (self.self_passage(index)?, None),
            QuestionSource::Both => (self.passage(index).clone(), Some(self.self_passage(index)?)),
        })
    }

    fn score(
        &self,
        model: &Model,
        adapter: Option<&LoraAdapter>,
        index: usize,
        cancel: &AtomicBool,
    ) -> Result<Scored> {
        let (graded, also) = self.graded(index)?;
        self.eval()
            .score_both(model, adapter, &graded, also.as_ref(), Some(cancel))
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
        let written = match self.questions.source {
            QuestionSource::SelfWritten => self.self_passage(index).ok(),
            _ => None,
        };
        let p = written.as_ref().unwrap_or(self.passage(index));
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

    fn prepare_context(
        &self,
        model: &Model,
        index: usize,
        cancel: &AtomicBool,
    ) -> Result<Option<SelfQuestions>> {
        let Some((template, count)) = &self.questions.writer else {
            return Ok(None);
        };
        let index = self.index(index);
        if self.questions.written(index).is_some() {
            return Ok(None);
        }
        let written = write_questions(
            model,
            template,
            &self.passages[index],
            index,
            *count,
            Some(cancel),
        )?;
        self.questions.remember(written.clone());
        Ok(Some(written))
    }

    fn restore_questions(&self, questions: &SelfQuestions) {
        if questions.index < self.passages.len() {
            self.questions.remember(questions.clone());
        }
    }

    fn baseline(&self, model: &Model, index: usize, cancel: &AtomicBool) -> Result<Scored> {
        self.score(model, None, index, cancel)
    }

    fn train_on_context(
        &self,
        model: &Model,
        index: usize,
        cfg: &TrainConfig,
        cancel: &AtomicBool,
    ) -> Option<std::result::Result<TrainOutcome, TrainError>> {
        let texts = self
            .template
            .passage_only()
            .training_sequences(self.passage(index), "");
        Some(train_on_texts(
            model,
            &texts,
            cfg,
            Some(cancel),
            &mut |_| {},
        ))
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
        self.score(model, Some(adapter), index, cancel)
    }
}

//! Knowledge incorporation (SQuAD-style passages): a model reads a passage, writes a self-edit,
//! is finetuned on it, and must then answer questions about the passage without seeing it.
//!
//! - `passage`: passages, questions and the SQuAD file loader;
//! - `templates`: self-edit and answer prompt templates (`prompts/*.toml`) and how a self-edit
//!   becomes training sequences;
//! - `grading`: SQuAD exact match and F1, grader configuration, verdicts;
//! - `judge`: the LLM judge prompt, reply parsing and the HTTP judge;
//! - `questions`: evaluation questions the model writes about a passage before it is hidden.

pub mod conditions;
pub mod domain;
pub mod grading;
pub mod inner;
pub mod judge;
pub mod passage;
pub mod questions;
pub mod templates;

pub use grading::{
    exact_match, f1, grade_em, grade_f1, normalize_answer, Grader, Verdict, DEFAULT_F1_THRESHOLD,
};
pub use judge::{
    parse_reply, verdict_from_reply, HttpJudge, HttpJudgeConfig, JudgeError, JudgeTemplate,
};
pub use passage::{is_unlabeled, load_passages, LoadError, Passage, Question};
pub use templates::{
    list_templates, AnswerTemplate, PromptFile, PromptTemplate, Sampling, Split, TemplateError,
    TemplateText, ANSWER_TEMPLATE_FILE, JUDGE_TEMPLATE_FILE, QUESTIONS_TEMPLATE_FILE,
};

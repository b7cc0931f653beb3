//! Knowledge incorporation (SQuAD-style passages): a model reads a passage, writes a self-edit,
//! is finetuned on it, and must then answer questions about the passage without seeing it.
//!
//! - `passage`: passages, questions and the SQuAD file loader.

pub mod passage;
#[cfg(test)]
mod testdata;

pub use passage::{load_passages, LoadError, Passage, Question};

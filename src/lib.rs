//! seal-tui: a terminal workbench for SEAL (Self-Adapting Language Models).
//!
//! The crate is split by responsibility: `engine` loads models and runs candle (sampling, LoRA
//! training, evaluation) and knows nothing of SEAL; `tasks` holds the two SEAL domains
//! (knowledge incorporation and ARC few-shot learning); `seal` runs the two loops and speaks in
//! events and commands; `session` records events durably; `tui` draws and steers.

pub mod engine;
pub mod seal;
pub mod tasks;
pub mod tui;

//! The SEAL loops. The outer loop (ReSTEM) samples self-edits, applies each with a fresh LoRA
//! finetune (the inner loop), rewards it by the adapted model's accuracy, keeps the best, and
//! finetunes the policy on what it kept. It speaks only in [`events::Event`]s and obeys
//! [`events::Command`]s; it knows nothing of the terminal.

pub mod config;
pub mod domain;
pub mod events;
pub mod runner;
pub mod setup;
pub mod state;
pub mod story;

pub use config::RunConfig;
pub use events::{
    Command, ContextBody, ContextView, CtxId, Decision, EditId, Event, Record, RunMode,
};
pub use state::RunState;

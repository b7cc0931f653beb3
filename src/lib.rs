//! seal-tui: a terminal workbench for SEAL (Self-Adapting Language Models).
//!
//! The crate is split into rooms, each with one job (see ARCHITECTURE.md for the arrows between
//! them, which `tests/architecture.rs` keeps):
//! - `record`: the vocabulary of what is recorded (events, commands, the run configuration,
//!   the session header), the fold of events into a run's state, and the round figures;
//! - `engine`: candle: loading, sampling, LoRA training; knows nothing of SEAL;
//! - `seal`: the two loops, speaking in events and obeying commands; with the slurm backend it
//!   sends the inner loops out as job arrays and runs them as `seal-tui worker`;
//! - `cluster`: SLURM's commands (submit, poll, cancel) and their output; knows nothing of SEAL;
//! - `openai`: the OpenAI-compatible HTTP protocol (streamed completions, runtime LoRA loading);
//!   knows nothing of SEAL;
//! - `tasks`: the SEAL domains (knowledge incorporation, ARC);
//! - `setup`: a run's model and domain built from its configuration;
//! - `session`: the durable log and the session folder;
//! - `text`: text for terminals and files (the sanitiser, progress lines, reports);
//! - `tui`: the screen, which draws the fold and sends commands.

pub mod cluster;
pub mod engine;
pub mod openai;
pub mod record;
pub mod seal;
pub mod session;
pub mod setup;
pub mod tasks;
pub mod text;
pub mod tui;

/// The unit tests' allocator is the binary's (see main.rs), so timings in them mean the same.
#[cfg(test)]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

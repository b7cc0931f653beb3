//! The SEAL loops. The outer loop (ReSTEM) samples self-edits, applies each with a fresh LoRA
//! finetune (the inner loop), rewards it by the adapted model's accuracy, keeps the best, and
//! finetunes the policy on what it kept. It speaks only in events and obeys commands (both in
//! [`crate::record`]); it knows nothing of the terminal, and of the domains only the
//! [`domain::Domain`] trait they implement.
//!
//! - `plan`: the next phase and the selection rule, from the state alone (pure);
//! - `execute`: one phase on the model;
//! - `emitter`: events to the log, the fold and the watcher, under one lock;
//! - `control`: commands, mode and step credits;
//! - `runner`: starting, resuming and the runner thread;
//! - `settings`: the recorded configuration turned into the engine's settings;
//! - `dispatch`: the slurm backend (a round's inner loops as one job array, watched, retried,
//!   re-attached after a crash);
//! - `units`: one inner loop as files, the protocol between the runner and a worker;
//! - `worker`: `seal-tui worker JOB`, one inner loop wherever it runs;
//! - `served`: self-edits sampled from a served policy (an OpenAI-compatible server).

pub mod control;
pub mod dispatch;
pub mod domain;
pub mod emitter;
pub mod execute;
pub mod plan;
pub mod runner;
pub mod served;
pub mod settings;
pub mod units;
pub mod worker;

pub use runner::{Launch, Prepare, RunHandle, Setup};

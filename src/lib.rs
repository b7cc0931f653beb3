//! seal-tui: a terminal workbench for SEAL (Self-Adapting Language Models).
//!
//! The crate is split by responsibility: `engine` loads models and runs candle (sampling, LoRA
//! training, evaluation) and knows nothing of SEAL; `tasks` holds the two SEAL domains
//! (knowledge incorporation and ARC few-shot learning); `seal` runs the two loops and speaks in
//! events and commands; `session` records events durably; `tui` draws and steers.

pub mod engine;
pub mod seal;
pub mod session;
pub mod tasks;
pub mod tui;

/// candle allocates a fresh buffer for every tensor; with glibc's allocator each large one is a
/// new mapping whose pages fault in and are zeroed by the kernel. mimalloc keeps freed memory
/// for reuse, which made a LoRA training step markedly faster on CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

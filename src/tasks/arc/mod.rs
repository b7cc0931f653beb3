//! Few-shot learning on ARC tasks.

pub mod augment;
pub mod grid;
pub mod task;

//! Few-shot learning on ARC tasks.

//! The SEAL domains: what a context is, how a self-edit is prompted and turned into training
//! data, and how the adapted model is graded.

pub mod arc;
pub mod knowledge;

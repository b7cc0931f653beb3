//! The terminal workbench: watches a SEAL run (live, or replayed from its log) and steers it.
//!
//! This first part holds what every screen element relies on: making untrusted text safe to
//! draw, colour themes, key bindings, syntax colouring, wrapping and the on-screen spelling of
//! ids and numbers. No model code runs here.

pub mod highlight;
pub mod keys;
pub mod labels;
pub mod sanitize;
pub mod theme;
pub mod wrap;

pub use keys::{Action, KeyMap};
pub use theme::Theme;

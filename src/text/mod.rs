//! Text for terminals and files: the one sanitiser every shown or written string passes
//! through (the screen's too), the run told as progress lines, and the session report.

pub mod report;
pub mod sanitize;
pub mod story;

pub use sanitize::{sanitize, sanitize_line};

//! Printing for the command line. Every line the binary prints passes the one sanitiser
//! (`seal_tui::text::sanitize`, the screen's too), because passage titles, questions, model
//! answers, judge replies and error messages may carry terminal escapes. Nothing else in the
//! binary prints directly (a test in `tests/architecture.rs` keeps it so).

/// `println!`, sanitised.
macro_rules! outln {
    () => {
        println!()
    };
    ($($arg:tt)*) => {
        println!("{}", seal_tui::text::sanitize(&format!($($arg)*)))
    };
}

/// `eprintln!`, sanitised.
macro_rules! errln {
    ($($arg:tt)*) => {
        eprintln!("{}", seal_tui::text::sanitize(&format!($($arg)*)))
    };
}

/// `print!` without a newline, sanitised, flushed (streamed text).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout();
        let _ = stdout.write_all(seal_tui::text::sanitize(&format!($($arg)*)).as_bytes());
        let _ = stdout.flush();
    }};
}

/// `eprint!` without a newline, sanitised, flushed (text streamed to stderr).
macro_rules! out_err {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stderr = std::io::stderr();
        let _ = stderr.write_all(seal_tui::text::sanitize(&format!($($arg)*)).as_bytes());
        let _ = stderr.flush();
    }};
}

/// Rewrites the current stderr line (a progress counter): a carriage return, the sanitised
/// single-line text, and a few spaces to cover a longer previous line.
pub fn progress(text: &str) {
    use std::io::Write;
    let mut err = std::io::stderr();
    let _ = write!(err, "\r{}   ", seal_tui::text::sanitize_line(text));
    let _ = err.flush();
}

/// Writes bytes to stdout untouched: only for output a person asked to get raw (`--raw`).
pub fn raw(text: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout();
    let _ = stdout.write_all(text.as_bytes());
    let _ = stdout.flush();
}

//! Bad input, as a hostile user gives it: broken model files and tokenizers, adapters, data
//! files, run configurations, templates, key maps and themes, session headers and logs, HTTP
//! judges that misbehave, bad flags and commands, a second writer on a session, signals.
//!
//! Each kind drives the real binary (on the tiny random-weight model, so the suite is quick)
//! and checks its exit status, that its message names the problem, that nothing panicked or
//! reached the terminal raw, that it did not hang, and that nothing on disk was lost. Each
//! group is one test (groups run in parallel); the last test counts the kinds.

#[path = "../common/mod.rs"]
mod common;

mod adapters;
mod configs;
mod data;
mod fixtures;
mod flags;
mod judge;
mod lab;
mod models;
mod runs;
mod screen;
mod sessions;
mod templates;

use lab::{run_group, Case};

/// A group's name and the function that lists its cases.
type Group = (&'static str, fn() -> Vec<Case>);

/// Every group, by name.
fn groups() -> Vec<Group> {
    vec![
        ("model files and tokenizers", models::cases),
        ("adapters", adapters::cases),
        ("data files", data::cases),
        ("run configurations", configs::cases),
        ("templates", templates::cases),
        ("themes, key maps and screen flags", screen::cases),
        ("session headers and logs", sessions::cases),
        ("HTTP judges", judge::cases),
        ("commands, writers and signals", runs::cases),
        ("command-line flags", flags::cases),
    ]
}

fn group(name: &str) -> usize {
    let (_, cases) = groups()
        .into_iter()
        .find(|(n, _)| *n == name)
        .expect("a group");
    run_group(name, cases())
}

#[test]
fn model_files_and_tokenizers() {
    group("model files and tokenizers");
}

#[test]
fn adapters() {
    group("adapters");
}

#[test]
fn data_files() {
    group("data files");
}

#[test]
fn run_configurations() {
    group("run configurations");
}

#[test]
fn templates() {
    group("templates");
}

#[test]
fn themes_key_maps_and_screen_flags() {
    group("themes, key maps and screen flags");
}

#[test]
fn session_headers_and_logs() {
    group("session headers and logs");
}

#[test]
fn http_judges() {
    group("HTTP judges");
}

#[test]
fn commands_writers_and_signals() {
    group("commands, writers and signals");
}

#[test]
fn command_line_flags() {
    group("command-line flags");
}

/// The suite's size, by group: at least 150 kinds of bad input.
#[test]
fn the_suite_counts_its_kinds() {
    let mut total = 0;
    let mut lines = Vec::new();
    for (name, cases) in groups() {
        let n = cases().len();
        total += n;
        lines.push(format!("{n:>4}  {name}"));
    }
    eprintln!("bad-input kinds:\n{}\n{total:>4}  in all", lines.join("\n"));
    assert!(total >= 150, "only {total} kinds of bad input");
}

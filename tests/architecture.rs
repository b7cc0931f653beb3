//! The arrows between the rooms of `src/` (see ARCHITECTURE.md), kept by reading the source: a
//! `crate::room` path from a room that may not use that room fails here, naming the file and
//! line; so does a cycle among the arrows that exist.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which rooms each room may use. Rooms not listed as keys are not library rooms.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        // The vocabulary of what is recorded depends on nothing of ours.
        ("record", &[][..]),
        ("engine", &[][..]),
        ("text", &["record"][..]),
        ("session", &["record"][..]),
        // SLURM's commands: they need the [cluster] settings they submit with, nothing else.
        ("cluster", &["record"][..]),
        // The OpenAI-compatible protocol: its settings and the recorded prompt form only.
        ("openai", &["record"][..]),
        (
            "seal",
            &["record", "engine", "session", "cluster", "openai"][..],
        ),
        // The HTTP judge talks to its endpoint through the one OpenAI-compatible client.
        ("tasks", &["record", "engine", "seal", "openai"][..]),
        ("setup", &["record", "engine", "seal", "tasks"][..]),
        ("tui", &["record", "text"][..]),
    ])
}

/// Crates a room may not name at all.
fn forbidden_crates(room: &str) -> &'static [&'static str] {
    match room {
        // The screen runs no model code.
        "tui" | "record" | "text" | "session" | "cluster" | "openai" => {
            &["candle_core", "candle_nn", "tokenizers"]
        }
        _ => &[],
    }
}

/// A finer rule inside an allowed arrow: why `room` may use only part of another room, or
/// none of a sibling.
fn narrower(room: &str, path: &str) -> Option<&'static str> {
    let target = target_of(path)?;
    let top = room.split("::").next()?;
    if top == "tasks" && target == "seal" && !path.starts_with("crate::seal::domain") {
        return Some(
            "a domain implements the loop's Domain trait and uses nothing else of the loop",
        );
    }
    let sibling = |name: &str| path.starts_with(&format!("crate::tasks::{name}"));
    match room {
        "tasks::arc" if sibling("knowledge") => Some("the two domains do not use each other"),
        "tasks::knowledge" if sibling("arc") => Some("the two domains do not use each other"),
        _ => None,
    }
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The room a file belongs to (`tasks::arc` for the ARC domain), or `None` for the binary's
/// own files and the crate root.
fn room_of(rel: &Path) -> Option<String> {
    let parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    match parts.first().map(String::as_str) {
        None | Some("lib") | Some("main") | Some("cli") => None,
        Some("tasks") if parts.len() > 2 => Some(format!("tasks::{}", parts[1])),
        Some(room) => Some(room.to_string()),
    }
}

/// The top-level room of a `crate::...` path.
fn target_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("crate::")?;
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

/// Every `crate::...` path in a line of code (comments and strings are skipped roughly: a line
/// starting with `//` is ignored, and so is anything after `//`).
fn crate_paths(line: &str) -> Vec<String> {
    let code = line.split("//").next().unwrap_or("");
    let mut out = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(tail.len());
        out.push(tail[..end].to_string());
        rest = &tail[end..];
    }
    // `use crate::{a, b::c}` lists several rooms in one path.
    if let Some(open) = code.find("crate::{") {
        let inner = &code[open + "crate::{".len()..];
        for part in inner.split([',', '}']) {
            let name = part.trim();
            if !name.is_empty() && name.chars().next().is_some_and(|c| c.is_ascii_lowercase()) {
                out.push(format!("crate::{name}"));
            }
        }
    }
    out
}

/// Every broken rule in a source tree, as "file:line: what".
fn check_tree(src: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    files.sort();
    let allowed = allowed();
    let mut problems = Vec::new();
    let mut arrows: BTreeSet<(String, String)> = BTreeSet::new();
    for file in &files {
        let rel = file.strip_prefix(src).unwrap();
        let Some(room) = room_of(rel) else { continue };
        let top = room.split("::").next().unwrap().to_string();
        let may = allowed
            .get(top.as_str())
            .unwrap_or_else(|| panic!("{}: room {top:?} is not in the table", rel.display()));
        let text = std::fs::read_to_string(file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim_start();
            if trimmed.starts_with("//") {
                continue;
            }
            let at = format!("src/{}:{}", rel.display(), n + 1);
            for krate in forbidden_crates(&top) {
                if trimmed.contains(&format!("{krate}::")) {
                    problems.push(format!("{at}: the {top} room may not use {krate}"));
                }
            }
            for path in crate_paths(line) {
                let Some(target) = target_of(&path).filter(|t| !t.is_empty()) else {
                    continue;
                };
                if let Some(why) = narrower(&room, &path) {
                    problems.push(format!("{at}: {path}: {why}"));
                }
                if target == top {
                    continue;
                }
                arrows.insert((top.clone(), target.to_string()));
                if !may.contains(&target) {
                    problems.push(format!(
                        "{at}: the {top} room may not use the {target} room ({path})"
                    ));
                }
            }
        }
    }
    // The arrows that exist form no cycle.
    let rooms: BTreeSet<String> = arrows
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    let mut done = BTreeSet::new();
    fn visit(
        room: &str,
        arrows: &BTreeSet<(String, String)>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        cycles: &mut Vec<String>,
    ) {
        if let Some(at) = path.iter().position(|r| r == room) {
            cycles.push(format!(
                "a cycle between rooms: {} -> {room}",
                path[at..].join(" -> ")
            ));
            return;
        }
        if done.contains(room) {
            return;
        }
        path.push(room.to_string());
        for (_, to) in arrows.iter().filter(|(from, _)| from == room) {
            visit(to, arrows, path, done, cycles);
        }
        path.pop();
        done.insert(room.to_string());
    }
    let mut cycles = Vec::new();
    for room in &rooms {
        visit(room, &arrows, &mut Vec::new(), &mut done, &mut cycles);
    }
    problems.extend(cycles);
    problems
}

#[test]
fn rooms_use_only_the_rooms_they_may() {
    let problems = check_tree(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert!(
        problems.is_empty(),
        "forbidden imports:\n{}",
        problems.join("\n")
    );
}

#[test]
fn a_forbidden_import_is_named_by_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let write = |rel: &str, text: &str| {
        let path = dir.path().join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write("tui/pane.rs", "//! x\nuse crate::engine::Model;\n");
    write("engine/load.rs", "fn f() { let _ = crate::tui::draw(); }\n");
    write(
        "tasks/arc/x.rs",
        "use crate::tasks::knowledge::Passage;\nuse crate::seal::runner;\n",
    );
    write("record/mod.rs", "// crate::engine in a comment is fine\n");
    let problems = check_tree(dir.path());
    let joined = problems.join("\n");
    assert!(
        joined.contains("src/tui/pane.rs:2: the tui room may not use the engine room"),
        "{joined}"
    );
    assert!(
        joined.contains("src/engine/load.rs:1: the engine room may not use the tui room"),
        "{joined}"
    );
    assert!(
        joined.contains("src/tasks/arc/x.rs:1") && joined.contains("do not use each other"),
        "{joined}"
    );
    assert!(
        joined.contains("src/tasks/arc/x.rs:2") && joined.contains("Domain trait"),
        "{joined}"
    );
    assert!(joined.contains("a cycle between rooms"), "{joined}");
    assert!(!joined.contains("record"), "{joined}");
}

#[test]
fn the_checker_sees_what_it_should() {
    assert_eq!(
        crate_paths("use crate::engine::Model; // crate::tui::x"),
        vec!["crate::engine::Model"]
    );
    assert_eq!(
        crate_paths("use crate::{engine, record::Event};"),
        vec!["crate::", "crate::engine", "crate::record::Event"]
    );
    assert_eq!(target_of("crate::record::Event"), Some("record"));
    assert_eq!(
        room_of(Path::new("tasks/arc/ttt.rs")).as_deref(),
        Some("tasks::arc")
    );
    assert_eq!(room_of(Path::new("cli/run.rs")), None);
}

/// The print macros found in a file's code before its test module, as "file:line: macro".
fn raw_prints(rel: &Path, text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("#[cfg(test)]") {
            break;
        }
        if trimmed.starts_with("//") {
            continue;
        }
        let code = line.split("//").next().unwrap_or("");
        for mac in ["println!", "eprintln!", "print!", "eprint!"] {
            let mut from = 0;
            while let Some(at) = code[from..].find(mac).map(|i| i + from) {
                let before = code[..at].chars().next_back();
                if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                    found.push(format!("src/{}:{}: {mac}", rel.display(), n + 1));
                }
                from = at + mac.len();
            }
        }
    }
    found
}

/// Every line the binary prints passes the one sanitiser: outside `src/cli/say.rs` (which
/// holds the sanitising print macros) no code prints to the terminal directly, so recorded or
/// model text cannot carry an escape sequence to it.
#[test]
fn terminal_output_goes_through_the_sanitiser() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    for file in &files {
        let rel = file.strip_prefix(&src).unwrap();
        if rel == Path::new("cli/say.rs") {
            continue;
        }
        problems.extend(raw_prints(rel, &std::fs::read_to_string(file).unwrap()));
    }
    assert!(
        problems.is_empty(),
        "print through outln!/errln!/out! (src/cli/say.rs) instead:\n{}",
        problems.join("\n")
    );
    let seen = raw_prints(
        Path::new("x.rs"),
        "fn f() {\n    eprintln!(\"a\");\n    outln!(\"b\"); // println!(\"c\")\n}\n#[cfg(test)]\nprintln!();\n",
    );
    assert_eq!(seen, vec!["src/x.rs:2: eprintln!"]);
}

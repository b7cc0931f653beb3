//! Broken session folders, headers and logs given to `replay`, `report` and `resume`.
//! Readers never change a session; a refused resume appends nothing.

use super::fixtures::{edit_header, events, example, finished, gguf, header, s, unfinished};
use super::lab::{case, Case, Lab, Snapshot};
use std::io::Write;
use std::path::Path;

fn replay(lab: &Lab, dir: &Path) -> super::lab::Out {
    lab.run(&["replay", "--headless", "--speed", "0", &s(dir)])
}

fn report(lab: &Lab, dir: &Path) -> super::lab::Out {
    lab.run(&["report", &s(dir), "--out", &s(&lab.path("csv"))])
}

fn resume(lab: &Lab, dir: &Path) -> super::lab::Out {
    lab.run(&["resume", "--headless", &s(dir)])
}

/// Both readers refuse the session naming each phrase, and leave it as it was.
fn readers_refuse(lab: &Lab, dir: &Path, phrases: &[&str]) {
    let before = Snapshot::of(&[dir]);
    replay(lab, dir).fails(phrases);
    report(lab, dir).fails(phrases);
    before.unchanged();
}

/// Both readers show the session with a warning carrying each phrase.
fn readers_warn(lab: &Lab, dir: &Path, phrases: &[&str]) {
    let before = Snapshot::of(&[dir]);
    replay(lab, dir).warns(phrases);
    report(lab, dir).warns(phrases);
    before.unchanged();
}

/// `resume` refuses naming each phrase and appends nothing.
fn resume_refused(lab: &Lab, dir: &Path, phrases: &[&str]) {
    let before = Snapshot::of(&[&events(dir), &header(dir)]);
    resume(lab, dir).fails(phrases);
    before.unchanged();
}

fn append(path: &Path, bytes: &[u8]) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// The log with its line `n` (from 1) replaced.
fn replace_line(path: &Path, n: usize, with: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    lines[n - 1] = with.to_string();
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

pub fn cases() -> Vec<Case> {
    vec![
        case("a session that does not exist", |lab| {
            replay(lab, &lab.path("nope")).fails(&["no session", "nope"]);
            lab.run(&["report", "20990101-000000-none"])
                .fails(&["no session"]);
            resume(lab, &lab.path("nope")).fails(&["no session"]);
        }),
        case("a folder that is not a session", |lab| {
            let dir = lab.path("plain");
            std::fs::create_dir_all(&dir).unwrap();
            readers_refuse(lab, &dir, &["not a session folder", "header.json"]);
        }),
        case("a header that is not JSON", |lab| {
            let dir = example(lab);
            std::fs::write(header(&dir), "{\"format_version\": ").unwrap();
            readers_refuse(lab, &dir, &["header.json", "malformed JSON"]);
        }),
        case("a header without format_version", |lab| {
            let dir = example(lab);
            edit_header(&dir, |v| {
                v.as_object_mut().unwrap().remove("format_version");
            });
            readers_refuse(lab, &dir, &["header.json", "`format_version` is missing"]);
        }),
        case("a header whose format_version is text", |lab| {
            let dir = example(lab);
            edit_header(&dir, |v| v["format_version"] = "two".into());
            readers_refuse(lab, &dir, &["header.json", "must be a whole number", "two"]);
        }),
        case("a header from a newer seal-tui", |lab| {
            let dir = example(lab);
            edit_header(&dir, |v| v["format_version"] = 99.into());
            readers_refuse(lab, &dir, &["header.json", "newer seal-tui", "99"]);
        }),
        case("a header of the wrong shape", |lab| {
            let dir = example(lab);
            edit_header(&dir, |v| v["config"] = "fast".into());
            readers_refuse(lab, &dir, &["header.json", "malformed session header"]);
        }),
        case("a header that is a folder", |lab| {
            let dir = example(lab);
            std::fs::remove_file(header(&dir)).unwrap();
            std::fs::create_dir_all(header(&dir)).unwrap();
            readers_refuse(lab, &dir, &["header.json"]);
        }),
        case("a session without its log", |lab| {
            let dir = example(lab);
            std::fs::remove_file(events(&dir)).unwrap();
            readers_refuse(lab, &dir, &["events.jsonl", "missing"]);
        }),
        case("a session with an empty log", |lab| {
            let dir = example(lab);
            std::fs::write(events(&dir), "").unwrap();
            readers_refuse(lab, &dir, &["events.jsonl", "empty"]);
        }),
        case("a log of nothing but garbage", |lab| {
            let dir = example(lab);
            std::fs::write(events(&dir), "garbage\nmore garbage\n").unwrap();
            readers_refuse(
                lab,
                &dir,
                &["events.jsonl", "no readable record", "2 damaged"],
            );
        }),
        case("a log that is a folder", |lab| {
            let dir = example(lab);
            std::fs::remove_file(events(&dir)).unwrap();
            std::fs::create_dir_all(events(&dir)).unwrap();
            readers_refuse(lab, &dir, &["events.jsonl"]);
        }),
        case("a log whose last line was cut short (a crash)", |lab| {
            let dir = example(lab);
            append(&events(&dir), b"{\"t\":99.0,\"type\":\"mode_ch");
            readers_warn(lab, &dir, &["cut short"]);
        }),
        case("a log with a corrupt line in the middle", |lab| {
            let dir = example(lab);
            replace_line(&events(&dir), 5, "{\"t\": 1.0, \"type\": ");
            readers_warn(lab, &dir, &["line 5", "not a valid record"]);
        }),
        case("a log with an event this build does not know", |lab| {
            let dir = example(lab);
            replace_line(&events(&dir), 3, "{\"t\":1.0,\"type\":\"teleported\"}");
            readers_warn(lab, &dir, &["line 3", "teleported"]);
        }),
        case("a log with a line that is not UTF-8", |lab| {
            let dir = example(lab);
            append(&events(&dir), b"\xff\xfe{\"t\":1}\n");
            readers_warn(lab, &dir, &["not a valid record"]);
        }),
        case(
            "recorded text carrying terminal escapes is shown inert",
            |lab| {
                let dir = example(lab);
                let line =
                    r#"{"t":0.5,"type":"warning","message":"\u001b]0;pwned\u0007\u001b[2Jhello"}"#;
                replace_line(&events(&dir), 2, line);
                replay(lab, &dir).ok().says(&["␛]0;pwned␇␛[2Jhello"]);
                lab.run(&["report", &s(&dir), "--out", &s(&lab.path("csv"))])
                    .ok();
            },
        ),
        case("a report cell that would be a spreadsheet formula", |lab| {
            let dir = finished(lab);
            let text = std::fs::read_to_string(events(&dir)).unwrap();
            // The context's title becomes a formula.
            let text = text.replacen(
                "\"title\":\"",
                "\"title\":\"=HYPERLINK(\\\"http://x\\\")",
                1,
            );
            std::fs::write(events(&dir), text).unwrap();
            report(lab, &dir).ok();
            let csv: String = std::fs::read_dir(lab.path("csv"))
                .unwrap()
                .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
                .collect();
            assert!(csv.contains("'=HYPERLINK"), "{csv}");
            assert!(
                !csv.contains(",=HYPERLINK") && !csv.contains("\"=HYPERLINK"),
                "{csv}"
            );
        }),
        case("report --out naming a file", |lab| {
            let dir = example(lab);
            let out = lab.write("taken", "mine");
            let before = Snapshot::of(&[&out, &dir]);
            lab.run(&["report", &s(&dir), "--out", &s(&out)])
                .fails(&["CSV", "taken"]);
            before.unchanged();
        }),
        case("replay --speed -1", |lab| {
            let dir = example(lab);
            lab.run(&["replay", "--headless", "--speed", "-1", &s(&dir)])
                .fails(&["--speed -1"]);
        }),
        case("replay --speed nan", |lab| {
            let dir = example(lab);
            lab.run(&["replay", "--headless", "--speed", "nan", &s(&dir)])
                .fails(&["--speed NaN"]);
        }),
        case("resume of a finished run", |lab| {
            let dir = finished(lab);
            resume_refused(lab, &dir, &["finished", "nothing to resume", "replay"]);
        }),
        case("resume after the data file changed", |lab| {
            let dir = unfinished(lab);
            let data = lab.write(
                "data.json",
                std::fs::read(super::lab::root().join("assets/passages.json")).unwrap(),
            );
            edit_header(&dir, |v| v["config"]["task"]["data"] = s(&data).into());
            append(&data, b"\n");
            resume_refused(lab, &dir, &["data.json", "data file has changed"]);
        }),
        case("resume after the model was removed", |lab| {
            let dir = unfinished(lab);
            let model = lab.write("m.gguf", std::fs::read(gguf()).unwrap());
            edit_header(&dir, |v| {
                v["model_path"] = s(&model).into();
                v["config"]["model"]["path"] = s(&model).into();
            });
            std::fs::remove_file(&model).unwrap();
            resume_refused(lab, &dir, &["m.gguf"]);
        }),
        case("resume after the model file changed", |lab| {
            let dir = unfinished(lab);
            let model = lab.write("m.gguf", std::fs::read(gguf()).unwrap());
            edit_header(&dir, |v| {
                v["model_path"] = s(&model).into();
                v["config"]["model"]["path"] = s(&model).into();
            });
            // Another model at the same path.
            std::fs::write(
                &model,
                std::fs::read(crate::common::tiny_gguf(seal_tui::engine::Arch::Llama)).unwrap(),
            )
            .unwrap();
            let before = Snapshot::of(&[&events(&dir)]);
            resume(lab, &dir).fails(&["model has changed"]);
            before.only_grew();
        }),
        case(
            "resume with an invalid configuration pinned in the header",
            |lab| {
                let dir = unfinished(lab);
                edit_header(&dir, |v| v["config"]["self_edit"]["k"] = 0.into());
                resume_refused(lab, &dir, &["pinned configuration", "self_edit.k"]);
            },
        ),
        case("resume after the self-edit template was removed", |lab| {
            let dir = unfinished(lab);
            edit_header(&dir, |v| {
                v["config"]["knowledge"]["template"] = s(&lab.path("gone.toml")).into()
            });
            resume_refused(lab, &dir, &["knowledge.template", "gone.toml"]);
        }),
        case("resume of a log whose last line was cut short", |lab| {
            let dir = unfinished(lab);
            let intact = std::fs::read(events(&dir)).unwrap();
            append(&events(&dir), b"{\"t\":99.0,\"type\":\"stat");
            resume(lab, &dir).ok().says(&["cut short"]);
            let after = std::fs::read(events(&dir)).unwrap();
            assert!(after.starts_with(&intact), "the intact records changed");
            let r = seal_tui::session::LogReader::read(&events(&dir)).unwrap();
            assert!(r.issues.is_empty(), "{:?}", r.issues);
            assert!(
                seal_tui::record::RunState::from_events(r.records.iter().map(|r| &r.event))
                    .finished
            );
        }),
    ]
}

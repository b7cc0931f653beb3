//! Live runs given bad commands, a second writer, signals and a learning rate that blows up.
//! Nothing recorded is lost: every log stays a sequence of whole records, and a killed run
//! resumes to its end.

use super::fixtures::{base_config, config_with, events, s, write_config};
use super::lab::{case, finish, wait_for, Case, Lab, Snapshot};
use seal_tui::record::RunState;
use seal_tui::session::LogReader;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

fn state(dir: &Path) -> RunState {
    let r = LogReader::read(&events(dir)).unwrap();
    RunState::from_events(r.records.iter().map(|r| &r.event))
}

/// Every line of the log is a whole record (a torn tail is allowed only mid-crash).
fn log_is_whole(dir: &Path) {
    let r = LogReader::read(&events(dir)).unwrap();
    assert!(
        r.issues
            .iter()
            .all(|i| matches!(i, seal_tui::session::LogIssue::TornTail { .. })),
        "damaged log: {:?}",
        r.issues
    );
}

/// Starts a headless run on the base configuration with `extra` flags, stdin held open.
fn start(lab: &Lab, edits: &[(&str, Option<&str>)], extra: &[&str]) -> Child {
    let cfg = config_with(lab, edits);
    let mut args = vec!["run", "--headless", "--config"];
    let cfg = s(&cfg);
    args.push(&cfg);
    args.extend_from_slice(extra);
    lab.cmd(&args).spawn()
}

/// Waits for a line on the child's stdout containing `what`; returns the lines read.
fn read_until(child: &mut Child, what: &str) -> Vec<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let until = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                let hit = line.contains(what);
                seen.push(line);
                if hit {
                    // Keep draining so the child never blocks on a full pipe.
                    std::thread::spawn(move || for _ in rx {});
                    return seen;
                }
            }
            Err(_) => panic!("no line with {what:?}; saw:\n{}", seen.join("\n")),
        }
    }
}

fn signal(child: &Child, sig: i32) {
    // Safety: a plain kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// Kills a run with `sig` once it is training, then resumes it to the end.
fn killed_then_resumed(lab: &Lab, sig: i32) {
    let mut child = start(lab, &[("inner.epochs", Some("30"))], &[]);
    read_until(&mut child, "self-edit sampled");
    signal(&child, sig);
    let status = child.wait().unwrap();
    assert!(!status.success(), "the run was not stopped by signal {sig}");
    let dir = lab.session();
    log_is_whole(&dir);
    let before = Snapshot::of(&[&events(&dir)]);
    lab.run(&["resume", "--headless", &s(&dir)]).ok();
    before.only_grew();
    log_is_whole(&dir);
    assert!(state(&dir).finished, "the resumed run did not finish");
}

pub fn cases() -> Vec<Case> {
    vec![
        case(
            "approval required with stdin closed: says what it waits for, then fails",
            |lab| {
                let cfg = config_with(lab, &[("outer.approval_required", Some("true"))]);
                lab.run(&["run", "--headless", "--config", &s(&cfg)])
                    .fails(&[
                        "waiting for a decision on r1 c1 e1",
                        "command input closed",
                        "r1 c1 e1",
                    ])
                    .within(60.0);
                log_is_whole(&lab.session());
            },
        ),
        case("step mode with stdin closed", |lab| {
            let cfg = config_with(lab, &[]);
            lab.run(&["run", "--headless", "--mode", "step", "--config", &s(&cfg)])
                .fails(&["step mode", "command input closed"])
                .within(60.0);
        }),
        case("paused mode with stdin closed", |lab| {
            let cfg = config_with(lab, &[]);
            lab.run(&[
                "run",
                "--headless",
                "--mode",
                "paused",
                "--config",
                &s(&cfg),
            ])
            .fails(&["paused mode", "command input closed"])
            .within(60.0);
        }),
        case("a decision for a self-edit that does not exist", |lab| {
            let cfg = config_with(lab, &[]);
            lab.cmd(&["run", "--headless", "--config", &s(&cfg)])
                .stdin("{\"command\":\"approve\",\"id\":\"r1 c1 e9\"}\n")
                .go()
                .ok()
                .says(&[
                    "warning: command failed: there is no self-edit r1 c1 e9 (yet) to decide on",
                ]);
        }),
        case("an edit for a self-edit that does not exist", |lab| {
            let cfg = config_with(lab, &[]);
            lab.cmd(&["run", "--headless", "--config", &s(&cfg)])
                .stdin("{\"command\":\"edit\",\"id\":\"r3 c1 e1\",\"text\":\"x\"}\n")
                .go()
                .ok()
                .says(&["there is no self-edit r3 c1 e1"]);
        }),
        case("a command line that is not JSON", |lab| {
            let cfg = config_with(lab, &[]);
            lab.cmd(&["run", "--headless", "--config", &s(&cfg)])
                .stdin("approve r1 c1 e1\n")
                .go()
                .ok()
                .says(&["error: not a command", "approve r1 c1 e1"]);
        }),
        case("a command of an unknown kind", |lab| {
            let cfg = config_with(lab, &[]);
            lab.cmd(&["run", "--headless", "--config", &s(&cfg)])
                .stdin("{\"command\":\"aprove\",\"id\":\"r1 c1 e1\"}\n")
                .go()
                .ok()
                .says(&["error: not a command", "aprove"]);
        }),
        case("a command with a malformed id", |lab| {
            let cfg = config_with(lab, &[]);
            lab.cmd(&["run", "--headless", "--config", &s(&cfg)])
                .stdin("{\"command\":\"approve\",\"id\":\"round one\"}\n")
                .go()
                .ok()
                .says(&["error: not a command", "round one"]);
        }),
        case(
            "a second writer while the first still runs (resume after an SSH drop)",
            |lab| {
                let mut first = start(lab, &[], &["--mode", "step"]);
                // Once its mode is recorded, a step-mode run writes nothing until a step comes,
                // so any change to the log after that would be the second writer's.
                wait_for(60, "the first run to idle in step mode", || {
                    lab.session_dirs().first().is_some_and(|d| {
                        std::fs::read_to_string(d.join("lock")).is_ok_and(|t| t.starts_with("pid"))
                            && std::fs::read_to_string(events(d))
                                .is_ok_and(|t| t.contains("\"type\":\"mode_changed\""))
                    })
                });
                let dir = lab.session();
                let before = Snapshot::of(&[&events(&dir)]);
                let pid = format!("pid {}", first.id());
                lab.run(&["resume", "--headless", &s(&dir)]).fails(&[
                    "in use by",
                    &pid,
                    "on host",
                    "one writer",
                ]);
                before.unchanged();
                // Readers work meanwhile.
                lab.run(&["replay", "--headless", "--speed", "0", &s(&dir)])
                    .ok();
                lab.run(&["report", &s(&dir), "--out", &s(&lab.path("csv"))])
                    .ok();
                drop(first.stdin.take());
                let out = finish(
                    first,
                    Instant::now(),
                    Duration::from_secs(60),
                    "first run".into(),
                );
                out.fails(&["step mode"]);
                log_is_whole(&dir);
            },
        ),
        case(
            "a stale lock left by a killed writer is taken over",
            |lab| {
                let mut first = start(lab, &[], &["--mode", "step"]);
                wait_for(60, "the first run's lock", || {
                    lab.session_dirs()
                        .first()
                        .is_some_and(|d| d.join("header.json").exists() && d.join("lock").exists())
                });
                signal(&first, libc::SIGKILL);
                first.wait().unwrap();
                let dir = lab.session();
                let held = std::fs::read_to_string(dir.join("lock")).unwrap();
                assert!(held.contains(&format!("pid {}", first.id())), "{held}");
                lab.run(&["resume", "--headless", &s(&dir)]).ok();
                assert!(state(&dir).finished);
                log_is_whole(&dir);
            },
        ),
        case("SIGKILL mid-run, then resume", |lab| {
            killed_then_resumed(lab, libc::SIGKILL)
        }),
        case("SIGTERM mid-run, then resume", |lab| {
            killed_then_resumed(lab, libc::SIGTERM)
        }),
        case("SIGINT mid-run, then resume", |lab| {
            killed_then_resumed(lab, libc::SIGINT)
        }),
        case(
            "SIGHUP (the SSH session dropped) mid-run, then resume",
            |lab| killed_then_resumed(lab, libc::SIGHUP),
        ),
        case("output piped into a reader that stops (SIGPIPE)", |lab| {
            let cfg = write_config(lab, &base_config());
            lab.run(&["run", "--headless", "--config", &s(&cfg)]).ok();
            let dir = lab.session();
            let mut child = lab
                .cmd(&["replay", "--headless", "--speed", "0", &s(&dir)])
                .spawn();
            drop(child.stdout.take());
            let out = finish(
                child,
                Instant::now(),
                Duration::from_secs(30),
                "replay | closed".into(),
            );
            out.sane();
            assert!(!out.stderr.contains("error"), "{}", out.show());
        }),
        case(
            "an inner-loop learning rate that blows the weights up",
            |lab| {
                let cfg = config_with(
                    lab,
                    &[
                        ("inner.learning_rate", Some("10.0")),
                        ("inner.epochs", Some("3")),
                    ],
                );
                lab.run(&["run", "--headless", "--config", &s(&cfg)])
                    .ok()
                    .says(&["finetune failed: training diverged", "times the weight"]);
                let st = state(&lab.session());
                assert!(st.finished);
                let edit = &st.rounds[0].contexts[0].edits[0];
                assert!(edit
                    .train
                    .error
                    .as_deref()
                    .is_some_and(|e| e.contains("diverged")));
                assert_eq!(
                    st.rounds[0].contexts[0].kept, None,
                    "a diverged edit was kept"
                );
            },
        ),
        case("a policy learning rate that blows the weights up", |lab| {
            let cfg = config_with(
                lab,
                &[
                    ("policy.train.learning_rate", Some("10.0")),
                    ("policy.train.epochs", Some("3")),
                ],
            );
            lab.run(&["run", "--headless", "--config", &s(&cfg)])
                .ok()
                .says(&["no policy update", "diverged"]);
            assert!(state(&lab.session()).finished);
            assert!(
                !lab.session().join("policy").exists(),
                "a diverged policy was saved"
            );
        }),
    ]
}

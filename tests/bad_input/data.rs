//! Broken data files: passages for a run or `eval`, training rows for `finetune`, synthetic
//! data. A run refused at the door leaves no session folder behind.

use super::fixtures::{config_with, gguf, s};
use super::lab::{case, Case, Lab, Snapshot};
use std::path::Path;

/// A headless run on the tiny model with `task.data` at `data`; it must fail naming each
/// phrase and leave no session folder.
fn run_fails(lab: &Lab, data: &Path, phrases: &[&str]) {
    run_fails_with(
        lab,
        &[("task.data", Some(&format!("{:?}", s(data))))],
        phrases,
    );
}

fn run_fails_with(lab: &Lab, edits: &[(&str, Option<&str>)], phrases: &[&str]) {
    let cfg = config_with(lab, edits);
    lab.run(&["run", "--headless", "--config", &s(&cfg)])
        .fails(phrases);
    assert!(
        lab.session_dirs().is_empty(),
        "a refused run left {:?}",
        lab.session_dirs()
    );
}

/// A passage whose title would retitle the terminal and clear the screen if printed raw.
const ESCAPED_PASSAGE: &str = r#"[{"title": "\u001b]0;pwned\u0007Lone\u001b[2J", "context": "Only one passage here.", "questions": [{"question": "How many?", "answer": "one"}]}]"#;

const ONE_PASSAGE: &str = r#"[{"title": "Lone", "context": "Only one passage here.", "questions": [{"question": "How many?", "answer": "one"}]}]"#;

fn finetune(lab: &Lab, data: &Path, extra: &[&str]) -> super::lab::Out {
    let out = lab.path("out-adapter");
    let mut args = vec![
        "finetune".to_string(),
        "-m".into(),
        s(&gguf()),
        "--data".into(),
        s(data),
        "--out".into(),
        s(&out),
        "--rank".into(),
        "4".into(),
        "--epochs".into(),
        "1".into(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    lab.run(&args)
}

fn finetune_fails(lab: &Lab, rows: &str, phrases: &[&str]) {
    let data = lab.write("rows.jsonl", rows);
    finetune(lab, &data, &[]).fails(phrases);
    assert!(!lab.path("out-adapter").exists(), "an adapter was written");
}

pub fn cases() -> Vec<Case> {
    vec![
        case("passages file that does not exist", |lab| {
            run_fails(lab, &lab.path("none.json"), &["task.data", "none.json"]);
        }),
        case("passages file that is empty", |lab| {
            let p = lab.write("empty.json", "");
            run_fails(lab, &p, &["task.data", "empty.json", "not valid JSON"]);
        }),
        case("passages file that is not JSON", |lab| {
            let p = lab.write("p.json", "title,context\nfoo,bar\n");
            run_fails(lab, &p, &["p.json", "not valid JSON"]);
        }),
        case("passages file of the wrong shape", |lab| {
            let p = lab.write("p.json", r#"{"version": "1.1"}"#);
            run_fails(lab, &p, &["p.json"]);
        }),
        case("passages file with no passages", |lab| {
            let p = lab.write("p.json", "[]");
            run_fails(lab, &p, &["p.json", "no passages"]);
        }),
        case("a passage without questions", |lab| {
            let p = lab.write("p.json", r#"[{"title":"A","context":"c","questions":[]}]"#);
            run_fails(lab, &p, &["p.json", "no questions"]);
        }),
        case("a question without gold answers", |lab| {
            let p = lab.write(
                "p.json",
                r#"[{"title":"A","context":"c","questions":[{"question":"q","answers":[]}]}]"#,
            );
            run_fails(lab, &p, &["p.json", "no gold answers"]);
        }),
        case("a passage whose text is a number", |lab| {
            let p = lab.write("p.json", r#"[{"title":"A","context":7,"questions":[]}]"#);
            run_fails(lab, &p, &["p.json", "context"]);
        }),
        case("a SQuAD file whose paragraphs have no questions", |lab| {
            let p = lab.write(
                "squad.json",
                r#"{"data":[{"title":"T","paragraphs":[{"context":"c","qas":[]}]}]}"#,
            );
            run_fails(lab, &p, &["squad.json", "no questions"]);
        }),
        case("passages file that is a folder", |lab| {
            let p = lab.path("folder.json");
            std::fs::create_dir_all(&p).unwrap();
            run_fails(lab, &p, &["folder.json"]);
        }),
        case("passages file that is not UTF-8", |lab| {
            let p = lab.write("latin1.json", b"[{\"title\": \"Caf\xe9\"}]");
            run_fails(lab, &p, &["latin1.json"]);
        }),
        case("more contexts per round than passages", |lab| {
            let p = lab.write("one.json", ONE_PASSAGE);
            run_fails_with(
                lab,
                &[
                    ("task.data", Some(&format!("{:?}", s(&p)))),
                    ("task.contexts_per_round", Some("2")),
                ],
                &["task.contexts_per_round = 2", "one.json", "1 passage"],
            );
        }),
        case(
            "a passage title carrying terminal escapes, run headless",
            |lab| {
                let p = lab.write("escapes.json", ESCAPED_PASSAGE);
                let cfg = config_with(lab, &[("task.data", Some(&format!("{:?}", s(&p))))]);
                // `sane` (inside `ok`) refuses any raw ESC or C1 byte in what was printed.
                lab.run(&["run", "--headless", "--config", &s(&cfg)])
                    .ok()
                    .says(&["␛]0;pwned␇Lone␛[2J"]);
            },
        ),
        case(
            "a passage title carrying terminal escapes, in eval",
            |lab| {
                let p = lab.write("escapes.json", ESCAPED_PASSAGE);
                lab.run(&[
                    "eval",
                    "-m",
                    &s(&gguf()),
                    "--data",
                    &s(&p),
                    "--passages",
                    "1",
                    "--conditions",
                    "base",
                    "--out",
                    &s(&lab.path("results.json")),
                ])
                .ok()
                .says(&["␛]0;pwned␇Lone␛[2J"]);
            },
        ),
        case(
            "eval whose journal was recorded with other settings",
            |lab| {
                eval_one_passage(lab, &["--seed", "0"]).ok();
                let journal = lab.path("results.trials.jsonl");
                let before = Snapshot::of(&[&journal]);
                eval_one_passage(lab, &["--seed", "1"]).fails(&[
                    "results.trials.jsonl",
                    "other settings",
                    "seed",
                    "--out",
                ]);
                before.unchanged();
            },
        ),
        case("eval whose journal file is something else", |lab| {
            let journal = lab.write("results.trials.jsonl", "{\"mine\": 1}\n{\"mine\": 2}\n");
            let before = Snapshot::of(&[&journal]);
            eval_one_passage(lab, &[]).fails(&["results.trials.jsonl", "not a journal"]);
            before.unchanged();
        }),
        case(
            "eval while another process writes the same journal",
            |lab| {
                use std::os::fd::AsRawFd;
                let journal = lab.write("results.trials.jsonl", "");
                let held = std::fs::File::open(&journal).unwrap();
                // Safety: flock on a descriptor this test owns for the whole case.
                let rc = unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
                assert_eq!(rc, 0);
                let before = Snapshot::of(&[&journal]);
                eval_one_passage(lab, &[])
                    .fails(&["results.trials.jsonl", "in use by another seal-tui process"]);
                before.unchanged();
                drop(held);
            },
        ),
        case(
            "a model file that fails only when the run loads it",
            |lab| {
                // It exists, so the door lets it through; the runner's setup then fails, and the
                // half-made session folder must not be left for later commands to trip over.
                let model = lab.write("broken.gguf", b"GGUF\x03\x00\x00\x00garbage");
                lab.run(&[
                    "run",
                    "--headless",
                    "--config",
                    &s(&config_with(lab, &[])),
                    "--model",
                    &s(&model),
                ])
                .fails(&["broken.gguf"]);
                assert!(
                    lab.session_dirs().is_empty(),
                    "a run that failed at setup left {:?}",
                    lab.session_dirs()
                );
            },
        ),
        case("held-out passages that are the training passages", |lab| {
            let copy = lab.write(
                "copy.json",
                std::fs::read(super::lab::root().join("assets/passages.json")).unwrap(),
            );
            run_fails_with(
                lab,
                &[("heldout.data", Some(&format!("{:?}", s(&copy))))],
                &["heldout.data", "also in task.data"],
            );
        }),
        case("held-out k = 0", |lab| {
            let p = lab.write("one.json", ONE_PASSAGE);
            run_fails_with(
                lab,
                &[
                    ("heldout.data", Some(&format!("{:?}", s(&p)))),
                    ("heldout.k", Some("0")),
                ],
                &["heldout.k = 0"],
            );
        }),
        case("an ARC run given a passages file", |lab| {
            run_fails_with(
                lab,
                &[("task.domain", Some("\"arc\""))],
                &["task", "passages.json"],
            );
        }),
        case("an ARC run selecting an unknown task", |lab| {
            let tasks = lab.write(
                "task.json",
                r#"{"train":[{"input":[[1]],"output":[[2]]}],"test":[{"input":[[1]],"output":[[2]]}]}"#,
            );
            run_fails_with(
                lab,
                &[
                    ("task.domain", Some("\"arc\"")),
                    ("task.data", Some(&format!("{:?}", s(&tasks)))),
                    ("task.tasks", Some("\"nosuchtask\"")),
                ],
                &["nosuchtask"],
            );
        }),
        // eval's passages.
        case("eval on a passages file that does not exist", |lab| {
            lab.run(&[
                "eval",
                "-m",
                &s(&gguf()),
                "--data",
                &s(&lab.path("none.json")),
            ])
            .fails(&["none.json"]);
        }),
        case("eval with a synthetic-data file that is not JSON", |lab| {
            let syn = lab.write("syn.jsonl", "{oops\n");
            lab.run(&[
                "eval",
                "-m",
                &s(&gguf()),
                "--passages",
                "1",
                "--conditions",
                "passage-synthetic",
                "--synthetic",
                &s(&syn),
            ])
            .fails(&["syn.jsonl", "line 1"]);
        }),
        // finetune's rows.
        case("finetune rows file that does not exist", |lab| {
            finetune(lab, &lab.path("none.jsonl"), &[]).fails(&["--data", "none.jsonl"]);
        }),
        case("finetune rows file that is empty", |lab| {
            finetune_fails(lab, "", &["rows.jsonl", "no training rows"]);
        }),
        case("finetune rows file of blank lines", |lab| {
            finetune_fails(lab, "\n\n   \n", &["rows.jsonl", "no training rows"]);
        }),
        case("finetune row that is not JSON", |lab| {
            finetune_fails(
                lab,
                "{\"text\": \"ok\"}\n{text: nope}\n",
                &["rows.jsonl: line 2", "malformed JSON"],
            );
        }),
        case("finetune row with neither text nor prompt", |lab| {
            finetune_fails(lab, "{\"body\": \"x\"}\n", &["line 1", "`text`"]);
        }),
        case("finetune row whose text is not a string", |lab| {
            finetune_fails(
                lab,
                "{\"text\": 42}\n",
                &["line 1", "`text` must be a string"],
            );
        }),
        case("finetune row with a prompt but no completion", |lab| {
            finetune_fails(lab, "{\"prompt\": \"q\"}\n", &["line 1", "completion"]);
        }),
        case(
            "finetune rows longer than max_seq_len (a warning with counts)",
            |lab| {
                let long = "word ".repeat(200);
                let data = lab.write(
                    "rows.jsonl",
                    format!("{{\"text\": \"{long}\"}}\n{{\"text\": \"short\"}}\n"),
                );
                finetune(lab, &data, &["--max-seq-len", "16"]).warns(&[
                    "1 of 2",
                    "--max-seq-len = 16",
                    "rows.jsonl",
                ]);
                assert!(lab.path("out-adapter/adapter_model.safetensors").exists());
            },
        ),
        case("finetune that diverges to NaN writes no adapter", |lab| {
            let data = lab.write("rows.jsonl", "{\"text\": \"The reactor is in Oruno.\"}\n");
            finetune(lab, &data, &["--lr", "1e30", "--max-grad-norm", "0"])
                .fails(&["diverged", "no adapter was written"]);
            assert!(!lab.path("out-adapter").exists());
        }),
        case(
            "finetune whose learning rate blows the weights up (no NaN)",
            |lab| {
                let data = lab.write("rows.jsonl", "{\"text\": \"The reactor is in Oruno.\"}\n");
                finetune(lab, &data, &["--lr", "10"]).fails(&[
                    "diverged",
                    "times the weight",
                    "no adapter was written",
                ]);
                assert!(!lab.path("out-adapter").exists());
            },
        ),
        case("finetune --out over an existing adapter", |lab| {
            let data = lab.write("rows.jsonl", "{\"text\": \"The reactor is in Oruno.\"}\n");
            finetune(lab, &data, &[]).ok();
            let out = lab.path("out-adapter");
            let before = Snapshot::of(&[&out]);
            finetune(lab, &data, &[]).fails(&["already there", "--force"]);
            before.unchanged();
            finetune(lab, &data, &["--force", "--train-seed", "3"]).ok();
        }),
        case("finetune --out that is a file", |lab| {
            let data = lab.write("rows.jsonl", "{\"text\": \"x y z\"}\n");
            let out = lab.write("out-adapter", "my notes");
            let before = Snapshot::of(&[&out]);
            finetune(lab, &data, &[]).fails(&["--out", "a file is there"]);
            before.unchanged();
        }),
        // Unlabeled text: only runs whose questions the model writes may use it.
        case("unlabeled text with a malformed line", |lab| {
            let p = lab.write(
                "texts.jsonl",
                "{\"title\": \"A\", \"text\": \"Fine.\"}\n{\"title\": \"B\", \"text\": \n",
            );
            self_run_fails(lab, &p, &["texts.jsonl", "line 2", "not valid JSON"]);
        }),
        case("unlabeled text whose line has no text", |lab| {
            let p = lab.write("texts.jsonl", "{\"title\": \"A\", \"body\": \"x\"}\n");
            self_run_fails(lab, &p, &["texts.jsonl", "line 1", "text"]);
        }),
        case("a folder of texts with no .txt file in it", |lab| {
            let dir = lab.path("texts");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("notes.md"), "not a passage").unwrap();
            self_run_fails(lab, &dir, &["texts", "no passages"]);
        }),
        case("a folder of texts with an empty .txt", |lab| {
            let dir = lab.path("texts");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("tides.txt"), "The Moon pulls the oceans.").unwrap();
            std::fs::write(dir.join("void.txt"), "  \n").unwrap();
            self_run_fails(lab, &dir, &["void.txt", "empty"]);
        }),
        case("unlabeled text graded on gold questions", |lab| {
            let dir = lab.path("texts");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("tides.txt"), "The Moon pulls the oceans.").unwrap();
            run_fails(lab, &dir, &["no gold questions", "questions"]);
        }),
        case("self-written questions with held-out passes", |lab| {
            let p = lab.write("one.json", ONE_PASSAGE);
            let held = lab.write("held.json", ONE_PASSAGE.replace("Lone", "Other"));
            run_fails_with(
                lab,
                &[
                    ("task.data", Some(&format!("{:?}", s(&p)))),
                    ("knowledge.questions", Some("\"self\"")),
                    ("heldout.data", Some(&format!("{:?}", s(&held)))),
                ],
                &["heldout", "self"],
            );
        }),
        case("eval --self-questions 0 and --questions maybe", |lab| {
            let p = lab.write("one.json", ONE_PASSAGE);
            let eval = |extra: &[&str]| {
                let mut args = vec!["eval", "-m"];
                let m = s(&gguf());
                let d = s(&p);
                args.extend([m.as_str(), "--data", d.as_str(), "--passages", "1"]);
                args.extend(extra);
                lab.run(&args)
            };
            eval(&["--questions", "self", "--self-questions", "0"]).fails(&["self-questions", "0"]);
            eval(&["--questions", "self", "--self-questions", "33"])
                .fails(&["self-questions", "33"]);
            eval(&["--questions", "maybe"]).fails(&["maybe", "both"]);
            assert!(!lab.path("eval-results.json").exists());
        }),
    ]
}

/// A run on `data` graded on questions the model writes must fail naming each phrase.
fn self_run_fails(lab: &Lab, data: &Path, phrases: &[&str]) {
    let data = format!("{:?}", s(data));
    run_fails_with(
        lab,
        &[
            ("task.data", Some(&data)),
            ("knowledge.questions", Some("\"self\"")),
        ],
        phrases,
    );
}

/// `eval` of the base row on one passage, its results (and so its journal) in the lab.
fn eval_one_passage(lab: &Lab, extra: &[&str]) -> super::lab::Out {
    let p = lab.write("one.json", ONE_PASSAGE);
    let (m, d, out) = (s(&gguf()), s(&p), s(&lab.path("results.json")));
    let mut args = vec!["eval", "-m", &m, "--data", &d, "--passages", "1"];
    args.extend(["--conditions", "base", "--out", &out]);
    args.extend(extra);
    lab.run(&args)
}

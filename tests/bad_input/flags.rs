//! Bad command-line flags: out-of-range numbers (negative ones read as numbers, not flags),
//! unknown choices, flags given where nothing reads them. Each is refused before a model loads.

use super::fixtures::{gguf, s};
use super::lab::{case, Case, Lab};

/// `seal-tui <args>` with the tiny model where `{m}` stands; must fail naming each phrase.
fn refused(args: &'static [&'static str], phrases: &'static [&'static str]) -> Case {
    let name = format!("seal-tui {}", args.join(" ")).replace("{m}", "MODEL");
    case(name, move |lab: &Lab| {
        let model = s(&gguf());
        let args: Vec<&str> = args
            .iter()
            .map(|a| if *a == "{m}" { model.as_str() } else { a })
            .collect();
        lab.run(&args).fails(phrases);
        assert!(lab.session_dirs().is_empty(), "a session folder was left");
    })
}

pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        // sample
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--temperature", "-1"],
            &["--temperature -1", "0 or more"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--temperature", "nan"],
            &["--temperature NaN"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--top-p", "0"],
            &["top_p = 0"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--top-p", "1.5"],
            &["top_p = 1.5"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--max-tokens", "0"],
            &["max_tokens = 0"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--max-tokens", "-5"],
            &["-5", "--max-tokens"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--device", "tpu"],
            &["tpu", "cuda:N"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--dtype", "f8"],
            &["f8", "bf16"],
        ),
        refused(
            &["sample", "-m", "{m}", "-p", "hi", "--quantize", "q4"],
            &["q4", "q8"],
        ),
        refused(
            &["sample", "-p", "hi", "-m", "/nonexistent/m.gguf"],
            &["/nonexistent/m.gguf"],
        ),
        refused(&["sample", "-m", "{m}"], &["--prompt"]),
        // eval
        refused(
            &["eval", "-m", "{m}", "--k", "0"],
            &["--k 0", "passage-self-edit"],
        ),
        refused(&["eval", "-m", "{m}", "--k", "-1"], &["-1", "--k"]),
        refused(&["eval", "-m", "{m}", "--passages", "0"], &["--passages 0"]),
        refused(
            &["eval", "-m", "{m}", "--offset", "99"],
            &["--offset 99", "passages.json", "holds 4"],
        ),
        refused(&["eval", "-m", "{m}", "--repeats", "0"], &["--repeats 0"]),
        refused(
            &["eval", "-m", "{m}", "--f1-threshold", "2"],
            &["--f1-threshold 2"],
        ),
        refused(&["eval", "-m", "{m}", "--top-p", "0"], &["--top-p 0"]),
        refused(
            &["eval", "-m", "{m}", "--conditions", "base,magic"],
            &["unknown condition", "magic"],
        ),
        refused(
            &["eval", "-m", "{m}", "--conditions", ","],
            &["--conditions", "names no condition"],
        ),
        refused(
            &["eval", "-m", "{m}", "--conditions", "passage-synthetic"],
            &["--synthetic FILE or --synthetic-from URL"],
        ),
        refused(
            &[
                "eval",
                "-m",
                "{m}",
                "--conditions",
                "base",
                "--synthetic-from",
                "http://127.0.0.1:9/v1",
            ],
            &["--synthetic-from", "add it to --conditions"],
        ),
        refused(
            &["eval", "-m", "{m}", "--conditions", "base,seal"],
            &["seal row needs --policy"],
        ),
        refused(
            &["eval", "-m", "{m}", "--grader", "judge-http"],
            &["--judge-url"],
        ),
        refused(
            &[
                "eval",
                "-m",
                "{m}",
                "--grader",
                "judge-http",
                "--judge-url",
                "ftp://x/y",
                "--judge-model",
                "j",
            ],
            &["ftp://x/y"],
        ),
        refused(
            &["eval", "-m", "{m}", "--grader", "oracle"],
            &["oracle", "judge-http"],
        ),
        refused(
            &[
                "eval",
                "-m",
                "{m}",
                "--grader",
                "judge-local",
                "--judge-local-model",
                "/nonexistent/j.gguf",
            ],
            &["--judge-local-model", "/nonexistent/j.gguf"],
        ),
        refused(
            &["eval", "-m", "{m}", "--prompts-dir", "/nonexistent/prompts"],
            &["/nonexistent/prompts"],
        ),
        refused(
            &[
                "eval",
                "-m",
                "{m}",
                "--synthetic",
                "/nonexistent/s.jsonl",
                "--conditions",
                "passage-synthetic",
            ],
            &["/nonexistent/s.jsonl"],
        ),
        refused(&["eval", "-m", "{m}", "--lr", "-1"], &["--lr -1"]),
        // finetune
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--lr",
                "0",
            ],
            &["--lr 0"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--lr",
                "-0.5",
            ],
            &["--lr -0.5"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--rank",
                "0",
            ],
            &["--rank 0"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--alpha",
                "-2",
            ],
            &["--alpha -2"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--targets",
                "q,wings",
            ],
            &["--targets", "wings"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--epochs",
                "0",
            ],
            &["--epochs 0"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--batch-size",
                "0",
            ],
            &["--batch-size 0"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--max-seq-len",
                "1",
            ],
            &["--max-seq-len 1"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--dropout",
                "1.5",
            ],
            &["--dropout 1.5"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--max-grad-norm",
                "-1",
            ],
            &["--max-grad-norm -1"],
        ),
        refused(
            &[
                "finetune",
                "-m",
                "{m}",
                "--data",
                "assets/passages.json",
                "--out",
                "/tmp/x",
                "--loss",
                "half",
            ],
            &["half", "completion"],
        ),
        // run, resume, replay, report
        refused(
            &["run", "--headless", "--mode", "fast"],
            &["fast", "paused"],
        ),
        refused(
            &["resume", "--headless", "20990101-000000-none"],
            &["no session", "20990101-000000-none"],
        ),
        refused(&["report", "20990101-000000-none"], &["no session"]),
        refused(&["replay"], &["SESSION"]),
        refused(&["frobnicate"], &["frobnicate"]),
        refused(
            &["--config", "assets/seal.toml", "report", "x"],
            &["--config", "after the subcommand"],
        ),
        // arc
        refused(
            &[
                "arc",
                "eval",
                "--data",
                "/nonexistent/arc.json",
                "--tasks",
                "x",
            ],
            &["/nonexistent/arc.json"],
        ),
    ];
    cases.push(case("arc eval --k 0", |lab| {
        let tasks = lab.write(
            "task.json",
            r#"{"train":[{"input":[[1]],"output":[[2]]}],"test":[{"input":[[1]],"output":[[2]]}]}"#,
        );
        lab.run(&[
            "arc",
            "eval",
            "-m",
            &s(&gguf()),
            "--data",
            &s(&tasks),
            "--k",
            "0",
        ])
        .fails(&["--k"]);
    }));
    cases
}

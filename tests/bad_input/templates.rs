//! Broken prompt templates: self-edit strategies, the answer template and the judge template.
//! Each is refused before a session folder exists, naming the file and the field.

use super::fixtures::{config_with, gguf, s};
use super::lab::{case, copy_dir, root, Case, Lab};
use std::path::PathBuf;

/// A run whose self-edit template is `text` (written as `tpl.toml`); it must fail naming the
/// file and each phrase.
fn strategy_refused(lab: &Lab, text: &str, phrases: &[&str]) {
    let tpl = lab.write("tpl.toml", text);
    let value = format!("{:?}", s(&tpl));
    let cfg = config_with(lab, &[("knowledge.template", Some(&value))]);
    let mut all = vec!["tpl.toml"];
    all.extend_from_slice(phrases);
    lab.run(&["run", "--headless", "--config", &s(&cfg)])
        .fails(&all);
    assert!(lab.session_dirs().is_empty());
}

/// A fine self-edit template with one line replaced (or removed, with an empty replacement).
fn strategy(replace: &str, with: &str) -> String {
    let good = "name = \"tpl\"\ndescription = \"d\"\nprompt = \"Notes on {title}: {passage}\"\n\
                max_tokens = 8\nsplit = \"whole\"\n";
    let out: String = good
        .lines()
        .map(|l| {
            if l.starts_with(replace) {
                with.to_string()
            } else {
                l.to_string()
            }
        })
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    out + "\n"
}

/// A copy of the prompts folder with `file` replaced by `text` (or removed when `None`).
fn prompts_with(lab: &Lab, file: &str, text: Option<&str>) -> PathBuf {
    let dir = lab.path("prompts");
    copy_dir(&root().join("prompts"), &dir);
    match text {
        Some(t) => std::fs::write(dir.join(file), t).unwrap(),
        None => std::fs::remove_file(dir.join(file)).unwrap(),
    }
    dir
}

/// A run on a spoilt prompts folder; `judge`: graded by an HTTP judge (so judge.toml is read).
fn prompts_refused(lab: &Lab, file: &str, text: Option<&str>, judge: bool, phrases: &[&str]) {
    let dir = prompts_with(lab, file, text);
    let dir = format!("{:?}", s(&dir));
    let grader =
        r#"{ kind = "judge-http", url = "http://127.0.0.1:9/v1/chat/completions", model = "j" }"#;
    let mut edits = vec![("knowledge.prompts_dir", Some(dir.as_str()))];
    if judge {
        edits.push(("knowledge.grader", Some(grader)));
    }
    let cfg = config_with(lab, &edits);
    let mut all = vec![file];
    all.extend_from_slice(phrases);
    lab.run(&["run", "--headless", "--config", &s(&cfg)])
        .fails(&all);
    assert!(lab.session_dirs().is_empty());
}

const ANSWER_GOOD: &str =
    "prompt = \"Topic: {title}\\nQuestion: {question}\\nAnswer:\"\nmax_tokens = 16\n";

pub fn cases() -> Vec<Case> {
    vec![
        case("self-edit template without {passage}", |lab| {
            strategy_refused(
                lab,
                &strategy("prompt", "prompt = \"Write notes about {title}.\""),
                &["{passage}", "without seeing the passage"],
            );
        }),
        case("self-edit template without {title}", |lab| {
            strategy_refused(
                lab,
                &strategy("prompt", "prompt = \"Write notes: {passage}\""),
                &["{title}"],
            );
        }),
        case("self-edit template with an unknown placeholder", |lab| {
            strategy_refused(
                lab,
                &strategy("prompt", "prompt = \"{title} {passage} {topic}\""),
                &["{topic}", "allowed"],
            );
        }),
        case("self-edit template with a lone closing brace", |lab| {
            strategy_refused(
                lab,
                &strategy("prompt", "prompt = \"{title} {passage} }\""),
                &["lone"],
            );
        }),
        case("self-edit template with an unclosed brace", |lab| {
            strategy_refused(
                lab,
                &strategy("prompt", "prompt = \"{title} {passage} {oops\""),
                &["unclosed"],
            );
        }),
        case("self-edit template whose name is not its file's", |lab| {
            strategy_refused(
                lab,
                &strategy("name", "name = \"other\""),
                &["`name`", "other"],
            );
        }),
        case("self-edit template without a prompt", |lab| {
            strategy_refused(lab, &strategy("prompt", ""), &["`prompt` is missing"]);
        }),
        case("self-edit template with an empty prompt", |lab| {
            strategy_refused(
                lab,
                &strategy("prompt", "prompt = \"  \""),
                &["`prompt` is empty"],
            );
        }),
        case("self-edit template with max_tokens = 0", |lab| {
            strategy_refused(
                lab,
                &strategy("max_tokens", "max_tokens = 0"),
                &["max_tokens"],
            );
        }),
        case("self-edit template without max_tokens", |lab| {
            strategy_refused(
                lab,
                &strategy("max_tokens", ""),
                &["`max_tokens` is missing"],
            );
        }),
        case("self-edit template without split", |lab| {
            strategy_refused(lab, &strategy("split", ""), &["`split` is missing"]);
        }),
        case("self-edit template with an unknown split", |lab| {
            strategy_refused(
                lab,
                &strategy("split", "split = \"paragraphs\""),
                &["paragraphs"],
            );
        }),
        case(
            "self-edit template with a separator but another split",
            |lab| {
                strategy_refused(
                    lab,
                    &(strategy("x", "") + "separator = \"---\"\n"),
                    &["separator"],
                );
            },
        ),
        case("self-edit template splitting on a blank separator", |lab| {
            strategy_refused(
                lab,
                &strategy("split", "split = \"separator\"\nseparator = \" \""),
                &["separator"],
            );
        }),
        case(
            "self-edit template that samples nothing but has a prompt",
            |lab| {
                strategy_refused(
                lab,
                "name = \"tpl\"\ndescription = \"d\"\nsamples = false\ninclude_passage = true\nprompt = \"x\"\n",
                &["samples = false", "prompt"],
            );
            },
        ),
        case(
            "self-edit template that samples nothing and trains on nothing",
            |lab| {
                strategy_refused(
                    lab,
                    "name = \"tpl\"\ndescription = \"d\"\nsamples = false\n",
                    &["include_passage"],
                );
            },
        ),
        case("self-edit template that is not TOML", |lab| {
            strategy_refused(lab, "name = \"tpl\nprompt = ", &["not a valid template"]);
        }),
        case("self-edit template with an unknown field", |lab| {
            strategy_refused(
                lab,
                &(strategy("x", "") + "temprature = 0.5\n"),
                &["temprature"],
            );
        }),
        case("self-edit template with a blank keep_after", |lab| {
            strategy_refused(
                lab,
                &(strategy("x", "") + "keep_after = \" \"\n"),
                &["keep_after"],
            );
        }),
        case("self-edit template with a negative temperature", |lab| {
            strategy_refused(
                lab,
                &(strategy("x", "") + "temperature = -1.0\n"),
                &["temperature"],
            );
        }),
        case("self-edit template path that does not exist", |lab| {
            let cfg = config_with(
                lab,
                &[("knowledge.template", Some("\"/nonexistent/tpl.toml\""))],
            );
            lab.run(&["run", "--headless", "--config", &s(&cfg)])
                .fails(&["knowledge.template", "tpl.toml"]);
        }),
        // The answer template.
        case("answer template without {question}", |lab| {
            prompts_refused(
                lab,
                "answer.toml",
                Some("prompt = \"Say something about {title}.\"\nmax_tokens = 16\n"),
                false,
                &["{question}"],
            );
        }),
        case("answer template that shows the passage", |lab| {
            prompts_refused(
                lab,
                "answer.toml",
                Some("prompt = \"{passage}\\n{question}\"\nmax_tokens = 16\n"),
                false,
                &["{passage}", "allowed"],
            );
        }),
        case("answer template with max_tokens = 0", |lab| {
            prompts_refused(
                lab,
                "answer.toml",
                Some(&ANSWER_GOOD.replace("16", "0")),
                false,
                &["max_tokens"],
            );
        }),
        case("answer template missing", |lab| {
            prompts_refused(lab, "answer.toml", None, false, &["cannot read"]);
        }),
        case("answer template that is not TOML", |lab| {
            prompts_refused(
                lab,
                "answer.toml",
                Some("prompt = [\n"),
                false,
                &["not a valid template"],
            );
        }),
        // The judge template.
        case("judge template without {answer}", |lab| {
            prompts_refused(
                lab,
                "judge.toml",
                Some("prompt = \"Question: {question}\\nGold: {gold_answers}\\nYes or no?\"\nmax_tokens = 4\n"),
                true,
                &["{answer}"],
            );
        }),
        case("judge template without {gold_answers}", |lab| {
            prompts_refused(
                lab,
                "judge.toml",
                Some("prompt = \"Question: {question}\\nAnswer: {answer}\\nYes or no?\"\nmax_tokens = 4\n"),
                true,
                &["{gold_answers}"],
            );
        }),
        case("judge template missing", |lab| {
            prompts_refused(lab, "judge.toml", None, true, &["cannot read"]);
        }),
        case(
            "eval with a self-edit strategy that does not exist",
            |lab| {
                lab.run(&["eval", "-m", &s(&gguf()), "--prompt", "no-such-strategy"])
                    .fails(&["no template", "no-such-strategy", "available"]);
            },
        ),
    ]
}

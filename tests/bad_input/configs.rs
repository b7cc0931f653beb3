//! Broken run configurations: each is refused before a session folder exists, with a message
//! naming the file (or section), the field and the value.

use super::fixtures::{config_with, s};
use super::lab::{case, Case, Lab};

/// A headless run on the base configuration with `edits`; it must fail naming each phrase and
/// leave no session folder.
fn refused(lab: &Lab, edits: &[(&str, Option<&str>)], phrases: &[&str]) {
    let cfg = config_with(lab, edits);
    lab.run(&["run", "--headless", "--config", &s(&cfg)])
        .fails(phrases);
    assert!(
        lab.session_dirs().is_empty(),
        "a refused run left {:?}",
        lab.session_dirs()
    );
}

/// One row: a name, one key set to a TOML value, and the phrases the refusal must carry.
fn row(
    name: &'static str,
    key: &'static str,
    value: &'static str,
    phrases: &'static [&'static str],
) -> Case {
    case(name, move |lab| {
        refused(lab, &[(key, Some(value))], phrases)
    })
}

pub fn cases() -> Vec<Case> {
    let mut cases = vec![
        case("a configuration that is not TOML", |lab| {
            let cfg = lab.write("run.toml", "[self_edit\nk = 2\n");
            lab.run(&["run", "--headless", "--config", &s(&cfg)])
                .fails(&["run.toml", "invalid run configuration"]);
            assert!(lab.session_dirs().is_empty());
        }),
        case("a configuration file that does not exist", |lab| {
            let cfg = lab.path("nope.toml");
            lab.run(&["run", "--headless", "--config", &s(&cfg)])
                .fails(&["cannot read", "nope.toml"]);
        }),
        case("a configuration path that is a folder", |lab| {
            let cfg = lab.path("cfg.toml");
            std::fs::create_dir_all(&cfg).unwrap();
            lab.run(&["run", "--headless", "--config", &s(&cfg)])
                .fails(&["cannot read", "cfg.toml"]);
        }),
        case("an unknown section", |lab| {
            refused(lab, &[("outr.rounds", Some("2"))], &["run.toml", "outr"]);
        }),
        case("an unknown field", |lab| {
            refused(lab, &[("outer.runds", Some("2"))], &["run.toml", "runds"]);
        }),
        case("run --model naming a file that does not exist", |lab| {
            let cfg = config_with(lab, &[]);
            lab.run(&[
                "run",
                "--headless",
                "--config",
                &s(&cfg),
                "--model",
                &s(&lab.path("gone.gguf")),
            ])
            .fails(&["model.path", "gone.gguf", "does not exist"]);
            assert!(lab.session_dirs().is_empty());
        }),
        case("a data path relative to nothing that exists", |lab| {
            refused(
                lab,
                &[("task.data", Some("\"nowhere/passages.json\""))],
                &["task.data", "nowhere/passages.json"],
            );
        }),
        case("an HTTP judge whose key variable is unset", |lab| {
            let judge = r#"{ kind = "judge-http", url = "http://127.0.0.1:9/v1/chat/completions", model = "j", api_key_env = "SEAL_TEST_NEVER_SET_KEY" }"#;
            refused(
                lab,
                &[("knowledge.grader", Some(judge))],
                &["api_key_env", "SEAL_TEST_NEVER_SET_KEY", "not set"],
            );
        }),
        case("a local judge model that does not exist", |lab| {
            refused(
                lab,
                &[
                    ("knowledge.grader", Some(r#"{ kind = "judge-local" }"#)),
                    ("knowledge.judge_model", Some("\"/nonexistent/judge.gguf\"")),
                ],
                &["knowledge.judge_model", "/nonexistent/judge.gguf"],
            );
        }),
    ];
    cases.extend([
        row("self_edit.k = 0", "self_edit.k", "0", &["run.toml", "self_edit.k"]),
        row("self_edit.k = -1", "self_edit.k", "-1", &["run.toml", "k"]),
        row("self_edit.k as text", "self_edit.k", "\"two\"", &["run.toml", "two"]),
        row("outer.rounds = 0", "outer.rounds", "0", &["outer.rounds"]),
        row("task.contexts_per_round = 0", "task.contexts_per_round", "0", &["task.contexts_per_round"]),
        row("eval.repeats = 0", "eval.repeats", "0", &["eval.repeats"]),
        row("model.device = tpu", "model.device", "\"tpu\"", &["tpu", "cuda:N"]),
        row("model.device = cuda:x", "model.device", "\"cuda:x\"", &["cuda:x"]),
        row("model.dtype = f8", "model.dtype", "\"f8\"", &["f8", "bf16"]),
        row("model.quantize = q4", "model.quantize", "\"q4\"", &["q4", "q8"]),
        row("model.checkpoint_layers = yes", "model.checkpoint_layers", "\"yes\"", &["run.toml", "yes", "boolean"]),
        row("outer.start_mode = fast", "outer.start_mode", "\"fast\"", &["fast", "paused"]),
        row("outer.save_adapters = some", "outer.save_adapters", "\"some\"", &["some", "kept"]),
        row("outer.min_gain = nan", "outer.min_gain", "nan", &["outer.min_gain"]),
        row("task.domain = vision", "task.domain", "\"vision\"", &["vision", "knowledge"]),
        row("knowledge.grader kind f2", "knowledge.grader", "{ kind = \"f2\" }", &["f2"]),
        row("an F1 threshold of 2", "knowledge.grader", "{ kind = \"f1\", threshold = 2.0 }", &["F1 threshold", "between 0 and 1"]),
        row("knowledge.template naming no template", "knowledge.template", "\"no-such-strategy\"", &["knowledge.template", "no-such-strategy", "available"]),
        row("knowledge.prompts_dir that does not exist", "knowledge.prompts_dir", "\"/nonexistent/prompts\"", &["knowledge.prompts_dir", "/nonexistent/prompts"]),
        row("model.path that does not exist", "model.path", "\"/nonexistent/m.gguf\"", &["model.path", "/nonexistent/m.gguf"]),
        row("inner.learning_rate = -1", "inner.learning_rate", "-1.0", &["inner", "learning_rate"]),
        row("inner.learning_rate = 0", "inner.learning_rate", "0.0", &["inner", "learning_rate"]),
        row("inner.learning_rate = inf", "inner.learning_rate", "inf", &["inner", "learning_rate"]),
        row("inner.lora.rank = 0", "inner.lora.rank", "0", &["inner", "rank"]),
        row("inner.lora.alpha = -8", "inner.lora.alpha", "-8.0", &["inner", "alpha"]),
        row("inner.lora.dropout = 1.5", "inner.lora.dropout", "1.5", &["inner", "dropout"]),
        row("inner.lora.targets naming no projection", "inner.lora.targets", "[\"x_proj\"]", &["x_proj"]),
        row("inner.lora.targets empty", "inner.lora.targets", "[]", &["inner", "target"]),
        row("inner.epochs = 0", "inner.epochs", "0", &["inner", "epochs"]),
        row("inner.batch_size = 0", "inner.batch_size", "0", &["inner", "batch_size"]),
        row("inner.grad_accum = 0", "inner.grad_accum", "0", &["inner", "grad_accum"]),
        row("inner.max_seq_len = 1", "inner.max_seq_len", "1", &["inner", "max_seq_len"]),
        row("inner.max_grad_norm = -1", "inner.max_grad_norm", "-1.0", &["inner", "max_grad_norm"]),
        row("inner.weight_decay = -1", "inner.weight_decay", "-1.0", &["inner", "weight_decay"]),
        row("inner.schedule = exp", "inner.schedule", "\"exp\"", &["exp", "cosine"]),
        row("inner.loss = half", "inner.loss", "\"half\"", &["half", "completion"]),
        row("policy.train.epochs = 0", "policy.train.epochs", "0", &["policy.train", "epochs"]),
        row("policy.train.learning_rate = -1", "policy.train.learning_rate", "-1.0", &["policy.train", "learning_rate"]),
        row("self_edit.temperature = -1", "self_edit.temperature", "-1.0", &["self_edit", "temperature"]),
        row("self_edit.top_p = 0", "self_edit.top_p", "0.0", &["self_edit", "top_p"]),
        row("self_edit.max_tokens = 0", "self_edit.max_tokens", "0", &["self_edit", "max_tokens"]),
        row("arc.views = 0", "arc.views", "0", &["arc", "views"]),
        row("arc.views = 9", "arc.views", "9", &["arc", "views"]),
        row("arc.max_steps = 0", "arc.max_steps", "0", &["arc", "max_steps"]),
        row("judge timeout_secs = 0", "knowledge.grader", "{ kind = \"judge-http\", url = \"http://127.0.0.1:9/x\", model = \"j\", timeout_secs = 0 }", &["knowledge.grader", "timeout_secs = 0"]),
        row("judge max_retries = 99", "knowledge.grader", "{ kind = \"judge-http\", url = \"http://127.0.0.1:9/x\", model = \"j\", max_retries = 99 }", &["knowledge.grader", "max_retries = 99"]),
        row("judge url that is not http", "knowledge.grader", "{ kind = \"judge-http\", url = \"ftp://127.0.0.1/x\", model = \"j\" }", &["knowledge.grader", "ftp://127.0.0.1/x"]),
        row("judge model empty", "knowledge.grader", "{ kind = \"judge-http\", url = \"http://127.0.0.1:9/x\", model = \"\" }", &["knowledge.grader", "model is empty"]),
        row("judge api_key_env empty", "knowledge.grader", "{ kind = \"judge-http\", url = \"http://127.0.0.1:9/x\", model = \"j\", api_key_env = \"\" }", &["knowledge.grader", "api_key_env is empty"]),
        row("judge with an unknown field", "knowledge.grader", "{ kind = \"judge-http\", url = \"http://127.0.0.1:9/x\", model = \"j\", api_key = \"sk-1\" }", &["api_key"]),
        row("seed as text", "seed", "\"abc\"", &["run.toml", "abc"]),
    ]);
    cases
}

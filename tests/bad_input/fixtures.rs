//! Good inputs the cases spoil: the tiny models, a small run configuration, recorded sessions.

use super::lab::{copy_dir, root, Lab};
use crate::common::{scratch, tiny_gguf, tiny_hf};
use seal_tui::engine::Arch;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The tiny Qwen2 model as a GGUF file (its own output head, so it answers something).
pub fn gguf() -> PathBuf {
    tiny_gguf(Arch::Qwen2)
}

/// The tiny Llama model as a Hugging Face folder with one weights file.
pub fn hf() -> PathBuf {
    tiny_hf(Arch::Llama)
}

/// The tiny Qwen2 model as a sharded Hugging Face folder.
pub fn hf_sharded() -> PathBuf {
    tiny_hf(Arch::Qwen2)
}

pub fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A self-edit template the tiny model's gibberish can be trained on; written once, so the
/// recorded sessions that name it can be resumed.
pub fn tiny_template() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let path = scratch().join("bad-input-tiny-whole.toml");
        std::fs::write(
            &path,
            "name = \"bad-input-tiny-whole\"\ndescription = \"test\"\n\
             prompt = \"Notes on {title}: {passage}\"\nmax_tokens = 8\nsplit = \"whole\"\n\
             prefix_title = true\ninclude_passage = true\n",
        )
        .unwrap();
        path
    })
    .clone()
}

/// The smallest real run: one round, one context, one self-edit, on the tiny model.
pub fn base_config() -> toml::Table {
    let text = format!(
        r#"
seed = 0
[model]
path = "{model}"
[task]
data = "{data}"
contexts_per_round = 1
[knowledge]
template = "{template}"
prompts_dir = "{prompts}"
[self_edit]
k = 1
max_tokens = 8
[inner]
epochs = 1
[inner.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]
[outer]
rounds = 1
min_gain = -1.0
[policy.train]
epochs = 1
[policy.train.lora]
rank = 4
alpha = 8.0
targets = ["q_proj", "v_proj"]
"#,
        model = s(&gguf()),
        data = s(&root().join("assets/passages.json")),
        template = s(&tiny_template()),
        prompts = s(&root().join("prompts")),
    );
    text.parse().unwrap()
}

/// Sets (or with `None`, removes) a dotted key such as `self_edit.k`.
pub fn edit(table: &mut toml::Table, key: &str, value: Option<toml::Value>) {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap();
    let mut t = table;
    for p in parts {
        t = t
            .entry(p)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .unwrap();
    }
    match value {
        Some(v) => {
            t.insert(last.into(), v);
        }
        None => {
            t.remove(last);
        }
    }
}

pub fn write_config(lab: &Lab, table: &toml::Table) -> PathBuf {
    lab.write("run.toml", toml::to_string(table).unwrap())
}

/// The base configuration with some keys set (a value written in TOML) or removed (`None`).
pub fn config_with(lab: &Lab, edits: &[(&str, Option<&str>)]) -> PathBuf {
    let mut t = base_config();
    for (key, value) in edits {
        let value = value.map(|v| {
            let doc: toml::Table = format!("v = {v}").parse().unwrap();
            doc["v"].clone()
        });
        edit(&mut t, key, value);
    }
    write_config(lab, &t)
}

/// A finished tiny session, recorded once per test process.
fn finished_master() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let lab = Lab::new();
        let cfg = write_config(&lab, &base_config());
        lab.run(&["run", "--headless", "--config", &s(&cfg)]).ok();
        let dir = scratch().join("bad-input-finished");
        copy_dir(&lab.session(), &dir);
        dir
    })
}

/// A session stopped before its first model work (a step-mode run whose input closed).
fn unfinished_master() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let lab = Lab::new();
        let cfg = write_config(&lab, &base_config());
        lab.run(&["run", "--headless", "--mode", "step", "--config", &s(&cfg)])
            .fails(&["step mode"]);
        let dir = scratch().join("bad-input-unfinished");
        copy_dir(&lab.session(), &dir);
        dir
    })
}

/// A copy of the finished tiny session in this lab's sessions folder.
pub fn finished(lab: &Lab) -> PathBuf {
    let dir = lab.sessions().join("finished");
    copy_dir(finished_master(), &dir);
    dir
}

/// A copy of an unfinished tiny session in this lab's sessions folder.
pub fn unfinished(lab: &Lab) -> PathBuf {
    let dir = lab.sessions().join("unfinished");
    copy_dir(unfinished_master(), &dir);
    // A lock file copied from the master is only text; nobody holds it.
    dir
}

/// A copy of the committed example session (recorded with the default model).
pub fn example(lab: &Lab) -> PathBuf {
    let dir = lab.sessions().join("example");
    copy_dir(&root().join("sessions/example"), &dir);
    dir
}

pub fn events(dir: &Path) -> PathBuf {
    dir.join("events.jsonl")
}

pub fn header(dir: &Path) -> PathBuf {
    dir.join("header.json")
}

/// The header as JSON, changed by `f`, written back.
pub fn edit_header(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = header(dir);
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

//! The journal a long table command keeps beside its results (`session::journal`): where it
//! lives, how the model is named in its settings, and what a person is told when it opens.

use anyhow::Result;
use seal_tui::engine::Model;
use seal_tui::session::Journal;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The journal beside the results: `arc-eval.json` keeps its work in `arc-eval.trials.jsonl`.
pub fn path_for(out: &Path) -> PathBuf {
    out.with_extension("trials.jsonl")
}

/// The model as a journal's settings name it: what its answers depend on, not where its file is.
pub fn model_settings(model: &Model) -> serde_json::Value {
    serde_json::json!({
        "name": model.info.name,
        "arch": model.info.arch,
        "parameters": model.info.parameters,
        "dtype": model.info.dtype,
        "quantized": model.info.quantized,
    })
}

/// `--policy` as a journal's SEAL trials name it.
pub fn policy_names(policy: &[PathBuf]) -> Vec<String> {
    policy.iter().map(|p| p.display().to_string()).collect()
}

/// Opens (or starts) the journal of `out`, saying what it found.
pub fn open<T: DeserializeOwned>(
    out: &Path,
    kind: &str,
    settings: &serde_json::Value,
) -> Result<(Journal, Vec<T>)> {
    let path = path_for(out);
    let opened = Journal::open::<T>(&path, kind, settings)?;
    for notice in &opened.notices {
        errln!("{notice}");
    }
    if !opened.entries.is_empty() {
        errln!(
            "continuing: {} finished piece(s) of work recorded in {}",
            opened.entries.len(),
            path.display()
        );
    }
    Ok((opened.journal, opened.entries))
}

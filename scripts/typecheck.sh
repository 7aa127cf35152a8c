#!/usr/bin/env bash
# mypy sees the package as installed: emostream/ with stream/, models/, training/,
# dashboards/ inside it.
# The repository keeps those as top-level folders (DESIGN.md), so build a tree of symlinks
# under build/typecheck that has the installed shape, and check that.
set -euo pipefail
mypy=${1:-.venv/bin/mypy}
root=$(cd "$(dirname "$0")/.." && pwd)
tree=$root/build/typecheck
rm -rf "$tree" && mkdir -p "$tree/emostream"
for f in "$root"/emostream/*; do ln -s "$f" "$tree/emostream/"; done
for sub in stream models training dashboards; do ln -s "$root/$sub" "$tree/emostream/$sub"; done
cd "$root" && "$mypy" -p emostream

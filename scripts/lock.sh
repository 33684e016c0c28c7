#!/usr/bin/env bash
# requirements/cpu.lock: the exact versions `make` installs, compiled by pip-tools from pyproject.toml.
#   scripts/lock.sh           regenerate it (keeps every pin that still satisfies pyproject.toml)
#   scripts/lock.sh --check   re-compile into a scratch copy and fail if it differs from the committed one
# pip compiles it (not uv or poetry): only pip finds the local CPU build of torch 2.13.0 on our machines.
set -euo pipefail
cd "$(dirname "$0")/.."
PIP_COMPILE="${PIP_COMPILE:-.venv/bin/pip-compile}"
LOCK=requirements/cpu.lock

compile() {  # $1: output file (pip-compile reuses the pins already in it)
  CUSTOM_COMPILE_COMMAND="scripts/lock.sh" "$PIP_COMPILE" -q --extra all --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
    -c requirements/constraints.txt -o "$1" pyproject.toml 2> >(grep -v "^WARNING: Location" >&2)
  # torch's local build is 2.13.0+cpu here; `torch==2.13.0` matches it (and reads as the README says).
  sed -i -E 's/^torch==([0-9.]+)\+cpu$/torch==\1/' "$1"
  # `all` names webtune's own extras, which pins webtune itself to this folder's path: drop that entry.
  sed -i -E '/^webtune @ /,/^[^ ]/{/^webtune @ |^    /d}' "$1"
}

if [[ "${1:-}" == "--check" ]]; then
  scratch="$(mktemp -d)"
  trap 'rm -rf "$scratch"' EXIT
  cp "$LOCK" "$scratch/cpu.lock"
  compile "$scratch/cpu.lock"
  if ! diff -u "$LOCK" "$scratch/cpu.lock"; then
    echo "requirements/cpu.lock disagrees with pyproject.toml: run scripts/lock.sh and commit the result" >&2
    exit 1
  fi
  echo "requirements/cpu.lock agrees with pyproject.toml"
else
  compile "$LOCK"
  echo "wrote $LOCK"
fi

#!/usr/bin/env bash
# The test command: every test of the workspace, through the real binaries and real
# SQLite files. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

cargo nextest run --workspace --profile ci "$@"
cargo test --workspace --doc --quiet

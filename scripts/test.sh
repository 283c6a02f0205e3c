#!/usr/bin/env bash
# The test command: every test of the workspace, through the real binaries and real
# SQLite files. Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

# The inference tests run the real SmolLM2 and MiniLM; fetch them first (a no-op when the
# cache already holds them with the right digests).
./scripts/fetch-models.sh
# The OpenAI compatibility test drives the node with the official Python SDK.
./scripts/setup-python.sh >/dev/null

cargo nextest run --workspace --profile ci "$@"
cargo test --workspace --doc --quiet

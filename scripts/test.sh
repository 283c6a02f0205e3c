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
# The image model's tests read the emoji dataset (an npm package) from the same cache.
./scripts/fetch-emoji.sh
# The OpenAI compatibility test drives the node with the official Python SDK.
./scripts/setup-python.sh >/dev/null
./scripts/setup-python.sh mcp >/dev/null
# Speech runs Debian's espeak-ng; the terminal UI's test drives `aura tui` in tmux.
./scripts/setup-speech.sh --tmux
# The cluster tests start their own PostgreSQL servers; here they may not skip.
./scripts/setup-postgres.sh
export AURA_REQUIRE_POSTGRES=1
# The WASM plugin tests build example plugins for wasm32-wasip2.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi
# The deployment files (Dockerfile, Kubernetes manifests), checked without a container engine.
./scripts/check-deploy.sh

# The web UI is built first, so the `aura` binary the tests build embeds it; its browser
# tests need Debian's Chromium (installed here when missing).
./scripts/setup-ui.sh
(cd ui && npm run build >/dev/null)

# aura-canonical is left out of the workspace run: there cedar turns serde_json's
# `preserve_order` on for every crate, so its build is not the one its features say; it runs
# alone below, once without that feature and once with it.
cargo nextest run --workspace --exclude aura-canonical --profile ci "$@"
# Hashed and signed JSON must not depend on serde_json's `preserve_order` (on in the
# workspace build, through cedar): the check crate alone, without it and with it, must
# write the same checked-in bytes.
cargo nextest run -p aura-canonical --profile ci
cargo nextest run -p aura-canonical --features preserve-order --profile ci
cargo test --workspace --doc --quiet

# The UI: unit tests of its proofs and lip-sync, then the browser tests against the
# debug `aura` the workspace tests just built.
(cd ui && npm test && AURA_BIN="${CARGO_TARGET_DIR:-$PWD/target}/debug/aura" npm run test:e2e)

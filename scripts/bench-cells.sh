#!/usr/bin/env bash
# The cell benchmark: a hardened one-shot cell beside bubblewrap, and executables per
# second in a long-lived cell beside plain fork+exec. Needs root. Extra arguments go to
# `aura-bench cells` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-cells.sh
cargo run --release --locked -p aura-bench -- cells "$@"

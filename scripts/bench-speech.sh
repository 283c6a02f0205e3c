#!/usr/bin/env bash
# The speech benchmark: `POST /v1/audio/speech` on a release `aura serve` beside espeak-ng
# alone with the node's own command line and the same text, alternating (ABAB), timing the
# first audio byte and the whole utterance (real-time factor). Needs espeak-ng
# (scripts/setup-speech.sh). Run it on a quiet machine; it prints the load average.
#
#   scripts/bench-speech.sh              # 10 rounds
#   ROUNDS=20 scripts/bench-speech.sh
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS="${ROUNDS:-10}"
NODE_PORT="${NODE_PORT:-18283}"

command -v espeak-ng >/dev/null || { echo "espeak-ng is missing: run scripts/setup-speech.sh" >&2; exit 1; }
cargo build --release -p aura-cli -p aura-bench
TARGET="${CARGO_TARGET_DIR:-target}/release"
AURA="$TARGET/aura"
BENCH="$TARGET/aura-bench"

WORK=$(mktemp -d)
PID=""
cleanup() {
  [ -n "$PID" ] && kill "$PID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
export AURA_HOME="$WORK/home"

"$AURA" init >/dev/null
cat > "$AURA_HOME/aura.toml" <<TOML
[http]
listen = "127.0.0.1:$NODE_PORT"
TOML
KEY=$("$AURA" --json apikey create bench --role operator | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
"$AURA" serve > "$WORK/serve.log" 2>&1 &
PID=$!
for _ in $(seq 1 300); do
  grep -q listening "$WORK/serve.log" && break
  sleep 0.1
done
"$BENCH" speech --node "127.0.0.1:$NODE_PORT" --token "$KEY" --rounds "$ROUNDS" "$@"

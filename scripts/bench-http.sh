#!/usr/bin/env bash
# The HTTP benchmark: an authenticated GET (`GET /v1/agents/{id}` with an operator API key)
# at fixed rates, the server pinned to CPU 0 and the load generator to CPU 1. Beside it, the
# peer: a minimal axum server answering the same bytes after a bearer-token comparison
# (`aura-bench http-peer`), pinned and driven the same way. The generator is open-loop
# (`aura-bench http-load`): latencies count from when each request was due.
#
#   scripts/bench-http.sh                 # rates 1000 2000 5000 10000, 10 s each
#   RATES="2000 4000" SECONDS_EACH=20 scripts/bench-http.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RATES="${RATES:-1000 2000 5000 10000}"
SECONDS_EACH="${SECONDS_EACH:-10}"
CONNECTIONS="${CONNECTIONS:-32}"
NODE_PORT="${NODE_PORT:-18281}"
PEER_PORT="${PEER_PORT:-18282}"

command -v taskset >/dev/null || { echo "taskset is missing (util-linux)" >&2; exit 1; }
cargo build --release -p aura-cli -p aura-bench
TARGET="${CARGO_TARGET_DIR:-target}/release"
AURA="$TARGET/aura"
BENCH="$TARGET/aura-bench"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
export AURA_HOME="$WORK/home"

"$AURA" init >/dev/null
# The per-caller rate limit would answer 429 long before the server's limit: lift it.
cat > "$AURA_HOME/aura.toml" <<TOML
[http]
listen = "127.0.0.1:$NODE_PORT"

[limits]
requests_per_second = 10000000
burst = 10000000
TOML
KEY=$("$AURA" --json apikey create bench --role operator | python3 -c 'import json,sys; print(json.load(sys.stdin)["secret"])')
taskset -c 0 "$AURA" serve > "$WORK/serve.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 300); do
  grep -q listening "$WORK/serve.log" && break
  sleep 0.1
done
export AURA_NODE="http://127.0.0.1:$NODE_PORT" AURA_API_KEY="$KEY"
AGENT=$("$AURA" --json agent create bench | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
PATH_GET="/v1/agents/$AGENT"
python3 - "$NODE_PORT" "$PATH_GET" "$KEY" "$WORK/body.json" <<'PY'
import sys, urllib.request
port, path, key, out = sys.argv[1:]
req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Authorization": f"Bearer {key}"})
open(out, "wb").write(urllib.request.urlopen(req).read())
PY
taskset -c 0 "$BENCH" http-peer --listen "127.0.0.1:$PEER_PORT" --body "$WORK/body.json" --token "$KEY" > "$WORK/peer.log" 2>&1 &
PIDS+=($!)
sleep 0.5

load() {
  taskset -c 1 "$BENCH" http-load --addr "127.0.0.1:$1" --path "$PATH_GET" --token "$KEY" \
    --rate "$2" --seconds "$SECONDS_EACH" --connections "$CONNECTIONS" --json
}

echo "GET $PATH_GET ($(wc -c < "$WORK/body.json") bytes), $CONNECTIONS connections, $SECONDS_EACH s per rate; load average: $(cut -d' ' -f1-3 /proc/loadavg)"
printf '| rate asked | Aura answered/s | Aura p50 | Aura p99 | errors | peer answered/s | peer p50 | peer p99 | p99 Aura / peer |\n'
printf '|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
for rate in $RATES; do
  aura=$(load "$NODE_PORT" "$rate")
  peer=$(load "$PEER_PORT" "$rate")
  python3 - "$rate" "$aura" "$peer" <<'PY'
import json, sys
rate, a, p = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
ms = lambda us: f"{us / 1000:.2f} ms"
ratio = a["p99_us"] / max(p["p99_us"], 1)
print(f"| {rate} | {a['achieved_per_second']:.0f} | {ms(a['p50_us'])} | {ms(a['p99_us'])} | {a['errors']} "
      f"| {p['achieved_per_second']:.0f} | {ms(p['p50_us'])} | {ms(p['p99_us'])} | {ratio:.2f} |")
PY
done

#!/usr/bin/env bash
# The main job: build Aura, then in a fresh data directory (.demo/home):
#  1. the signed ledger end to end: append, verify, export, prove an entry and check the
#     proof offline, tamper with the export and watch verification fail;
#  2. a node (`aura serve`, embedded SQLite store) with the default local model (SmolLM2,
#     pulled as a signed package): a mission on that model, governed and replayed;
#  3. a governed mission end to end on a reasoner that can finish it (an OpenAI-compatible
#     endpoint if given, else a scripted one): an agent reads and writes files under the
#     default Cedar policy, its delete is escalated to a person, approved from the CLI
#     with a signed approval, and the mission completes; then the mission is replayed from
#     the ledger and the ledger verified;
#  4. an image from Aura's own image model (aura-tiny-emoji) through the Images API, with
#     its signed receipt; the web console and image studio are served at the node's `/`
#     (AURA_DEMO_KEEP=1 keeps the node running at the end to look at them).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building the web UI (npm), then aura (release) with the UI embedded"
./scripts/setup-ui.sh --no-browser
# The node speaks (and the avatar lip-syncs) with Debian's espeak-ng.
./scripts/setup-speech.sh
(cd ui && npm run build)
cargo build --release -p aura-cli
AURA="${CARGO_TARGET_DIR:-target}/release/aura"

export AURA_HOME="$PWD/.demo/home"
rm -rf .demo && mkdir -p .demo

step "aura init: a node key (Ed25519, mode 0600) and an empty ledger"
"$AURA" init

step "aura ledger append: three entries from two agents, committed atomically"
AGENT=agent_01j8tpm400c5tq4r9dc5kpavkm
"$AURA" ledger append <<JSON
{"agent":"node","kind":"node.started","body":{"version":"demo"}}
{"agent":"$AGENT","kind":"mission.submitted","body":{"objective":"summarise the workspace"}}
{"agent":"$AGENT","kind":"tool.effect","body":{"tool":"fs.write","path":"summary.md","bytes":512}}
JSON

step "aura ledger show"
"$AURA" ledger show

step "aura ledger verify: chains, Merkle tree and every checkpoint signature"
"$AURA" ledger verify

step "aura ledger proof: prove the mission entry is in the signed ledger"
"$AURA" ledger proof "$AGENT:1" -o .demo/entry.proof

step "aura ledger check-proof: checked offline, with only the node's public key"
KEY=$("$AURA" --json key show | sed -n 's/.*"public_key": "\([0-9a-f]*\)".*/\1/p')
AURA_HOME=/nonexistent "$AURA" ledger check-proof .demo/entry.proof --public-key "$KEY"

step "aura ledger export, then verify the bundle as an outside auditor would"
"$AURA" ledger export -o .demo/ledger.bundle
AURA_HOME=/nonexistent "$AURA" ledger verify --bundle .demo/ledger.bundle --public-key "$KEY"

step "tamper with one byte of the export: verification names the entry and exits 3"
python3 - <<'PY'
data = bytearray(open(".demo/ledger.bundle", "rb").read())
data[len(data) // 2] ^= 0x01
open(".demo/tampered.bundle", "wb").write(bytes(data))
PY
set +e
AURA_HOME=/nonexistent "$AURA" ledger verify --bundle .demo/tampered.bundle --public-key "$KEY"
code=$?
set -e
if [ "$code" -ne 3 ]; then
  echo "expected exit code 3 from a tampered bundle, got $code" >&2
  exit 1
fi
echo "(exit code $code: tampering detected)"

PORT="${AURA_DEMO_PORT:-18080}"
export AURA_NODE="http://127.0.0.1:$PORT"
# The reasoner: an OpenAI-compatible endpoint if one is given (AURA_DEMO_OPENAI_BASE_URL,
# AURA_DEMO_OPENAI_MODEL, and the key in OPENAI_API_KEY), else the scripted provider
# replaying demo/summarise.jsonl, so the demo is the same on every machine.
if [ -n "${AURA_DEMO_OPENAI_BASE_URL:-}" ]; then
  REASONER_TOML="provider = \"openai\"
base_url = \"$AURA_DEMO_OPENAI_BASE_URL\"
model = \"${AURA_DEMO_OPENAI_MODEL:-gpt-4o-mini}\"
api_key_env = \"OPENAI_API_KEY\""
  REASONER_SAYS="the OpenAI-compatible endpoint at $AURA_DEMO_OPENAI_BASE_URL"
else
  REASONER_TOML="provider = \"scripted\"
path = \"$PWD/demo/summarise.jsonl\""
  REASONER_SAYS="the scripted provider replaying demo/summarise.jsonl (set AURA_DEMO_OPENAI_BASE_URL to use a model)"
fi
step "aura model pull smollm2: the default local model, as a signed, hash-verified package"
"$AURA" model pull smollm2

step "aura model pull aura-tiny-emoji: Aura's own image model, trained here by Aura's code (weights checked against their training record)"
"$AURA" model pull aura-tiny-emoji

step "aura serve: a node on the embedded store; local model smollm2 by default, and $REASONER_SAYS"
cat > "$AURA_HOME/aura.toml" <<TOML
[http]
listen = "127.0.0.1:$PORT"

[missions]
default_reasoner = "local"

[reasoners.local]
provider = "local"
model = "smollm2"
max_tokens = 256

[reasoners.demo]
$REASONER_TOML
TOML
"$AURA" serve > .demo/serve.log 2>&1 &
NODE_PID=$!
trap 'kill "$NODE_PID" 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  grep -q listening .demo/serve.log && break
  kill -0 "$NODE_PID" 2>/dev/null || { cat .demo/serve.log >&2; exit 1; }
  sleep 0.1
done
cat .demo/serve.log
echo "the web console is at $AURA_NODE/ while the demo runs (the node is stopped at the end)"

step "aura agent create: an agent at authority L2; the node signs its credential"
"$AURA" agent create writer --level L2
AGENT_ID=$("$AURA" --json agent list | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')

step "a workspace with a few files: $(ls demo/workspace | tr '\n' ' ')"
WORKSPACE="$AURA_HOME/workspaces/default/project"
mkdir -p "$WORKSPACE" && cp demo/workspace/* "$WORKSPACE/"

step "a mission on the local model (SmolLM2-135M, in this process, deterministic)"
# A 135M model is too small to carry a task through; what it does is still governed
# (every call checked by policy, run by the tools, recorded and signed) and replayable.
LOCAL_MISSION=$("$AURA" --json mission submit --agent "$AGENT_ID" --timeout 300 --max-steps 4 \
  --workspace project --objective "Read plan.md and write a one-line summary of it to summary.md" \
  --tool fs.read --tool fs.write --tool mission.finish \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
"$AURA" mission watch "$LOCAL_MISSION" || true
"$AURA" replay "$LOCAL_MISSION"

step "the same model over the OpenAI-compatible API (any OpenAI SDK works against $AURA_NODE/v1)"
python3 - "$AURA_NODE" <<'PY'
import json, sys, urllib.request
body = {"model": "smollm2", "max_tokens": 24, "messages": [{"role": "user", "content": "What is a ledger?"}]}
req = urllib.request.Request(sys.argv[1] + "/v1/chat/completions", data=json.dumps(body).encode(),
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req) as resp:
    answer = json.load(resp)
    print("answer: ", answer["choices"][0]["message"]["content"])
    print("usage:  ", answer["usage"])
    print("receipt:", resp.headers["x-aura-receipt"])
PY

step "aura receipts list: each turn of the local model, and the API request, left a usage receipt signed by the node"
"$AURA" receipts list
rm -f "$WORKSPACE/summary.md"

step "aura mission submit: the agent reads, summarises, and policy escalates its delete ($REASONER_SAYS)"
"$AURA" mission submit --agent "$AGENT_ID" --timeout 600 --workspace project \
  --objective "Summarise the plan and the notes into summary.md and clean up stale files" \
  --tool fs.list --tool fs.read --tool fs.write --tool fs.delete --tool mission.finish \
  --reasoner demo
MISSION=""
for _ in $(seq 1 300); do
  MISSION=$("$AURA" --json approvals | python3 -c 'import json,sys; a=json.load(sys.stdin); print(a[0]["mission"] if a else "")')
  [ -n "$MISSION" ] && break
  sleep 0.1
done
if [ -z "$MISSION" ]; then
  echo "the mission did not ask for an approval; here is where it stands:" >&2
  "$AURA" mission list >&2
  exit 1
fi
"$AURA" mission show "$MISSION" | sed -n '1,12p'

step "aura approvals, then a person at L3 approves with their own signed approval"
"$AURA" approvals
"$AURA" operator enroll alice --level L3
"$AURA" approve "$MISSION" --as alice --reason "the build log is stale; delete it"

step "aura mission watch: its whole record so far, then it resumes and completes"
"$AURA" mission watch "$MISSION"
echo "the workspace now holds: $(ls "$WORKSPACE" | tr '\n' ' ')"
echo "--- summary.md"
cat "$WORKSPACE/summary.md"

step "aura replay: the mission's record re-run, every state hash reproduced"
"$AURA" replay "$MISSION"

step "an image from Aura's own model through OpenAI's Images API, with its signed receipt"
python3 - "$AURA_NODE" <<'PY'
import base64, json, sys, urllib.request
body = {"model": "aura-tiny-emoji", "prompt": "red apple", "size": "64x64", "seed": 7,
        "response_format": "b64_json"}
req = urllib.request.Request(sys.argv[1] + "/v1/images/generations", data=json.dumps(body).encode(),
                             headers={"content-type": "application/json"})
with urllib.request.urlopen(req) as resp:
    answer = json.load(resp)
    png = base64.b64decode(answer["data"][0]["b64_json"])
    open(".demo/red-apple.png", "wb").write(png)
    print("wrote .demo/red-apple.png:", len(png), "bytes; receipt", resp.headers["x-aura-receipt"])
PY
echo "the image studio is at $AURA_NODE/#/studio (AURA_DEMO_KEEP=1 keeps the node running to look)"

step "aura ledger verify: the mission's every input, decision and effect, signed"
"$AURA" ledger verify

if [ "${AURA_DEMO_KEEP:-0}" = 1 ]; then
  step "the node keeps serving at $AURA_NODE/ (the console, the image studio, the avatar): Ctrl-C stops it"
  wait "$NODE_PID"
fi

step "done: the demo node lives in $AURA_HOME (stopping it)"

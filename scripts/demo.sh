#!/usr/bin/env bash
# The main job: build Aura, then show the signed ledger working end to end in a fresh data
# directory (.demo/home): create a node, append entries, verify, export, prove an entry
# and check the proof offline, then tamper with the export and watch verification fail.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "building aura (release)"
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

step "done: the demo node lives in $AURA_HOME"

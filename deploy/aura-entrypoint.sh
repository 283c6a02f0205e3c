#!/bin/sh
# The container entrypoint of an Aura node on a shared PostgreSQL store (deploy/Dockerfile).
#
#   aura-entrypoint serve     initialise this node if its data directory is empty (the first
#                             node to reach the database creates the cluster and its key),
#                             publish its public key for enrollment, wait until the cluster
#                             has enrolled it, then run `aura serve`
#   aura-entrypoint enroll    on the node holding the cluster key: enroll every key published
#                             in AURA_ENROLL_DIR (once each; enrolling twice changes nothing)
#   aura-entrypoint <other>   runs `aura <other>` (for example `aura-entrypoint cluster status`)
#
# Settings (environment):
#   AURA_STORE        postgresql://user@host/db (required for serve and enroll)
#   AURA_HOME         the data directory (default /var/lib/aura)
#   AURA_REGION       this node's region label (default empty)
#   AURA_LISTEN       where the API listens (default 0.0.0.0:8080; anything but loopback
#                     needs API keys, so serve creates one, see AURA_SECRETS_DIR)
#   AURA_ADVERTISE    the URL other nodes redirect this node's agents' requests to (written
#                     to `[store] advertise` in aura.toml; needed when listening on 0.0.0.0)
#   AURA_NAME         this node's name in AURA_ENROLL_DIR and AURA_SECRETS_DIR
#                     (default: the host name)
#   AURA_ENROLL_DIR   where nodes publish `<name>.pub` (their public key) and `<name>.region`
#                     for the enroll command; unset: publish nothing (enroll by hand, see
#                     docs/deploy.md)
#   AURA_SECRETS_DIR  where serve writes `<name>.key`, the secret of the operator API key it
#                     creates on first start (mode 600); unset: create none (bring your own
#                     with `aura apikey create`)
#   AURA_ENROLL_WAIT  seconds enroll waits for AURA_ENROLL_EXPECT keys (default 300)
#   AURA_ENROLL_EXPECT how many published keys enroll waits for (default: whatever is there)
set -eu

AURA="${AURA_BIN:-aura}"
export AURA_HOME="${AURA_HOME:-/var/lib/aura}"
NAME="${AURA_NAME:-$(hostname)}"
REGION="${AURA_REGION:-}"

say() { echo "aura-entrypoint: $*" >&2; }
need_store() {
  if [ -z "${AURA_STORE:-}" ]; then
    say "AURA_STORE is not set; hint: set it to the cluster's postgresql:// URL"
    exit 2
  fi
}
# The value of a "field":"value" pair in one line of JSON (aura's --json output).
json_field() { tr -d '\n ' | sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p"; }

public_key() { "$AURA" --json key show | json_field public_key; }

enrolled() {
  "$AURA" --json cluster nodes --store "$AURA_STORE" 2>/dev/null | tr -d '\n ' | grep -q "\"public_key\":\"$1\""
}

init_once() {
  if [ -f "$AURA_HOME/keys/node.key" ]; then
    return
  fi
  say "initialising $AURA_HOME on the cluster store (region '${REGION}')"
  "$AURA" init --store "$AURA_STORE" --region "$REGION" >&2
}

advertise_once() {
  [ -n "${AURA_ADVERTISE:-}" ] || return 0
  toml="$AURA_HOME/aura.toml"
  grep -q '^advertise *=' "$toml" 2>/dev/null && return 0
  if grep -q '^\[store\]' "$toml" 2>/dev/null; then
    sed -i "/^\[store\]/a advertise = \"$AURA_ADVERTISE\"" "$toml"
  else
    printf '\n[store]\nadvertise = "%s"\n' "$AURA_ADVERTISE" >> "$toml"
  fi
}

api_key_once() {
  [ -n "${AURA_SECRETS_DIR:-}" ] || return 0
  secret="$AURA_SECRETS_DIR/$NAME.key"
  [ -s "$secret" ] && return 0
  mkdir -p "$AURA_SECRETS_DIR"
  # The secret is printed once; keep it only in the secrets directory.
  umask 077
  "$AURA" --json apikey create --role operator "$NAME-operator" | json_field secret > "$secret.tmp"
  mv "$secret.tmp" "$secret"
  say "created an operator API key; its secret is in $secret"
}

publish_key() {
  [ -n "${AURA_ENROLL_DIR:-}" ] || return 0
  mkdir -p "$AURA_ENROLL_DIR"
  printf '%s\n' "$REGION" > "$AURA_ENROLL_DIR/$NAME.region"
  public_key > "$AURA_ENROLL_DIR/$NAME.pub.tmp"
  mv "$AURA_ENROLL_DIR/$NAME.pub.tmp" "$AURA_ENROLL_DIR/$NAME.pub"
}

wait_enrolled() {
  key=$(public_key)
  waited=0
  until enrolled "$key"; do
    if [ $((waited % 30)) -eq 0 ]; then
      say "waiting to be enrolled; on the node holding the cluster key run: aura cluster enroll $key --region '$REGION'"
    fi
    sleep 2
    waited=$((waited + 2))
  done
}

case "${1:-serve}" in
  serve)
    need_store
    init_once
    advertise_once
    api_key_once
    publish_key
    wait_enrolled
    exec "$AURA" serve --store "$AURA_STORE" --listen "${AURA_LISTEN:-0.0.0.0:8080}"
    ;;
  enroll)
    need_store
    dir="${AURA_ENROLL_DIR:?AURA_ENROLL_DIR is not set}"
    expect="${AURA_ENROLL_EXPECT:-0}"
    deadline=$(( $(date +%s) + ${AURA_ENROLL_WAIT:-300} ))
    while [ "$(ls "$dir"/*.pub 2>/dev/null | wc -l)" -lt "$expect" ]; do
      if [ "$(date +%s)" -ge "$deadline" ]; then
        say "only $(ls "$dir"/*.pub 2>/dev/null | wc -l) of $expect keys published in $dir; hint: check the other nodes' logs"
        exit 1
      fi
      sleep 1
    done
    for pub in "$dir"/*.pub; do
      [ -f "$pub" ] || continue
      key=$(cat "$pub")
      region=$(cat "${pub%.pub}.region" 2>/dev/null || true)
      "$AURA" cluster enroll "$key" --region "$region" --store "$AURA_STORE" >&2
    done
    ;;
  *)
    exec "$AURA" "$@"
    ;;
esac

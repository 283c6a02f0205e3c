#!/usr/bin/env bash
# Installs what the web UI needs to build and to be tested: the npm packages of ui/
# (exactly as ui/package-lock.json pins them) and, for the browser tests, Debian's
# Chromium. Idempotent: skips what is already there. `--no-browser` installs only the
# npm packages (enough to build the UI).
set -euo pipefail
cd "$(dirname "$0")/../ui"

if ! command -v npm >/dev/null 2>&1; then
  echo "setup-ui: npm is missing; install Node.js 20 or later (e.g. apt-get install -y nodejs npm)" >&2
  exit 1
fi

# npm ci reinstalls from scratch; do it only when the lockfile changed since the last install.
stamp=node_modules/.aura-lock.sha256
want=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup-ui: npm ci" >&2
  npm ci --no-audit --no-fund --loglevel=error
  echo "$want" > "$stamp"
fi

if [ "${1:-}" != "--no-browser" ]; then
  if [ ! -x /usr/bin/chromium ]; then
    echo "setup-ui: installing Debian's chromium for the browser tests" >&2
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup-ui: chromium is missing and this is not root; run: sudo apt-get install -y chromium" >&2
      exit 1
    fi
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  fi
fi

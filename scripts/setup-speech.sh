#!/usr/bin/env bash
# Installs what speech and the terminal UI need from Debian: espeak-ng, which the node runs
# as a separate process for /v1/audio/speech (it is GPL, so Aura never links it), and, with
# `--tmux`, tmux, in which the tests drive `aura tui`. Idempotent: installs only what is
# missing.
set -euo pipefail

want=()
command -v espeak-ng >/dev/null 2>&1 || want+=(espeak-ng)
if [ "${1:-}" = "--tmux" ]; then
  command -v tmux >/dev/null 2>&1 || want+=(tmux)
fi
[ ${#want[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "setup-speech: ${want[*]} missing and this is not root; run: sudo apt-get install -y ${want[*]}" >&2
  exit 1
fi
echo "setup-speech: installing ${want[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null

#!/usr/bin/env bash
# What the cell benchmark needs beyond a fresh Debian machine: bubblewrap, the peer that
# `aura-bench cells` measures Aura's cells against. Idempotent: installs only what is
# missing. (The cell tests themselves need only root and the kernel's cgroups.)
set -euo pipefail

if ! command -v bwrap >/dev/null 2>&1; then
  echo "installing bubblewrap (the cell benchmark's peer)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq bubblewrap >/dev/null
fi

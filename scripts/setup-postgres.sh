#!/usr/bin/env bash
# The cluster tests start throwaway PostgreSQL servers themselves (docs/cluster.md); they
# need Debian's PostgreSQL server binaries, installed here when missing. The service is
# not started: the tests run their own servers on private Unix sockets.
set -euo pipefail

if compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  exit 0
fi
echo "installing PostgreSQL" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq postgresql >/dev/null

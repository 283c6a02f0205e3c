#!/usr/bin/env bash
#! Installs the official `openai` Python package (pinned) that the API compatibility test
#! drives `aura serve` with, into a cache directory outside the clone
#! (`${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}/openai-$VERSION`), with the ordinary pip
#! client. Idempotent: an install that imports is kept. Prints the directory to put on
#! PYTHONPATH.
set -euo pipefail

PACKAGE=openai
VERSION=3.54.0
# `setup-python.sh mcp`: the official MCP SDK (`mcp`), which the MCP tests run as both
# server and client, installed and printed the same way.
if [ "${1:-}" = mcp ]; then
  PACKAGE=mcp
  VERSION=2.3.0
fi
ROOT="${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}"
DEST="$ROOT/$PACKAGE-$VERSION"

if PYTHONPATH="$DEST" python3 -c "import importlib.metadata as m, sys; import $PACKAGE; sys.exit(m.version('$PACKAGE') != '$VERSION')" 2>/dev/null; then
  echo "$DEST"
  exit 0
fi
echo "$PACKAGE: installing $PACKAGE==$VERSION into $DEST" >&2
rm -rf "$DEST.part"
mkdir -p "$ROOT"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$DEST.part" "$PACKAGE==$VERSION" >&2
rm -rf "$DEST"
mv "$DEST.part" "$DEST"
echo "$DEST"

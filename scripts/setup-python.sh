#!/usr/bin/env bash
#! Installs the official `openai` Python package (pinned) that the API compatibility test
#! drives `aura serve` with, into a cache directory outside the clone
#! (`${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}/openai-$VERSION`), with the ordinary pip
#! client. Idempotent: an install that imports is kept. Prints the directory to put on
#! PYTHONPATH.
set -euo pipefail

VERSION=3.54.0
ROOT="${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}"
DEST="$ROOT/openai-$VERSION"

if PYTHONPATH="$DEST" python3 -c "import openai, sys; sys.exit(openai.__version__ != '$VERSION')" 2>/dev/null; then
  echo "$DEST"
  exit 0
fi
echo "openai: installing openai==$VERSION into $DEST" >&2
rm -rf "$DEST.part"
mkdir -p "$ROOT"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$DEST.part" "openai==$VERSION" >&2
rm -rf "$DEST"
mv "$DEST.part" "$DEST"
echo "$DEST"

#!/usr/bin/env bash
#! Installs the Python packages Aura's tests drive it with (pinned), into a cache directory
#! outside the clone (`${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}/<packages>`), with the
#! ordinary pip client. Without an argument: the official `openai` package (the API
#! compatibility test against `aura serve`) and `prometheus-client`, whose text-format
#! parser reads `/metrics`. With `mcp`: the official MCP SDK, which the MCP tests run as
#! both server and client. Idempotent: an install that imports is kept. Prints the
#! directory to put on PYTHONPATH.
set -euo pipefail

if [ "${1:-}" = mcp ]; then
  PINS=("mcp==2.3.0")
  DIR_NAME="mcp-2.3.0"
else
  PINS=("openai==3.54.0" "prometheus-client==0.26.0")
  DIR_NAME="openai-3.54.0-prometheus-0.26.0"
fi
ROOT="${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}"
DEST="$ROOT/$DIR_NAME"

# Every pinned package imports from DEST at its pinned version.
if PYTHONPATH="$DEST" python3 - "${PINS[@]}" 2>/dev/null <<'PY'
import importlib, importlib.metadata as m, sys
for pin in sys.argv[1:]:
    name, version = pin.split("==")
    importlib.import_module(name.replace("-", "_"))
    if m.version(name) != version:
        sys.exit(1)
PY
then
  echo "$DEST"
  exit 0
fi
echo "python: installing ${PINS[*]} into $DEST" >&2
rm -rf "$DEST.part"
mkdir -p "$ROOT"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$DEST.part" "${PINS[@]}" >&2
rm -rf "$DEST"
mv "$DEST.part" "$DEST"
echo "$DEST"

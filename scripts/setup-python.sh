#!/usr/bin/env bash
#! Installs the Python packages Aura's tests drive it with (pinned), into a cache directory
#! outside the clone (`${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}/<packages>`), with the
#! ordinary pip client: the official `openai` package (the API compatibility test against
#! `aura serve`) and `prometheus-client`, whose text-format parser reads `/metrics`.
#! Idempotent: an install that imports is kept. Prints the directory to put on PYTHONPATH.
set -euo pipefail

VERSION=3.54.0
PROMETHEUS_VERSION=0.26.0
ROOT="${AURA_PYTHON_LIBS:-$HOME/.cache/aura/python}"
DEST="$ROOT/openai-$VERSION-prometheus-$PROMETHEUS_VERSION"

if PYTHONPATH="$DEST" python3 -c "
import sys, openai, prometheus_client
from importlib.metadata import version
sys.exit(openai.__version__ != '$VERSION' or version('prometheus-client') != '$PROMETHEUS_VERSION')" 2>/dev/null; then
  echo "$DEST"
  exit 0
fi
echo "python: installing openai==$VERSION prometheus-client==$PROMETHEUS_VERSION into $DEST" >&2
rm -rf "$DEST.part"
mkdir -p "$ROOT"
PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
  --target "$DEST.part" "openai==$VERSION" "prometheus-client==$PROMETHEUS_VERSION" >&2
rm -rf "$DEST"
mv "$DEST.part" "$DEST"
echo "$DEST"

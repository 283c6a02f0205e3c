#!/usr/bin/env bash
#! Installs the peer of the inference benchmark (`aura-bench infer`): llama.cpp, built from
#! source through the pinned Python package llama-cpp-python, into a virtual environment
#! (`${AURA_BENCH_VENV:-$HOME/.cache/aura/bench-venv}`). Idempotent. The build compiles
#! llama.cpp for this machine's CPU (GGML_NATIVE), as a user of llama.cpp would.
set -euo pipefail

VENV="${AURA_BENCH_VENV:-$HOME/.cache/aura/bench-venv}"
VERSION=0.3.36

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$VERSION')" 2>/dev/null; then
  echo "llama-cpp-python $VERSION: ready in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
echo "building llama-cpp-python $VERSION (llama.cpp from source; takes several minutes)" >&2
CMAKE_ARGS="-DGGML_NATIVE=ON -DLLAMA_CURL=OFF" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$VENV/bin/pip" install --quiet --no-cache-dir "llama-cpp-python==$VERSION"
"$VENV/bin/python" -c "import llama_cpp; print('llama-cpp-python', llama_cpp.__version__, 'ready in $VENV')"

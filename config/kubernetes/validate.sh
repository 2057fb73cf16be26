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

# gateway.yaml as its comments turn it to several upstreams (upstreams.yaml): the projected
# volume uncommented in place of openai-key, mounted, and PROXY_UPSTREAMS_FILE in place of
# OPENAI_API_KEY_FILE. The ConfigMap's file itself is started by tests/failover.rs.
variant="$here/../../target/gateway-with-upstreams.yaml"
"$venv/bin/python" - "$here/gateway.yaml" "$variant" <<'PY'
import re, sys, yaml
text = open(sys.argv[1], encoding="utf-8").read()
block = re.search(r"^        # - name: upstreams\n(?:^        #.*\n)+", text, re.M)
assert block, "gateway.yaml no longer shows the upstreams volume"
volume = yaml.safe_load("".join(line[10:] + "\n" for line in block.group(0).splitlines()))[0]
docs = list(yaml.safe_load_all(text))
pod = next(d for d in docs if d and d["kind"] == "Deployment")["spec"]["template"]["spec"]
pod["volumes"] = [volume if v["name"] == "openai-key" else v for v in pod["volumes"]]
proxy = pod["containers"][0]
proxy["volumeMounts"] = [
    {"name": "upstreams", "mountPath": "/etc/memoctopus/upstreams", "readOnly": True}
    if m["name"] == "openai-key" else m for m in proxy["volumeMounts"]
]
proxy["env"] = [
    {"name": "PROXY_UPSTREAMS_FILE", "value": "/etc/memoctopus/upstreams/upstreams.toml"}
    if e["name"] == "OPENAI_API_KEY_FILE" else e for e in proxy["env"]
]
assert volume["projected"]["sources"][0]["configMap"]["name"] == "memoctopus-upstreams"
open(sys.argv[2], "w", encoding="utf-8").write(yaml.safe_dump_all(docs, sort_keys=False))
PY
"$venv/bin/kubernetes-validate" --strict -k "$version" "$variant"

#!/usr/bin/env bash
# Runs the official OpenAI SDK suites (Python and Node) against the real memoctopus binary in
# front of the project's mock upstream. Installs what they need: a venv with pinned pip
# packages, and `npm ci` from the lock file. Nothing leaves this machine but package installs.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$root"

cargo build --release --bin memoctopus --example mock-upstream

echo "== Python: openai SDK"
if [ ! -x "$here/.venv/bin/python" ]; then
  python3 -m venv "$here/.venv"
fi
"$here/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/python/requirements.txt"
(cd "$here/python" && "$here/.venv/bin/python" -m pytest -q -p no:cacheprovider)
# Through a TLS upstream, as users reach api.openai.com: h2 by ALPN (auto), and each protocol
# alone (PROXY_UPSTREAM_PROTOCOL).
for protocol in auto http1 http2; do
  echo "== Python: openai SDK, through a TLS upstream, PROXY_UPSTREAM_PROTOCOL=$protocol"
  (cd "$here/python" && COMPAT_UPSTREAM=tls COMPAT_PROTOCOL=$protocol "$here/.venv/bin/python" -m pytest -q -p no:cacheprovider)
done

echo "== Node: openai npm package"
(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error && node --test)
for protocol in auto http1 http2; do
  echo "== Node: openai npm package, through a TLS upstream, PROXY_UPSTREAM_PROTOCOL=$protocol"
  (cd "$here/node" && COMPAT_UPSTREAM=tls COMPAT_PROTOCOL=$protocol node --test)
done

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
echo "== Python: openai SDK, through a TLS upstream (h2 by ALPN)"
(cd "$here/python" && COMPAT_UPSTREAM=tls "$here/.venv/bin/python" -m pytest -q -p no:cacheprovider)

echo "== Node: openai npm package"
(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error && node --test)
echo "== Node: openai npm package, through a TLS upstream (h2 by ALPN)"
(cd "$here/node" && COMPAT_UPSTREAM=tls node --test)

#!/usr/bin/env bash
# After `cargo test`: every test binary that started a proxy logged at trace level into
# target/secret-scan/, and the client helpers recorded every byte they received there. None of
# the keys the tests use may appear in any of it.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=target/secret-scan
files=$(find "$dir" -type f 2>/dev/null | wc -l)
if [ "$files" -eq 0 ]; then
  echo "secret scan: nothing captured in $dir; run cargo test first" >&2
  exit 1
fi
keys=(
  sk-server-secret-0123456789   # tests/support: the server's OPENAI_API_KEY
  ck-client-secret-987654       # tests/logs.rs: PROXY_CLIENT_KEYS
  ck-wrong-guess-0001           # tests/logs.rs: a wrong client key
  ck-alpha ck-beta              # tests/client_keys.rs
  client-key-never-forwarded    # the Authorization every test client sends
  sk-file-old-key-5550001 sk-file-new-key-5550002  # tests/key_files.rs
  ck-file-web-7001 ck-file-batch-7002 ck-file-mobile-7003
  ck-limits-web-8001 ck-limits-batch-8002 ck-limits-bare-8003 ck-limits-wrong-8004  # tests/client_limits.rs
  ck-azure-app-9001 ck-azure-wrong-9002  # tests/upstream_auth.rs
  ck-realtime-browser-6001 ck-realtime-wrong-6002 sk-browser-user-key-6003 sk-realtime-wrong-server-key-6004  # tests/realtime.rs
  ck-secrets-app-6101            # tests/extra_routes.rs
  ck-usage-                     # tests/usage.rs: every client key there starts so
  ck-shared-                    # tests/shared_limits.rs: likewise
  pw-shared-redis-secret-5150   # tests/shared_limits.rs: the Redis password
  sk-unit-server-key-4242 client-key-unit-77  # src/inbound/connection.rs: the panic hook's unit test (which also checks its own logs)
  pp-egress-secret-4242         # tests/upstream_trust.rs: the forward proxy's password
  sk-fleet-                     # tests/failover.rs, tests/realtime.rs: each upstream's key
  collector-token-never-logged  # tests/traces.rs: the OTLP collector's token in OTEL_EXPORTER_OTLP_HEADERS
  ZWdyZXNzLXVzZXI6cHAtZWdyZXNzLXNlY3JldC00MjQy  # ...and its Proxy-Authorization
)
found=0
for key in "${keys[@]}"; do
  if grep -rlF -- "$key" "$dir"; then
    echo "secret scan: $key appears in the files above" >&2
    found=1
  fi
done
[ "$found" -eq 0 ] || exit 1
echo "secret scan: $files files ($(du -sh "$dir" | cut -f1)) of trace logs and received bytes, no key in any"

#!/usr/bin/env bash
# Instructions per chat JSON exchange for a memoctopus binary, counted by callgrind: the same
# count for the same binary whatever else the machine does, so a change of a few percent shows
# where CPU time on this noisy machine cannot. The proxy runs under valgrind in front of the
# mock upstream (plain HTTP/1.1) and oha sends 200 exchanges to warm up, then N; the count is
# the difference between a run of 3000 and one of 1000, over 2000, so that start-up cancels.
#
#   bash benches/instructions.sh target/release/memoctopus [PORT [NAME=VALUE...]]
#
# Settings after the port go to the proxy; {mock} in one stands for the mock's address, e.g.
# OTEL_EXPORTER_OTLP_ENDPOINT=http://{mock} for traces at ratio 1.0, exported to the mock.
#
# Needs valgrind, oha (cargo install oha --locked) and the mock
# (cargo build --release --example mock-upstream).
set -euo pipefail
bin=$(realpath "$1")
port=${2:-18200}
root="$(cd "$(dirname "$0")/.." && pwd)"
mock_port=$((port + 1))
extra=()
for setting in "${@:3}"; do
  extra+=("${setting//\{mock\}/127.0.0.1:$mock_port}")
done
body='{"model":"gpt-4","messages":[{"role":"user","content":"hi"}]}'
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

total() {
  local n=$1
  "$root/target/release/examples/mock-upstream" "127.0.0.1:$mock_port" >/dev/null 2>&1 &
  local mock=$!
  env -i PATH="$PATH" OPENAI_API_KEY=sk-instructions OPENAI_BASE_URL="http://127.0.0.1:$mock_port/v1" \
    HOST=127.0.0.1 PORT="$port" RUST_LOG=warn "${extra[@]}" \
    valgrind --tool=callgrind --callgrind-out-file="$scratch/out.$n" "$bin" >/dev/null 2>&1 &
  local proxy=$!
  for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/health" && break
    sleep 0.2
  done
  for count in 200 "$n"; do
    oha -n "$count" -c 4 --no-tui -m POST -H 'content-type: application/json' -d "$body" \
      "http://127.0.0.1:$port/v1/chat/completions" >/dev/null
  done
  kill "$proxy" "$mock"
  wait "$proxy" 2>/dev/null || true
  wait "$mock" 2>/dev/null || true
  grep -E '^(summary|totals):' "$scratch/out.$n" | head -1 | awk '{print $2}'
}

small=$(total 1000)
large=$(total 3000)
echo "$(( (large - small) / 2000 )) instructions per chat JSON exchange ($bin)"

#!/usr/bin/env bash
# A/B of two memoctopus builds on one scenario, alternating A and B so that the machine's
# drift hits both alike; prints the median CPU per request, rps and p50 of each.
#
#   bash benches/ab.sh RUNS UPSTREAM PROTOCOL BINARY_A BINARY_B [oha flags...]
#   bash benches/ab.sh 5 tls auto /tmp/before /tmp/after -c 1
#
# UPSTREAM is tls (the mock's TLS port, as users reach api.openai.com) or plain; PROTOCOL is
# PROXY_UPSTREAM_PROTOCOL. Each run is 5 s (AB_SECONDS) of chat JSON after a 2 s warm-up; the
# proxy is pinned to core 1, the mock and oha to core 0, as in benches/run.py. With AB_STRACE=1
# it also counts the proxy's syscalls per request over 2000 requests, A then B.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=$1 UPSTREAM=$2 PROTOCOL=$3 A=$4 B=$5
shift 5
SECONDS_PER_RUN=${AB_SECONDS:-5}
MOCK=target/release/examples/mock-upstream
WORK=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$WORK"' EXIT
CHAT='{"model":"gpt-4","messages":[{"role":"user","content":"Hello!"}]}'

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return; sleep 0.05; done; }
cpu_ticks() { awk '{print $14+$15}' /proc/$1/stat; }
load() { taskset -c 0 oha --no-tui "$@" -m POST -T application/json -d "$CHAT" -H 'authorization: Bearer bench' "http://127.0.0.1:$PORT/v1/chat/completions"; }

start() { # binary
  MOCK_PORT=$(free_port) TLS_PORT=$(free_port) PORT=$(free_port)
  taskset -c 0 "$MOCK" "127.0.0.1:$MOCK_PORT" --tls "127.0.0.1:$TLS_PORT" "$WORK/ca.pem" >/dev/null &
  MOCK_PID=$!
  wait_port "$TLS_PORT"
  local base="http://127.0.0.1:$MOCK_PORT/v1"
  [ "$UPSTREAM" = tls ] && base="https://localhost:$TLS_PORT/v1"
  OPENAI_API_KEY=sk-bench-not-a-real-key OPENAI_BASE_URL=$base PROXY_UPSTREAM_CA=$WORK/ca.pem \
    PROXY_UPSTREAM_PROTOCOL=$PROTOCOL HOST=127.0.0.1 PORT=$PORT RUST_LOG=warn \
    taskset -c 1 "$1" >/dev/null &
  PROXY_PID=$!
  wait_port "$PORT"
}
stop() { kill "$PROXY_PID" "$MOCK_PID"; wait "$PROXY_PID" "$MOCK_PID" 2>/dev/null || true; }

one() { # label binary flags...
  local label=$1 binary=$2; shift 2
  start "$binary"
  load -z 2s "$@" >/dev/null
  local before; before=$(cpu_ticks "$PROXY_PID")
  load -z "${SECONDS_PER_RUN}s" --output-format json "$@" >"$WORK/out.json"
  local after; after=$(cpu_ticks "$PROXY_PID")
  stop
  python3 - "$label" "$before" "$after" "$(getconf CLK_TCK)" "$WORK/out.json" <<'PY'
import json, sys
label, before, after, tick, path = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
d = json.load(open(path))
ok = d["statusCodeDistribution"].get("200", 0)
cpu = (after - before) / tick / ok * 1e6 if ok else float("nan")
print(f"{label} {cpu:.1f} {d['summary']['requestsPerSec']:.0f} {d['latencyPercentiles']['p50'] * 1e3:.3f}")
PY
}

syscalls() { # label binary flags...
  local label=$1 binary=$2; shift 2
  start "$binary"
  load -n 200 "$@" >/dev/null
  strace -f -c -p "$PROXY_PID" -o "$WORK/strace" 2>/dev/null &
  local tracer=$!
  sleep 0.5
  load -n 2000 "$@" >/dev/null
  kill -INT "$tracer"; wait "$tracer" || true
  stop
  echo "$label syscalls per request:"
  awk 'NR>2 && $4 ~ /^[0-9]+$/ && $4 >= 100 {printf "  %-12s %.2f\n", $NF, $4/2000}' "$WORK/strace"
}

if [ "${AB_STRACE:-0}" = 1 ]; then
  syscalls A "$A" "$@"
  syscalls B "$B" "$@"
fi
for _ in $(seq "$RUNS"); do
  one A "$A" "$@"
  one B "$B" "$@"
done | tee "$WORK/runs" >&2
python3 - "$WORK/runs" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    label, cpu, rps, p50 = line.split()
    rows.setdefault(label, []).append((float(cpu), float(rps), float(p50)))
for label, r in rows.items():
    med = lambda i: statistics.median(x[i] for x in r)
    print(f"{label}: CPU {med(0):.1f} us/request, {med(1):.0f} requests/s, p50 {med(2):.3f} ms (median of {len(r)}; CPU per run {[round(x[0]) for x in r]})")
PY

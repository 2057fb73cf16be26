#!/usr/bin/env python3
"""Soak with faults: 60 s of mixed load through memoctopus while clients misbehave and the
upstream breaks a share of its streams. Afterwards it checks that the proxy is alive, that every
well-formed exchange that was not faulted came back byte-identical, that open file descriptors
and RSS came back to where they were, and that /metrics agrees with what was sent.

"Where they were" is measured after a 3 s burst of the same load and faults and the same
settling, so that the soak measures growth from serving the load for longer, not the allocator's
high-water mark after a first burst; the cold figure (after one request of each kind) is
reported too.

    bash benches/run.sh --help >/dev/null   # or: cargo build --release --bin memoctopus --example mock-upstream
    python3 benches/soak.py [SECONDS]

Load (oha): chat JSON, SSE streams, 1 MiB uploads, and SSE streams the upstream breaks off after
5 events. Faults (this script): clients that abort mid-stream, send garbage, try to smuggle a
request behind `Content-Length` with chunked (which must get exactly one 400), or send their
request head slowly and give up; plus verified clients whose answers are compared byte for byte.
"""

import json
import os
import random
import resource
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import LOAD_CORE, MOCK, PROXY, PROXY_CORE, free_port, memoctopus_env, multipart, status_kib, wait_port  # noqa: E402

CHAT = b'{"model":"gpt-4","messages":[{"role":"user","content":"Hello!"}]}'
STREAM = b'{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'


def raw_request(port, headers, body, read=True, timeout=10):
    """One HTTP/1.1 exchange on a fresh connection; returns (status line, body bytes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        head = "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n"
        head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        head += f"Content-Length: {len(body)}\r\n\r\n"
        s.sendall(head.encode() + body)
        if not read:
            return None, None
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if b"transfer-encoding: chunked" in head.lower():
        rest = dechunk(rest)
    return lines[0].decode(errors="replace"), rest


def dechunk(data):
    out, at = b"", 0
    while True:
        end = data.index(b"\r\n", at)
        size = int(data[at:end], 16)
        if size == 0:
            return out
        out += data[end + 2:end + 2 + size]
        at = end + 2 + size + 2


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {}

    def add(self, key, n=1):
        with self.lock:
            self.c[key] = self.c.get(key, 0) + n


def fault_client(port, mock_port, deadline, counts, seed):
    rng = random.Random(seed)
    # Reference answers, straight from the mock.
    ref_chat = raw_request(mock_port, {}, CHAT)[1]
    ref_sse = raw_request(mock_port, {"x-mock-events": "10"}, STREAM)[1]
    while time.time() < deadline:
        kind = rng.choice(["verify-json", "verify-sse", "abort", "garbage", "smuggle", "slow"])
        try:
            if kind == "verify-json":
                status, body = raw_request(port, {}, CHAT)
                counts.add("exchanges")
                counts.add("verified")
                if not status.startswith("HTTP/1.1 200") or body != ref_chat:
                    counts.add("mismatch")
            elif kind == "verify-sse":
                status, body = raw_request(port, {"x-mock-events": "10", "x-mock-interval-ms": "2"}, STREAM)
                counts.add("exchanges")
                counts.add("verified")
                if not status.startswith("HTTP/1.1 200") or body != ref_sse:
                    counts.add("mismatch")
            elif kind == "abort":
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nx-mock-events: 200\r\nx-mock-interval-ms: 5\r\nContent-Length: %d\r\n\r\n" % len(STREAM) + STREAM)
                    s.recv(1024)
                counts.add("exchanges")
                counts.add("fault_abort")
            elif kind == "garbage":
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 2000))) + b"\r\n\r\n")
                    try:
                        s.recv(1024)
                    except OSError:
                        pass
                counts.add("fault_garbage")
            elif kind == "smuggle":
                # Content-Length with chunked, a request hidden behind it: one 400, nothing else.
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nPOST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
                    answer = b""
                    while chunk := s.recv(65536):
                        answer += chunk
                if not answer.startswith(b"HTTP/1.1 400") or answer.count(b"HTTP/1.1 ") != 1:
                    counts.add("smuggle_not_refused")
                counts.add("fault_smuggle")
            else:
                with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                    s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHo")
                    time.sleep(rng.uniform(0.1, 1.0))
                counts.add("fault_slow")
        except OSError as e:
            counts.add(f"client_error:{type(e).__name__}")


# Slow clients hit the header read timeout (2 s), idle keep-alive connections to the upstream
# close after the pool's 90 s, and the heap is trimmed a second after that.
SETTLE_SECONDS = float(os.environ.get("SOAK_SETTLE_SECONDS", "95"))
WARM_SECONDS = 3


def mixed_load(port, mock_port, upload, seconds, counts, pid):
    """Runs the oha load and the fault clients together for `seconds`; returns oha's results
    and the peak RSS seen meanwhile."""
    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    jobs = {
        "json": ["-c", "8", "-m", "POST", "-T", "application/json", "-d", CHAT.decode(), url],
        "sse": ["-c", "8", "-m", "POST", "-T", "application/json", "-d", STREAM.decode(), "-H", "x-mock-events: 20", "-H", "x-mock-interval-ms: 5", url],
        "upload": ["-c", "2", "-m", "POST", "-T", "multipart/form-data; boundary=soakboundary", "-D", str(upload), f"http://127.0.0.1:{port}/v1/audio/transcriptions"],
        "upstream-resets": ["-c", "4", "-m", "POST", "-T", "application/json", "-d", STREAM.decode(), "-H", "x-mock-events: 20", "-H", "x-mock-interval-ms: 5", "-H", "x-mock-fail-after: 5", url],
    }
    results = {}
    threads = [threading.Thread(target=lambda n=n, a=a: results.__setitem__(n, oha(port, a, seconds))) for n, a in jobs.items()]
    deadline = time.time() + seconds
    threads += [threading.Thread(target=fault_client, args=(port, mock_port, deadline, counts, i)) for i in range(4)]
    peak = 0
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, status_kib(pid, "VmRSS"))
        time.sleep(0.5)
    return results, peak


def oha_exchanges(results):
    return sum(sum(r["statusCodeDistribution"].values()) + sum(r.get("errorDistribution", {}).values()) for r in results.values())


def oha(port, args, seconds):
    cmd = ["taskset", "-c", LOAD_CORE, "oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s"] + args
    out = subprocess.run(cmd, capture_output=True, text=True)
    return json.loads(out.stdout)


def upstream_connections(mock_port):
    out = subprocess.run(["ss", "-tnH", "state", "established", f"( dport = :{mock_port} )"], capture_output=True, text=True).stdout
    return len([line for line in out.splitlines() if line.strip()])


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def scrape(port):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    total = 0
    by_outcome = {}
    for line in text.splitlines():
        if line.startswith("memoctopus_refused_request_heads_total{"):
            kind = line.split('kind="')[1].split('"')[0]
            by_outcome[f"refused_head:{kind}"] = float(line.rsplit(" ", 1)[1])
        if line.startswith("memoctopus_requests_total{"):
            value = float(line.rsplit(" ", 1)[1])
            total += value
            outcome = line.split('outcome="')[1].split('"')[0]
            by_outcome[outcome] = by_outcome.get(outcome, 0) + value
    return total, by_outcome


def main():
    seconds = int(sys.argv[1]) if len(sys.argv) > 1 else 60
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65535, hard), hard))
    mock_port, port = free_port(), free_port()
    mock = subprocess.Popen(["taskset", "-c", LOAD_CORE, str(MOCK), f"127.0.0.1:{mock_port}"], stdout=subprocess.DEVNULL)
    env = memoctopus_env(mock_port, port, PROXY_HEADER_READ_TIMEOUT="2s")
    proxy = subprocess.Popen(["taskset", "-c", PROXY_CORE, str(PROXY)], env=env)
    upload = Path("/tmp/memoctopus-soak-1m.multipart")
    multipart(upload, 1 << 20, "soakboundary")
    try:
        wait_port(mock_port)
        wait_port(port)
        # One exchange of each kind first, so that one-time lazy set-up (metric series, the
        # date cache, the DNS thread) is not counted as growth; then the idle trim runs.
        raw_request(port, {}, CHAT)
        raw_request(port, {"x-mock-events": "3"}, STREAM)
        raw_request(port, {"x-mock-events": "9", "x-mock-fail-after": "2"}, STREAM)
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "content-type: multipart/form-data; boundary=soakboundary",
                        "--data-binary", f"@{upload}", f"http://127.0.0.1:{port}/v1/audio/transcriptions"], check=False)
        time.sleep(3)
        cold_rss = status_kib(proxy.pid, "VmRSS")
        # Then a short burst of the same load and faults, and the same settling: the baseline
        # is a proxy that has served this concurrency once, so what the soak measures is growth
        # from serving it for longer, not the high-water mark of a first burst.
        warm_counts = Counts()
        warm_results, _ = mixed_load(port, mock_port, upload, WARM_SECONDS, warm_counts, proxy.pid)
        time.sleep(SETTLE_SECONDS)
        rss0, anon0, fd0 = status_kib(proxy.pid, "VmRSS"), status_kib(proxy.pid, "RssAnon"), fds(proxy.pid)
        counts = Counts()
        results, peak = mixed_load(port, mock_port, upload, seconds, counts, proxy.pid)
        time.sleep(SETTLE_SECONDS)
        alive = proxy.poll() is None
        rss1, anon1, fd1 = status_kib(proxy.pid, "VmRSS"), status_kib(proxy.pid, "RssAnon"), fds(proxy.pid)
        pooled = upstream_connections(mock_port)
        metric_total, by_outcome = scrape(port)

        report = {}
        for name, r in results.items():
            report[name] = {"status": r["statusCodeDistribution"], "errors": r.get("errorDistribution", {})}
        warm_sent = oha_exchanges(warm_results) + warm_counts.c.get("exchanges", 0)
        sent = oha_exchanges(results) + counts.c.get("exchanges", 0)
        # The first four are the one-of-each warm-up.
        total_sent = 4 + warm_sent + sent
        summary = {
            "seconds": seconds,
            "proxy_alive": alive,
            "exchanges_sent": sent,
            "exchanges_sent_with_warm_up": total_sent,
            "exchanges_in_metrics": metric_total,
            "metrics_by_outcome": by_outcome,
            "verified": counts.c.get("verified", 0),
            "verified_mismatches": counts.c.get("mismatch", 0),
            "smuggles_not_refused": counts.c.get("smuggle_not_refused", 0),
            "faults": {k: v for k, v in counts.c.items() if k.startswith("fault_") or k.startswith("client_error")},
            "load": report,
            "rss_kib": {"cold": cold_rss, "before": rss0, "peak": peak, "after": rss1},
            "heap_rss_anon_kib": {"before": anon0, "after": anon1},
            "fds": {"before": fd0, "after": fd1, "idle_upstream_keepalive": pooled},
        }
        print(json.dumps(summary, indent=1))
        failures = []
        if not alive:
            failures.append("the proxy died")
        if counts.c.get("mismatch", 0):
            failures.append("verified exchanges came back altered")
        if counts.c.get("smuggle_not_refused", 0):
            failures.append("a smuggling attempt was not answered with exactly one 400")
        if fd1 > fd0 * 1.1 + 1:
            failures.append(f"file descriptors {fd0} -> {fd1} ({pooled} pooled upstream)")
        # RSS must come back within 10%. The heap alone (RssAnon) is reported too: it is small,
        # so allocator caches left after trimming show as a large share of it.
        if rss1 > rss0 * 1.1:
            failures.append(f"RSS {rss0} -> {rss1} KiB")
        if abs(metric_total - total_sent) > 0:
            failures.append(f"metrics count {metric_total} exchanges, clients sent {total_sent}")
        # Every smuggling attempt is refused as bad_request; garbage may add to that count.
        smuggles = counts.c.get("fault_smuggle", 0) + warm_counts.c.get("fault_smuggle", 0)
        if by_outcome.get("refused_head:bad_request", 0) < smuggles:
            failures.append(f"{smuggles} smuggling attempts, fewer refused heads in /metrics")
        for kind in ("mismatch", "smuggle_not_refused"):
            if warm_counts.c.get(kind, 0):
                failures.append(f"{kind} during the warm-up burst")
        proxy.terminate()
        code = proxy.wait(timeout=40)
        if code != 0:
            failures.append(f"exit status {code} after SIGTERM")
        print("soak:", "OK" if not failures else "FAILED: " + "; ".join(failures))
        sys.exit(1 if failures else 0)
    finally:
        if proxy.poll() is None:
            proxy.kill()
        mock.kill()


if __name__ == "__main__":
    main()

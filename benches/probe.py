#!/usr/bin/env python3
"""Looks inside one of run.py's scenarios, for nginx and memoctopus alike, started, pinned and
loaded exactly as run.py does (build the binaries first: bash benches/run.sh does).

    python3 benches/probe.py split    UPSTREAM SCENARIO TARGETS RUNS
    python3 benches/probe.py syscalls UPSTREAM SCENARIO TARGETS
    python3 benches/probe.py tail     UPSTREAM TARGETS RUNS

UPSTREAM is plain or tls; TARGETS is a comma list of run.py's names (nginx, memoctopus,
memoctopus:http1), or NAME=BINARY for a memoctopus build of your own.

- split: user and system CPU per request (or per event, for slow-streams), alternating the
  targets, with `perf stat` counts per request of epoll_wait and context switches; medians.
- syscalls: `strace -c` of the proxy: syscalls per request or per upload; for slow-streams,
  `perf stat` counts per SSE event and the CPU per event (strace would slow the proxy down).
- tail: chat-json-q2000 for 8 s with oha's per-request records (`--db-url`): p50, p99, and when
  the requests over 1 ms happened, grouped in 20 ms windows, to tell a periodic stall (a timer
  of the proxy's) from the machine's.
"""

import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402

BOUNDARY = "memoctopusbenchboundary"
# Slow streams: 500 streams, one event each per 20 ms.
EVENTS_PER_SECOND = 500 / 0.020
COUNTED = ["read", "recvfrom", "write", "writev", "sendto", "epoll_wait", "epoll_ctl"]


def start(name, upstream, workdir):
    """Starts a target; returns it and the pid that does the work (nginx's worker)."""
    if "=" in name:
        name, binary = name.split("=", 1)
        run.PROXY = Path(binary)
        target = run.Target("memoctopus", workdir, upstream).start()
    else:
        run.PROXY = run.RELEASE / "memoctopus"
        target = run.Target(name, workdir, upstream).start()
    return target, (target.pids[-1] if name == "nginx" else target.pids[0])


def load(scenario, workdir):
    """A scenario's oha arguments; for an upload, its 5 MiB multipart file made in `workdir`."""
    files = {}
    if scenario.startswith("upload"):
        path = workdir / "upload.multipart"
        run.multipart(path, 5 << 20, BOUNDARY)
        files[scenario] = (path, BOUNDARY)
    return run.scenario_args(scenario, files) + run.SCENARIOS[scenario][0]


def strace_counts(pid, load, count, out):
    """Runs `load` (an oha command, ending in its URL) for count / 8 requests to warm up, then
    for `count` requests with `strace -c` on `pid`; returns each syscall's count per request."""
    warm, traced = load[:-1] + ["-n", str(max(count // 8, 1)), load[-1]], load[:-1] + ["-n", str(count), load[-1]]
    subprocess.run(warm, capture_output=True, check=True)
    tracer = subprocess.Popen(["strace", "-f", "-c", "-p", str(pid), "-o", str(out)], stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    subprocess.run(traced, capture_output=True, check=True)
    tracer.send_signal(2)
    tracer.wait()
    counts = {}
    for line in out.read_text().splitlines()[2:]:
        fields = line.split()
        if len(fields) >= 5 and fields[3].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3]) / count
    return counts


def perf_counts(path, count):
    """`perf stat -x,` output: each event's count per `count`."""
    counts = {}
    for line in path.read_text().splitlines():
        fields = line.split(",")
        if len(fields) > 3 and fields[0].strip().isdigit():
            counts[fields[2].split(":")[-1].replace("sys_enter_", "")] = int(fields[0]) / count
    return counts


def show(counts, floor=0.01):
    for name, per in sorted(counts.items(), key=lambda item: -item[1]):
        if per >= floor:
            print(f"  {name:14} {per:.2f}")
    print(f"  {'total':14} {sum(counts.values()):.2f}")


def prepared(name, upstream, scenario):
    """A fresh work directory, the scenario's arguments, and the target started in it."""
    workdir = Path(tempfile.mkdtemp(prefix="memoctopus-probe-"))
    args = load(scenario, workdir)
    target, pid = start(name, upstream, workdir)
    return workdir, args, target, pid


def split(upstream, scenario, names, runs):
    results = {name: [] for name in names}
    for _ in range(runs):
        for name in names:
            workdir, args, target, pid = prepared(name, upstream, scenario)
            stat = workdir / "perf-stat"
            try:
                run.oha(target.port, args, 2)
                perf = subprocess.Popen(["perf", "stat", "-x,", "-o", str(stat), "-e", "syscalls:sys_enter_epoll_wait,context-switches", "-p", str(pid)])
                before = run.proc_times(pid)
                if scenario == "slow-streams":
                    run.oha(target.port, args, 5)
                    count = 5 * EVENTS_PER_SECOND
                else:
                    count = run.summarize(run.oha(target.port, args, 5))["ok"]
                after = run.proc_times(pid)
                perf.send_signal(2)
                perf.wait()
            finally:
                target.stop()
            user, system = ((b - a) / count * 1e6 for a, b in zip(before, after))
            counts = perf_counts(stat, count)
            results[name].append((user, system))
            extra = " ".join(f"{k} {v:.3f}" for k, v in counts.items())
            print(f"{name:24} user {user:8.1f} sys {system:8.1f} total {user + system:8.1f} µs; per request: {extra}", flush=True)
    for name, rows in results.items():
        user = statistics.median(r[0] for r in rows)
        system = statistics.median(r[1] for r in rows)
        total = statistics.median(r[0] + r[1] for r in rows)
        print(f"median {name:17} user {user:8.1f} sys {system:8.1f} total {total:8.1f} µs")


def syscalls(upstream, scenario, names):
    for name in names:
        workdir, args, target, pid = prepared(name, upstream, scenario)
        out = workdir / "strace"
        try:
            if scenario == "slow-streams":
                # strace would slow the proxy below the streams' pace; perf counts instead.
                streams = subprocess.Popen(run.oha_cmd(target.port, args, "--output-format", "quiet", "-z", "8s"))
                time.sleep(3)
                events = ",".join(f"syscalls:sys_enter_{name}" for name in COUNTED)
                before = sum(run.proc_times(pid))
                subprocess.run(["perf", "stat", "-x,", "-o", str(out), "-e", events, "-p", str(pid), "--", "sleep", "4"], check=True)
                spent = sum(run.proc_times(pid)) - before
                streams.wait()
                count = 4 * EVENTS_PER_SECOND
                print(f"{name} ({upstream}, slow-streams): {spent / count * 1e6:.1f} µs of CPU per event; syscalls per event:")
                show(perf_counts(out, count))
                continue
            count = 100 if scenario.startswith("upload") else 4000
            unit = "upload" if scenario.startswith("upload") else "request"
            counts = strace_counts(pid, run.oha_cmd(target.port, args), count, out)
        finally:
            target.stop()
        print(f"{name} ({upstream}, {scenario}), syscalls per {unit}:")
        show(counts)


def tail(upstream, names, runs):
    args = load("chat-json-q2000", Path(tempfile.mkdtemp()))
    for _ in range(runs):
        for name in names:
            workdir = Path(tempfile.mkdtemp(prefix="memoctopus-probe-"))
            target, _ = start(name, upstream, workdir)
            db = workdir / "requests.db"
            try:
                run.oha(target.port, args, 2)
                subprocess.run(run.oha_cmd(target.port, args, "--output-format", "quiet", "-z", "8s", "--db-url", str(db)), check=True, capture_output=True)
            finally:
                target.stop()
            rows = sqlite3.connect(db).execute("select start, start_latency_correction, end from oha").fetchall()
            latencies = sorted(((end - (corrected or begin)) * 1000, begin) for begin, corrected, end in rows)
            n = len(latencies)
            t0 = min(begin for _, begin in latencies)
            windows = {}
            for ms, begin in latencies:
                if ms > 1.0:
                    windows.setdefault(int((begin - t0) * 50), []).append(ms)
            slow = sum(len(v) for v in windows.values())
            print(f"{name:24} n {n} p50 {latencies[n // 2][0]:.3f} ms p99 {latencies[int(n * 0.99)][0]:.3f} ms; {slow} over 1 ms in {len(windows)} windows of 20 ms:")
            shown = sorted(windows.items())[:12]
            more = f", and {len(windows) - len(shown)} more" if len(windows) > len(shown) else ""
            print("    " + ", ".join(f"{k / 50:.2f} s: {len(v)} (max {max(v):.1f} ms)" for k, v in shown) + more)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mode, upstream = sys.argv[1], sys.argv[2]
    if mode == "split" and len(sys.argv) == 6:
        split(upstream, sys.argv[3], sys.argv[4].split(","), int(sys.argv[5]))
    elif mode == "syscalls" and len(sys.argv) == 5:
        syscalls(upstream, sys.argv[3], sys.argv[4].split(","))
    elif mode == "tail" and len(sys.argv) == 5:
        tail(upstream, sys.argv[3].split(","), int(sys.argv[4]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

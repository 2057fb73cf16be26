#!/usr/bin/env python3
"""A/B of two memoctopus builds on one of run.py's scenarios, alternating A and B so that the
machine's drift hits both alike; prints the median CPU per request, rps and p50 of each.

    python3 benches/ab.py RUNS UPSTREAM PROTOCOL BINARY_A BINARY_B [SCENARIO]
    python3 benches/ab.py 5 tls auto /tmp/before /tmp/after chat-json-c1

A "binary" may be a script that sets settings and execs the proxy (`exec env PROXY_USAGE=off
/path/memoctopus`): the same build with two configurations.

UPSTREAM is tls (the mock's TLS port, as users reach api.openai.com) or plain; PROTOCOL is
PROXY_UPSTREAM_PROTOCOL; SCENARIO is one of run.py's (default chat-json-c1). Targets start,
are pinned and are measured exactly as in run.py; each run is a 2 s warm-up, then 5 s
(AB_SECONDS). With AB_STRACE=1 it first counts the proxy's syscalls per request over 2000
requests, A then B. Build the binaries first (bash benches/run.sh does).
"""

import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import probe  # noqa: E402
import run  # noqa: E402


def started(binary, protocol, upstream, workdir):
    run.PROXY = Path(binary)
    return run.Target(f"memoctopus:{protocol}", workdir, upstream).start()


def measure(binary, protocol, upstream, workdir, args, seconds):
    target = started(binary, protocol, upstream, workdir)
    try:
        run.oha(target.port, args, 2)
        cpu0 = target.cpu()
        res = run.summarize(run.oha(target.port, args, seconds))
        cpu1 = target.cpu()
    finally:
        target.stop()
    res["cpu_us"] = (cpu1 - cpu0) / res["ok"] * 1e6 if res["ok"] else float("nan")
    return res


def syscalls(label, binary, protocol, upstream, workdir, args):
    target = started(binary, protocol, upstream, workdir)
    try:
        counts = probe.strace_counts(target.pids[0], run.oha_cmd(target.port, args), 2000, workdir / "strace")
    finally:
        target.stop()
    print(f"{label} syscalls per request:")
    probe.show(counts, floor=0.05)


def main():
    if len(sys.argv) not in (6, 7):
        sys.exit(__doc__)
    runs, upstream, protocol, a, b = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
    scenario = sys.argv[6] if len(sys.argv) == 7 else "chat-json-c1"
    seconds = int(os.environ.get("AB_SECONDS", "5"))
    workdir = Path(tempfile.mkdtemp(prefix="memoctopus-ab-"))
    args = probe.load(scenario, workdir)
    builds = {"A": a, "B": b}
    if os.environ.get("AB_STRACE") == "1":
        for label, binary in builds.items():
            syscalls(label, binary, protocol, upstream, workdir, args)
    rows = {label: [] for label in builds}
    for _ in range(runs):
        for label, binary in builds.items():
            res = measure(binary, protocol, upstream, workdir, args, seconds)
            rows[label].append(res)
            print(f"{label} {res['cpu_us']:.1f} {res['rps']:.0f} {res['p50_ms']:.3f}", file=sys.stderr, flush=True)
    for label, r in rows.items():
        med = lambda key: statistics.median(x[key] for x in r)  # noqa: E731
        print(f"{label}: CPU {med('cpu_us'):.1f} us/request, {med('rps'):.0f} requests/s, p50 {med('p50_ms'):.3f} ms, "
              f"p99 {med('p99_ms'):.3f} ms "
              f"(median of {len(r)}; CPU per run {[round(x['cpu_us']) for x in r]})")


if __name__ == "__main__":
    main()

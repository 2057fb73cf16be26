#!/usr/bin/env python3
"""Memory of many held SSE streams through a proxy in front of the mock's TLS port: idle RSS,
peak RSS while they are held, and the growth per stream.

    python3 benches/held_streams.py [--streams 10000] [--seconds 20] [--targets nginx,memoctopus]

Run `bash benches/run.sh --help` once first (it installs oha and nginx and builds the release
binaries). Each target runs alone, started as `run.py` starts it (the proxy on core 1, the mock
and the client on core 0). The stream-quality client opens every stream at once; each answer is
`--events` events `--interval-ms` apart, longer than the run, so every stream is held until the
client's deadline. Held streams are those that got their first event. memoctopus runs with
`PROXY_MAX_CONNECTIONS` above the stream count and its default upstream protocol (HTTP/2 by
ALPN here, 100 streams a connection); nginx with one worker, HTTP/1.1 to the upstream (a
connection a stream) and `worker_connections` room for both sides.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402


def held(name, workdir, streams, seconds, events, interval_ms):
    target = run.Target(name, workdir, "tls").start()
    try:
        time.sleep(1)
        idle = target.rss_kib("VmRSS")
        client = subprocess.Popen(
            ["taskset", "-c", run.LOAD_CORE, str(run.QUALITY),
             f"http://127.0.0.1:{target.port}/v1/chat/completions",
             str(streams), str(seconds), str(events), str(interval_ms)],
            stdout=subprocess.PIPE, text=True,
        )
        out, _ = client.communicate(timeout=seconds + 120)
        peak = target.rss_kib("VmHWM")
        res = json.loads(out)
        started = res["streams_started"]
        row = {
            "target": name,
            "streams": streams,
            "held": started,
            "idle_mib": idle / 1024,
            "peak_mib": peak / 1024,
            "kib_per_stream": (peak - idle) / started if started else float("nan"),
            "ttft_p99_ms": res["ttft_p99_ms"],
            "failed": res["failed"],
        }
        print(json.dumps(row), flush=True)
        return row
    finally:
        target.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--streams", type=int, default=10000)
    parser.add_argument("--seconds", type=int, default=20)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval-ms", type=int, default=2000)
    parser.add_argument("--targets", default="nginx,memoctopus")
    args = parser.parse_args()
    # Root may raise the hard limit too; every process started inherits both.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4 * args.streams + 4096
    if os.geteuid() == 0 and hard != resource.RLIM_INFINITY and hard < want:
        hard = want
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        # A container without CAP_SYS_RESOURCE: as many as its hard limit allows.
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    print(f"open files: {resource.getrlimit(resource.RLIMIT_NOFILE)[0]} a process", flush=True)
    # Both sides of every stream, for nginx's one worker.
    room = 2 * args.streams + 1024
    run.NGINX_TLS_CONF = run.NGINX_TLS_CONF.replace(
        "worker_connections 16384;", f"worker_connections {room};"
    ).replace("worker_rlimit_nofile 65535;", f"worker_rlimit_nofile {room + 1024};")
    env = run.memoctopus_env

    def with_room(*a, **settings):
        settings.setdefault("PROXY_MAX_CONNECTIONS", str(args.streams + 1024))
        return env(*a, **settings)

    run.memoctopus_env = with_room
    workdir = Path(tempfile.mkdtemp(prefix="memoctopus-held-"))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir()
    rows = [held(t, workdir, args.streams, args.seconds, args.events, args.interval_ms)
            for t in args.targets.split(",")]
    print("| target | streams held | idle RSS | peak RSS | per stream | TTFT p99 |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['target']} | {r['held']} of {r['streams']} | {r['idle_mib']:.1f} MiB | "
              f"{r['peak_mib']:.1f} MiB | {r['kib_per_stream']:.1f} KiB | {r['ttft_p99_ms']:.0f} ms |")


if __name__ == "__main__":
    main()

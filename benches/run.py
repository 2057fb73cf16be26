#!/usr/bin/env python3
"""Benchmark driver: the mock upstream alone (the floor), nginx, and memoctopus, side by side.

Run it through benches/run.sh, which installs oha and nginx when missing. Each target runs
alone: the proxy under test is pinned to core 1 (taskset -c 1), the mock and oha share core 0.
For every scenario it reports rps, p50/p99 latency, successes, the proxy's CPU time per request
(utime+stime from /proc/PID/stat before and after, divided by successes), and for the slow
streams how many of those the client aborted at the deadline the mock saw cancelled. Per target
it reports idle RSS, peak RSS (VmHWM) over the whole run, and the peak-RSS growth of one 25 MiB
upload on a fresh process. Then the stream-quality client measures TTFT and inter-event gaps.
It prints a markdown table, the memoctopus/nginx ratios, and writes JSON next to it.

`--upstream tls` puts every proxy in front of the mock's TLS port instead (h2 and http/1.1 by
ALPN, 128 streams per HTTP/2 connection, a certificate from a test CA both proxies trust), as
users run it against api.openai.com. nginx then uses `proxy_pass https://` with keep-alive and
`proxy_ssl_session_reuse on`; `memoctopus:http1` and `memoctopus:http2` are memoctopus with
that `PROXY_UPSTREAM_PROTOCOL` (plain `memoctopus` is the default, `auto`). `direct` stays the
plain-HTTP floor: oha itself does not go through TLS.
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RELEASE = ROOT / "target" / "release"
MOCK = RELEASE / "examples" / "mock-upstream"
QUALITY = RELEASE / "examples" / "stream-quality"
PROXY = RELEASE / "memoctopus"
TICK = os.sysconf("SC_CLK_TCK")
PROXY_CORE, LOAD_CORE = "1", "0"
BENCH_KEY = "sk-bench-not-a-real-key"
CHAT = '{"model":"gpt-4","messages":[{"role":"developer","content":"You are a helpful assistant."},{"role":"user","content":"Hello!"}]}'
STREAM = '{"model":"gpt-4","stream":true,"messages":[{"role":"user","content":"Hello!"}]}'
# The same with the usage chunk at the end, as clients that want usage ask for it.
STREAM_USAGE = '{"model":"gpt-4","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hello!"}]}'


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def proc_times(pid):
    """User and system CPU seconds of `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # utime and stime are fields 14 and 15 of stat; here they are 11 and 12 after the name.
    return int(fields[11]) / TICK, int(fields[12]) / TICK


def proc_stat(pid):
    return sum(proc_times(pid))


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def children(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def memoctopus_env(mock_port, port, base_url=None, **settings):
    """The environment for memoctopus in front of the mock on `mock_port` (or at `base_url`),
    serving `port`. Its access log is off (RUST_LOG=warn), as nginx's is here."""
    env = {
        "PATH": os.environ["PATH"],
        "OPENAI_API_KEY": BENCH_KEY,
        "OPENAI_BASE_URL": base_url or f"http://127.0.0.1:{mock_port}/v1",
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "RUST_LOG": "warn",
    }
    env.update(settings)
    return env


class Target:
    """A proxy (or nothing, for `direct`) in front of a fresh mock upstream."""

    def __init__(self, name, workdir, upstream="plain"):
        self.name, self.workdir, self.upstream = name, workdir, upstream
        self.mock_port, self.tls_port, self.port = free_port(), free_port(), free_port()
        self.ca = workdir / "ca.pem"
        self.procs = []

    def start(self):
        cmd = ["taskset", "-c", LOAD_CORE, str(MOCK), f"127.0.0.1:{self.mock_port}"]
        if self.upstream == "tls":
            cmd += ["--tls", f"127.0.0.1:{self.tls_port}", str(self.ca)]
        mock = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        self.procs.append(mock)
        wait_port(self.mock_port)
        if self.upstream == "tls":
            wait_port(self.tls_port)
        if self.name == "direct":
            self.port, self.pids = self.mock_port, []
            return self
        if self.name == "nginx":
            conf = self.workdir / "nginx.conf"
            template = NGINX_TLS_CONF if self.upstream == "tls" else NGINX_CONF
            conf.write_text(template.format(dir=self.workdir, port=self.port, mock=self.mock_port, tls=self.tls_port, ca=self.ca, key=BENCH_KEY))
            proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, "nginx", "-c", str(conf), "-p", str(self.workdir)])
        else:
            protocol = self.name.split(":", 1)[1] if ":" in self.name else None
            settings = {}
            if protocol:
                settings["PROXY_UPSTREAM_PROTOCOL"] = protocol
            base_url = None
            if self.upstream == "tls":
                base_url = f"https://localhost:{self.tls_port}/v1"
                settings["PROXY_UPSTREAM_CA"] = str(self.ca)
            env = memoctopus_env(self.mock_port, self.port, base_url, **settings)
            proc = subprocess.Popen(["taskset", "-c", PROXY_CORE, str(PROXY)], env=env, stdout=subprocess.DEVNULL)
        self.procs.append(proc)
        wait_port(self.port)
        time.sleep(0.5)
        self.pids = [proc.pid] + children(proc.pid)
        return self

    def cpu(self):
        return sum(proc_stat(p) for p in self.pids)

    def rss_kib(self, key):
        # nginx: the worker does the work; the master only waits.
        return max((status_kib(p, key) for p in self.pids), default=0)

    def mock_stats(self, reset=False):
        import urllib.request

        req = urllib.request.Request(f"http://127.0.0.1:{self.mock_port}/stats", method="POST" if reset else "GET")
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.load(r)

    def stop(self):
        for p in reversed(self.procs):
            p.terminate()
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


NGINX_CONF = """
worker_processes 1;
daemon off;
master_process on;
user root;
pid {dir}/nginx.pid;
error_log {dir}/error.log crit;
worker_rlimit_nofile 65535;
events {{ worker_connections 16384; }}
http {{
  access_log off;
  client_body_temp_path {dir}/body;
  proxy_temp_path {dir}/proxy;
  fastcgi_temp_path {dir}/fastcgi;
  uwsgi_temp_path {dir}/uwsgi;
  scgi_temp_path {dir}/scgi;
  upstream openai {{ server 127.0.0.1:{mock}; keepalive 1024; }}
  server {{
    listen 127.0.0.1:{port} reuseport backlog=4096;
    client_max_body_size 32m;
    location /v1/ {{
      proxy_pass http://openai;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer {key}";
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 600s;
    }}
  }}
}}
"""

# The same, in front of the mock's TLS port: HTTP/1.1 with keep-alive, certificate verified,
# sessions resumed.
NGINX_TLS_CONF = NGINX_CONF.replace(
    "upstream openai {{ server 127.0.0.1:{mock}; keepalive 1024; }}",
    "upstream openai {{ server 127.0.0.1:{tls}; keepalive 1024; }}",
).replace(
    "      proxy_pass http://openai;\n",
    "      proxy_pass https://openai;\n"
    "      proxy_ssl_server_name on;\n"
    "      proxy_ssl_name localhost;\n"
    "      proxy_ssl_verify on;\n"
    "      proxy_ssl_trusted_certificate {ca};\n"
    "      proxy_ssl_session_reuse on;\n",
)


def oha_cmd(port, args, *flags):
    """oha on the load core against the proxy on `port`, with a scenario's `args`."""
    path = "audio/transcriptions" if "--upload" in args else "chat/completions"
    return ["taskset", "-c", LOAD_CORE, "oha", "--no-tui", *flags] + [a for a in args if a != "--upload"] + [f"http://127.0.0.1:{port}/v1/{path}"]


def oha(port, args, duration):
    cmd = oha_cmd(port, args, "--output-format", "json", "-z", f"{duration}s")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 120)
    if out.returncode != 0:
        raise RuntimeError(f"oha failed: {out.stderr[-2000:]}")
    return json.loads(out.stdout)


def scenario_args(name, files):
    auth = ["-H", "authorization: Bearer bench-client"]
    if name.startswith("chat-json"):
        return ["-m", "POST", "-T", "application/json", "-d", CHAT] + auth
    if name == "sse-20":
        return ["-m", "POST", "-T", "application/json", "-d", STREAM, "-H", "x-mock-events: 20"] + auth
    if name == "sse-20-usage":
        return ["-m", "POST", "-T", "application/json", "-d", STREAM_USAGE, "-H", "x-mock-events: 20"] + auth
    if name == "slow-streams":
        return ["-m", "POST", "-T", "application/json", "-d", STREAM, "-H", "x-mock-events: 64", "-H", "x-mock-interval-ms: 20"] + auth
    if name in ("upload-5m", "upload-25m"):
        path, boundary = files[name]
        return ["-m", "POST", "-T", f"multipart/form-data; boundary={boundary}", "-D", str(path), "--upload"] + auth
    raise ValueError(name)


SCENARIOS = {
    # name: (extra oha flags, duration seconds)
    "chat-json-c1": (["-c", "1"], None),
    "chat-json-c64": (["-c", "64"], None),
    "chat-json-q2000": (["-c", "64", "-q", "2000", "--latency-correction"], None),
    "sse-20": (["-c", "64"], None),
    "sse-20-usage": (["-c", "64"], None),
    "slow-streams": (["-c", "500"], 10),
    "upload-5m": (["-c", "8"], None),
}


def multipart(path, size, boundary):
    with open(path, "wb") as f:
        f.write(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="speech.mp3"\r\nContent-Type: audio/mpeg\r\n\r\n'.encode())
        block = bytes(range(256)) * 4096
        left = size
        while left > 0:
            f.write(block[:left])
            left -= len(block)
        f.write(f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\ngpt-4o-transcribe\r\n--{boundary}--\r\n'.encode())


def summarize(result):
    s = result["summary"]
    lat = result.get("latencyPercentiles", {})
    status = result.get("statusCodeDistribution", {})
    errors = result.get("errorDistribution", {})
    return {
        "rps": s.get("requestsPerSec") or 0.0,
        "p50_ms": (lat.get("p50") or 0) * 1e3,
        "p99_ms": (lat.get("p99") or 0) * 1e3,
        "ok": int(status.get("200", 0)),
        "errors": sum(errors.values()),
        "aborted": sum(v for k, v in errors.items() if "deadline" in k),
        "error_kinds": errors,
    }


def run_target(name, workdir, files, duration, scenarios, upstream):
    target = Target(name, workdir, upstream if name != "direct" else "plain").start()
    row = {"scenarios": {}}
    try:
        if name != "direct":
            row["idle_rss_kib"] = target.rss_kib("VmRSS")
            before = target.rss_kib("VmHWM")
            row["upload_25m"] = one_upload(target.port, files)
            row["upload_25m_growth_kib"] = target.rss_kib("VmHWM") - before
        for scenario in scenarios:
            flags, fixed = SCENARIOS[scenario]
            target.mock_stats(reset=True)
            cpu0 = target.cpu() if target.pids else 0.0
            res = summarize(oha(target.port, scenario_args(scenario, files) + flags, fixed or duration))
            cpu1 = target.cpu() if target.pids else 0.0
            time.sleep(1.0)  # let cancellations reach the mock
            res["mock"] = target.mock_stats()
            res["cpu_s"] = cpu1 - cpu0
            res["cpu_us_per_req"] = (cpu1 - cpu0) / res["ok"] * 1e6 if res["ok"] else None
            row["scenarios"][scenario] = res
            print(f"  {name:17} {scenario:16} rps={res['rps']:9.1f} p50={res['p50_ms']:8.2f}ms p99={res['p99_ms']:8.2f}ms ok={res['ok']} "
                  f"err={res['errors']} cpu/req={fmt(res['cpu_us_per_req'])}us", flush=True)
        if name != "direct":
            row["peak_rss_kib"] = target.rss_kib("VmHWM")
    finally:
        target.stop()
    return row


def one_upload(port, files):
    cmd = ["taskset", "-c", LOAD_CORE, "oha", "--no-tui", "--output-format", "json", "-n", "1", "-c", "1"]
    cmd += scenario_args("upload-25m", files)
    cmd = [c for c in cmd if c != "--upload"] + [f"http://127.0.0.1:{port}/v1/audio/transcriptions"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    return summarize(json.loads(out.stdout))


def quality(name, workdir, seconds, upstream):
    target = Target(name, workdir, upstream if name != "direct" else "plain").start()
    try:
        cpu0 = target.cpu() if target.pids else 0.0
        out = subprocess.run(
            ["taskset", "-c", LOAD_CORE, str(QUALITY), f"http://127.0.0.1:{target.port}/v1/chat/completions", "500", str(seconds), "64", "20"],
            capture_output=True, text=True, timeout=seconds + 60,
        )
        cpu1 = target.cpu() if target.pids else 0.0
        res = json.loads(out.stdout)
        res["cpu_s"] = cpu1 - cpu0
        print(f"  {name:17} stream-quality   {json.dumps(res)}", flush=True)
        return res
    finally:
        target.stop()


def fmt(v, digits=1):
    if v is None:
        return "-"
    return f"{v:.{digits}f}"


def median_rows(rows):
    """The per-field median over runs of one target."""
    if len(rows) == 1:
        return rows[0]
    def med(values):
        values = [v for v in values if isinstance(v, (int, float))]
        return statistics.median(values) if values else None
    out = {"scenarios": {}}
    for key in ("idle_rss_kib", "peak_rss_kib", "upload_25m_growth_kib"):
        if key in rows[0]:
            out[key] = med([r.get(key) for r in rows])
    for scenario in rows[0]["scenarios"]:
        merged = {}
        for field in rows[0]["scenarios"][scenario]:
            vals = [r["scenarios"][scenario].get(field) for r in rows]
            merged[field] = med(vals) if isinstance(vals[0], (int, float)) else vals[-1]
        out["scenarios"][scenario] = merged
    return out


def table(results, qualities, runs, command):
    names = [n for n in results if n not in ("direct", "nginx")]
    everyone = ["direct", "nginx"] + names
    lines = [f"Measured {datetime.date.today()} on {os.cpu_count()} cores, median of {runs} run(s), `{command}`.", ""]
    lines.append("| scenario | target | rps | p50 ms | p99 ms | ok | errors | proxy CPU µs/req |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for scenario in results[names[0]]["scenarios"]:
        for name in everyone:
            r = results[name]["scenarios"][scenario]
            lines.append(f"| {scenario} | {name} | {fmt(r['rps'])} | {fmt(r['p50_ms'], 2)} | {fmt(r['p99_ms'], 2)} | {int(r['ok'])} | {int(r['errors'])} | {fmt(r['cpu_us_per_req'])} |")
    lines.append("")
    lines.append("| memory | nginx | " + " | ".join(names) + " |")
    lines.append("|---|---:|" + "---:|" * len(names))
    for key, label in (("idle_rss_kib", "idle RSS (KiB)"), ("peak_rss_kib", "peak RSS, whole run (KiB)"), ("upload_25m_growth_kib", "peak RSS growth, one 25 MiB upload (KiB)")):
        lines.append(f"| {label} | " + " | ".join(fmt(results[n].get(key), 0) for n in ["nginx"] + names) + " |")
    lines.append("")
    slow = {n: results[n]["scenarios"].get("slow-streams") for n in results}
    if slow.get(names[0]):
        lines.append("| slow streams aborted by the client at the deadline | seen cancelled upstream |")
        lines.append("|---|---|")
        for name in everyone:
            s = slow[name]
            lines.append(f"| {name}: {int(s['aborted'])} | {int(s['mock']['streams_cancelled'])} |")
        lines.append("")
    if qualities:
        lines.append("| stream quality (500 streams, 64 events 20 ms apart) | " + " | ".join(everyone) + " |")
        lines.append("|---|" + "---:|" * len(everyone))
        for key in ("ttft_p50_ms", "ttft_p99_ms", "added_gap_p50_ms", "added_gap_p99_ms", "added_gap_p999_ms", "largest_gap_p99_ms", "completed", "failed"):
            lines.append(f"| {key} | " + " | ".join(fmt(qualities[n].get(key), 2) for n in everyone) + " |")
        lines.append("")
    for name in names:
        lines.append(f"Ratios {name} / nginx:")
        lines.append("")
        for scenario, r in results[name]["scenarios"].items():
            n = results["nginx"]["scenarios"][scenario]
            parts = []
            for field, label in (("cpu_us_per_req", "CPU/req"), ("rps", "rps"), ("p50_ms", "p50"), ("p99_ms", "p99")):
                if r.get(field) and n.get(field):
                    parts.append(f"{label} {r[field] / n[field]:.2f}x")
            lines.append(f"- {scenario}: " + ", ".join(parts))
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--targets", default="direct,nginx,memoctopus")
    parser.add_argument("--quality-seconds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "benches" / "results"))
    parser.add_argument("--proxy-binary", default=None, help="a memoctopus build to measure instead")
    parser.add_argument("--upstream", choices=("plain", "tls"), default="plain", help="the mock's plain port, or its TLS port (h2 and http/1.1 by ALPN)")
    args = parser.parse_args()
    if args.proxy_binary:
        global PROXY
        PROXY = Path(args.proxy_binary)
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    soft = 65535 if hard == resource.RLIM_INFINITY else min(65535, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    scenarios = [s for s in args.scenarios.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="memoctopus-bench-"))
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (workdir / sub).mkdir()
    files = {}
    for name, size in (("upload-5m", 5 << 20), ("upload-25m", 25 << 20)):
        path = workdir / f"{name}.multipart"
        multipart(path, size, "memoctopusbenchboundary")
        files[name] = (path, "memoctopusbenchboundary")

    targets = args.targets.split(",")
    runs = {t: [] for t in targets}
    qualities = {t: [] for t in targets}
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", flush=True)
        for t in targets:
            runs[t].append(run_target(t, workdir, files, args.duration, scenarios, args.upstream))
        if args.quality_seconds > 0:
            for t in targets:
                qualities[t].append(quality(t, workdir, args.quality_seconds, args.upstream))
    results = {t: median_rows(runs[t]) for t in targets}
    q = {}
    if args.quality_seconds > 0:
        for t in targets:
            q[t] = {k: statistics.median([r[k] for r in qualities[t]]) for k in qualities[t][0]}
    command = "bash benches/run.sh " + " ".join(sys.argv[1:])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    suffix = "-tls" if args.upstream == "tls" else ""
    (out / f"latest{suffix}.json").write_text(json.dumps({"results": results, "quality": q, "runs": runs, "qualities": qualities}, indent=1))
    if {"direct", "nginx"} <= set(targets) and any(t.startswith("memoctopus") for t in targets):
        md = table(results, q, args.runs, command.strip())
        (out / f"latest{suffix}.md").write_text(md + "\n")
        print()
        print(md)
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

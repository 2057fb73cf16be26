#!/usr/bin/env python3
"""The dashboard and the alert rules against a real Prometheus (Debian's package) that scrapes a
real proxy under a little traffic.

- `promtool check rules` and `promtool test rules` on config/prometheus/; the PrometheusRule in
  config/kubernetes/monitoring/ carries the same groups.
- The release binary runs in front of the mock upstream with what the panels show: two
  upstreams in PROXY_UPSTREAMS_FILE (the first unreachable, so requests fail over), named
  clients from a key file, one with a token budget it runs out of, the limits shared through a
  real redis-server, and the admin listener, which Prometheus scrapes every second with the
  alert rules loaded.
- Every query of every panel of config/grafana/memoctopus.json, with Grafana's variables set
  as Grafana would ($job, $__rate_interval), returns at least one series.
- The rules evaluate without error, and MemoctopusTokenBudgetExhausted fires for the client
  that spent its budget, and for no other.

Needs prometheus, promtool, redis-server, PyYAML and the release build
(`cargo build --release --bin memoctopus --example mock-upstream`). A missing part fails it:
it never passes without running.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")
RULES = os.path.join(ROOT, "config", "prometheus", "alerts.yml")
RULE_TESTS = os.path.join(ROOT, "config", "prometheus", "alerts.test.yml")
OPERATOR_RULE = os.path.join(ROOT, "config", "kubernetes", "monitoring", "prometheus-rule.yaml")
DASHBOARD = os.path.join(ROOT, "config", "grafana", "memoctopus.json")
WEB, BATCH = "ck-observability-web-0123456789", "ck-observability-batch-9876543210"


def fail(message):
    print(f"FAIL: {message}", flush=True)
    sys.exit(1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what, check, limit=30):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    fail(f"{what} within {limit} s")


def http(url, body=None, headers=None, timeout=10):
    request = urllib.request.Request(url, data=body, headers=headers or {}, method="POST" if body is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def started(args, marker, env=None):
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = marker(line)
        if found:
            # Keep reading its output, so that it never blocks on a full pipe.
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            return proc, found
    proc.kill()
    fail(f"{args[0]} did not start")


def check_rules():
    for cmd in (["promtool", "check", "rules", RULES], ["promtool", "test", "rules", RULE_TESTS]):
        print("  $ " + " ".join(os.path.relpath(c, ROOT) if c.startswith(ROOT) else c for c in cmd), flush=True)
        if subprocess.run(cmd, cwd=os.path.dirname(RULES)).returncode != 0:
            fail(" ".join(cmd))
    with open(RULES, encoding="utf-8") as f:
        groups = yaml.safe_load(f)["groups"]
    with open(OPERATOR_RULE, encoding="utf-8") as f:
        operator = yaml.safe_load(f)
    if operator["kind"] != "PrometheusRule" or operator["spec"]["groups"] != groups:
        fail(f"{OPERATOR_RULE} does not carry the groups of {RULES}")
    print(f"  the PrometheusRule carries the {sum(len(g['rules']) for g in groups)} rules of alerts.yml", flush=True)


def traffic(proxy, stop):
    """Chat JSON and SSE, a transcription and a stream the client leaves, as web; chat as
    batch until its budget refuses it; repeated until `stop` is set."""
    chat = json.dumps({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}).encode()
    stream = json.dumps({"model": "gpt-4", "stream": True, "messages": [{"role": "user", "content": "hi"}]}).encode()
    boundary = "obsboundary"
    audio = (
        f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp3\"\r\n"
        f"Content-Type: audio/mpeg\r\n\r\n".encode() + bytes(range(256)) * 40
        + f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\ngpt-4o-transcribe\r\n--{boundary}--\r\n".encode()
    )
    json_head = {"content-type": "application/json"}
    statuses = {}
    while not stop.is_set():
        for body, key, extra in (
            (chat, WEB, {}),
            (stream, WEB, {"x-mock-events": "4"}),
            (chat, BATCH, {}),
            (chat, WEB, {"x-mock-status": "429"}),
        ):
            status, _ = http(f"{proxy}/v1/chat/completions", body, {**json_head, "authorization": f"Bearer {key}", **extra})
            statuses[status] = statuses.get(status, 0) + 1
        http(f"{proxy}/v1/audio/transcriptions", audio,
             {"content-type": f"multipart/form-data; boundary={boundary}", "authorization": f"Bearer {WEB}"})
        # A stream the client leaves after its head.
        host, port = proxy.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as s:
            s.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Authorization: Bearer {WEB}\r\nx-mock-events: 50\r\nx-mock-interval-ms: 50\r\n"
                f"Content-Length: {len(stream)}\r\n\r\n".encode() + stream
            )
            s.recv(4096)
        time.sleep(0.2)
    return statuses


def query(prometheus, expr):
    status, body = http(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    answer = json.loads(body)
    if status != 200 or answer.get("status") != "success":
        fail(f"the query {expr!r} was refused: {answer}")
    return answer["data"]["result"]


def main():
    for tool in ("prometheus", "promtool", "redis-server"):
        if not shutil.which(tool):
            fail(f"{tool} is not installed")
    for binary in ("memoctopus", os.path.join("examples", "mock-upstream")):
        if not os.access(os.path.join(RELEASE, binary), os.X_OK):
            fail(f"target/release/{binary} is missing; cargo build --release --bin memoctopus --example mock-upstream")
    print("== alert rules", flush=True)
    check_rules()

    scratch = tempfile.mkdtemp(prefix="memoctopus-observability-")
    procs = []
    try:
        mock, mock_addr = started(
            [os.path.join(RELEASE, "examples", "mock-upstream"), "127.0.0.1:0"],
            lambda line: "listening on" in line and line.split("listening on ")[1].split()[0],
        )
        procs.append(mock)
        redis_port = free_port()
        redis = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(redis_port), "--save", "",
                                  "--appendonly", "no"], stdout=subprocess.DEVNULL)
        procs.append(redis)
        wait_for("redis-server answers", lambda: socket.create_connection(("127.0.0.1", redis_port), 1).close() is None)

        with open(os.path.join(scratch, "key-mock"), "w") as f:
            f.write("sk-observability-server-key\n")
        with open(os.path.join(scratch, "upstreams.toml"), "w") as f:
            f.write(
                f'[[upstream]]\nname = "down"\nbase_url = "http://127.0.0.1:{free_port()}/v1"\n'
                f'api_key_file = "key-mock"\npriority = 0\n\n'
                f'[[upstream]]\nname = "mock"\nbase_url = "http://{mock_addr}/v1"\napi_key_file = "key-mock"\npriority = 1\n'
            )
        with open(os.path.join(scratch, "clients"), "w") as f:
            f.write(f"web:{WEB}\nbatch:{BATCH} token_budget=200/hour\n")
        admin_port = free_port()
        env = {
            "PATH": os.environ.get("PATH", ""),
            "PROXY_UPSTREAMS_FILE": os.path.join(scratch, "upstreams.toml"),
            "PROXY_CLIENT_KEYS_FILE": os.path.join(scratch, "clients"),
            "PROXY_LIMITS_REDIS_URL": f"redis://127.0.0.1:{redis_port}",
            "PROXY_LIMITS_REDIS_PREFIX": f"observability-{os.getpid()}:",
            "PROXY_METRICS_ADDR": f"127.0.0.1:{admin_port}",
            "HOST": "127.0.0.1",
            "PORT": "0",
            "PROXY_LOG_FORMAT": "json",
        }

        def listening(line):
            try:
                event = json.loads(line)
            except ValueError:
                return None
            return event.get("address") if event.get("message") == "memoctopus listening" else None

        proxy_proc, proxy_addr = started([os.path.join(RELEASE, "memoctopus")], listening, env)
        procs.append(proxy_proc)
        proxy = f"http://{proxy_addr}"

        prom_port = free_port()
        with open(os.path.join(scratch, "prometheus.yml"), "w") as f:
            yaml.safe_dump({
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [RULES],
                "scrape_configs": [{"job_name": "memoctopus", "static_configs": [{"targets": [f"127.0.0.1:{admin_port}"]}]}],
            }, f)
        prom = subprocess.Popen(["prometheus", f"--config.file={scratch}/prometheus.yml",
                                 f"--storage.tsdb.path={scratch}/data", f"--web.listen-address=127.0.0.1:{prom_port}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(prom)
        prometheus = f"http://127.0.0.1:{prom_port}"
        wait_for("Prometheus is ready", lambda: http(f"{prometheus}/-/ready")[0] == 200)

        print("== traffic for 40 s, scraped every second", flush=True)
        stop = threading.Event()
        result = {}
        worker = threading.Thread(target=lambda: result.update(traffic(proxy, stop)))
        worker.start()
        time.sleep(40)
        stop.set()
        worker.join()
        print(f"  statuses the clients saw: {result}", flush=True)
        if not result.get(200) or not result.get(429):
            fail(f"the traffic did not go as planned: {result}")
        time.sleep(2)

        print("== every dashboard query returns a series", flush=True)
        with open(DASHBOARD, encoding="utf-8") as f:
            dashboard = json.load(f)
        empty = []
        count = 0
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                expr = target["expr"].replace("$__rate_interval", "1m").replace("$job", "memoctopus")
                count += 1
                series = query(prometheus, expr)
                if not series:
                    empty.append(f"{panel['title']}: {expr}")
                else:
                    print(f"  {len(series):3} series  {panel['title']}: {target.get('legendFormat', '')}", flush=True)
        if empty:
            fail("queries without data:\n  " + "\n  ".join(empty))
        print(f"  {count} queries of {len(dashboard['panels'])} panels and rows, each with data", flush=True)

        print("== the alert rules on the real series", flush=True)
        _, body = http(f"{prometheus}/api/v1/rules")
        rules = [r for g in json.loads(body)["data"]["groups"] for r in g["rules"]]
        broken = [f"{r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]
        if len(rules) == 0 or broken:
            fail(f"rules that do not evaluate: {broken or 'none loaded'}")
        _, body = http(f"{prometheus}/api/v1/alerts")
        alerts = json.loads(body)["data"]["alerts"]
        firing = sorted((a["labels"]["alertname"], a["labels"].get("client", "")) for a in alerts if a["state"] == "firing")
        print(f"  {len(rules)} rules evaluate; firing: {firing}", flush=True)
        if ("MemoctopusTokenBudgetExhausted", "batch") not in firing:
            fail("the spent budget of batch raised no alert")
        unexpected = [a for a in firing if a[0] in ("MemoctopusDrainStuck", "MemoctopusLimitsLocalFallback",
                                                      "MemoctopusKeyReloadFailing", "MemoctopusUpstreamCertificate")
                      or (a[0] == "MemoctopusTokenBudgetExhausted" and a[1] != "batch")]
        if unexpected:
            fail(f"alerts fired that nothing raised: {unexpected}")
    finally:
        for proc in reversed(procs):
            proc.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    print("OK", flush=True)


if __name__ == "__main__":
    main()

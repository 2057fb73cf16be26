#!/usr/bin/env python3
"""The deploy test: each Kubernetes manifest's memoctopus container, run the way the kubelet
runs it, with nothing but what the manifest and the README's Deploy section give it.

For config/kubernetes/sidecar.yaml and gateway.yaml in turn:
- the Secrets come from the README's own `kubectl create secret` lines, run through a stand-in
  for kubectl (tests/deploy/kubectl) that records each Secret's data;
- each Secret volume is laid out as the kubelet lays it: a timestamped directory, the `..data`
  symlink to it, one symlink per key, the volume's defaultMode and the pod's fsGroup;
- the pod is a network namespace of its own with an address on a veth pair; the container is
  a mount namespace with a read-only root, the volumes bind-mounted read-only at their
  mountPaths, the manifest's runAsUser, runAsGroup and fsGroup, no capabilities, its `env`
  and nothing else, in a memory cgroup with the manifest's memory limit;
- the probes go from outside the pod to the pod's address, with the manifest's ports, paths,
  periods and thresholds;
- the app's OPENAI_BASE_URL is used from inside the pod (sidecar) or from outside through the
  Service's port (gateway), with the Secret's client key where the manifest has client keys;
- PROXY_MAX_CONNECTIONS streams are held open at once: no OOM kill, and the peak is printed;
- SIGTERM with a stream in flight: /ready goes 503, the stream finishes, and the process exits
  0 before terminationGracePeriodSeconds, when it would be killed.

One value is not the manifest's: OPENAI_BASE_URL points the proxy at a mock upstream on the
host side of the pod's veth, since nothing here may reach api.openai.com.

Each manifest runs twice: first the release binary in namespaces made by hand (unshare,
setpriv, a memory cgroup), then the image built from config/Dockerfile, run by podman with the
same settings, the way a container runtime runs it for the kubelet.

Needs root, `ip`, `unshare`, `setpriv`, podman with runc, cgroup v1's memory controller (or
v2), PyYAML, and
the release binary and examples (`cargo build --release --bin memoctopus --examples`). If any
is missing it says so and fails: it never passes without running.
"""
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.parse
import time
import urllib.error
import urllib.request

LOG_TAIL = lambda: ""
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")


def fail(message):
    print(f"deploy test FAILED: {message}", flush=True)
    sys.exit(1)


def need(condition, message):
    if not condition:
        fail(message)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, **kw)


def mebibytes(quantity):
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    for suffix, factor in units.items():
        if quantity.endswith(suffix):
            return int(quantity[: -len(suffix)]) * factor
    return int(quantity)


def load_manifest(path):
    import yaml

    with open(path, encoding="utf-8") as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    service = next((d for d in docs if d["kind"] == "Service"), None)
    pod = deployment["spec"]["template"]["spec"]
    containers = pod.get("initContainers", []) + pod.get("containers", [])
    proxy = next(c for c in containers if c["name"] == "memoctopus")
    app = next((c for c in pod.get("containers", []) if c["name"] != "memoctopus"), None)
    return pod, proxy, app, service


def readme_secret_lines(section):
    """The shell lines of the README's Deploy subsection `section` that make Secrets."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    start = text.index(section)
    end = text.find("\n### ", start + 1)
    body = text[start:end]
    lines = []
    for block in re.findall(r"```sh\n(.*?)```", body, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith("kubectl create secret") or line.startswith("printf"):
                lines.append(line)
    need(lines, f"the README's {section!r} has no kubectl create secret line")
    return lines


def make_secrets(scratch, lines):
    secrets = os.path.join(scratch, "secrets")
    work = os.path.join(scratch, "work")
    os.makedirs(secrets)
    os.makedirs(work)
    stub = os.path.join(ROOT, "tests", "deploy")
    env = dict(os.environ, PATH=f"{stub}:{os.environ['PATH']}", MEMOCTOPUS_SECRETS=secrets)
    for line in lines:
        print(f"  $ {line}", flush=True)
        run(["bash", "-euo", "pipefail", "-c", line], cwd=work, env=env)
    made = {}
    for name in os.listdir(secrets):
        with open(os.path.join(secrets, name), encoding="utf-8") as f:
            made[name[: -len(".json")]] = json.load(f)
    return made


def lay_out_volume(scratch, volume, secrets, mode, group):
    """A Secret volume as the kubelet's atomic writer leaves it."""
    name = volume["secret"]["secretName"]
    need(name in secrets, f"volume {volume['name']}: the README makes no Secret {name!r}")
    root = os.path.join(scratch, "volumes", volume["name"])
    stamp = time.strftime("..%Y_%m_%d_%H_%M_%S.000000001")
    os.makedirs(os.path.join(root, stamp))
    data = secrets[name]
    items = volume["secret"].get("items")
    if items:
        for item in items:
            need(item["key"] in data, f"volume {volume['name']}: Secret {name!r} has no key {item['key']!r}")
        data = {item["path"]: data[item["key"]] for item in items}
    for key, value in data.items():
        path = os.path.join(root, stamp, key)
        with open(path, "w", encoding="utf-8") as f:
            f.write(value)
        os.chown(path, 0, group)
        os.chmod(path, mode)
        os.symlink(os.path.join("..data", key), os.path.join(root, key))
    os.symlink(stamp, os.path.join(root, "..data"))
    for d in (root, os.path.join(root, stamp)):
        os.chown(d, 0, group)
        os.chmod(d, 0o1777 if d == root else 0o755)
    return root


class MemoryCgroup:
    def __init__(self, name, limit):
        line = next(l for l in open("/proc/self/cgroup").read().splitlines() if ":memory:" in l or l.startswith("0::"))
        self.v1 = ":memory:" in line
        base = "/sys/fs/cgroup/memory" if self.v1 else "/sys/fs/cgroup"
        self.path = os.path.join(base + line.split(":", 2)[2], name)
        os.makedirs(self.path, exist_ok=True)
        limit_file = "memory.limit_in_bytes" if self.v1 else "memory.max"
        with open(os.path.join(self.path, limit_file), "w") as f:
            f.write(str(limit))

    def read(self, name):
        with open(os.path.join(self.path, name)) as f:
            return f.read()

    def peak(self):
        return int(self.read("memory.max_usage_in_bytes" if self.v1 else "memory.peak"))

    def oom_kills(self):
        text = self.read("memory.oom_control" if self.v1 else "memory.events")
        match = re.search(r"oom_kill (\d+)", text)
        return int(match.group(1)) if match else 0

    def remove(self):
        for _ in range(50):
            try:
                os.rmdir(self.path)
                return
            except OSError:
                time.sleep(0.1)


def http(url, method="GET", body=None, headers=None, timeout=5, ns=None):
    """Status and body of one request; from inside the pod's network namespace with `ns`."""
    if ns:
        cmd = ["ip", "netns", "exec", ns, "curl", "-s", "-o", "-", "-w", "\n%{http_code}",
               "-X", method, "--max-time", str(timeout), url]
        for k, v in (headers or {}).items():
            cmd += ["-H", f"{k}: {v}"]
        if body is not None:
            cmd += ["--data-binary", body]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        text, _, status = out.rpartition("\n")
        return int(status or 0), text
    request = urllib.request.Request(url, data=body.encode() if body else None, method=method,
                                     headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return 0, ""


def probe(name, spec, ports, pod_ip, deadline_factor=1):
    """Runs a probe as the kubelet would: every periodSeconds until success, or fails after
    failureThreshold failures."""
    get = spec["httpGet"]
    if isinstance(get["port"], str):
        need(get["port"] in ports, f"the {name} probe's port {get['port']!r} is no container port")
    port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
    period = spec.get("periodSeconds", 10)
    threshold = spec.get("failureThreshold", 3) * deadline_factor
    url = f"http://{pod_ip}:{port}{get['path']}"
    for attempt in range(threshold):
        status, _ = http(url, timeout=spec.get("timeoutSeconds", 1))
        if 200 <= status < 400:
            print(f"  {name} probe {url}: {status} after {attempt + 1} tries", flush=True)
            return url
        time.sleep(period)
    fail(f"{name} probe {url} failed {threshold} times (period {period}s){LOG_TAIL()}")


def stream_quality(url, streams, seconds, key=None, ns=None):
    cmd = [os.path.join(RELEASE, "examples", "stream-quality"), url, str(streams), str(seconds), "20", "200"]
    if ns:
        cmd = ["ip", "netns", "exec", ns] + cmd
    env = dict(os.environ)
    if key:
        env["STREAM_AUTHORIZATION"] = f"Bearer {key}"
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=seconds + 60)
    need(out.returncode == 0, f"stream-quality failed: {out.stderr}")
    return json.loads(out.stdout)


class BareContainer:
    """The release binary as the container: its memory cgroup, a private mount namespace, the
    volumes read-only at their mountPaths on a tmpfs, the root read-only, the manifest's user
    and groups with no capabilities, its env alone, in /."""

    def __init__(self, name, binary, ns, env, limit, mounts, uid, gid, fs_group, scratch):
        self.cgroup = MemoryCgroup(name, limit)
        script = ["mount --make-rprivate /"]
        for top in sorted({"/".join(m.split("/")[:3]) for _, m in mounts}):
            script += [f"mkdir -p {top}", f"mount -t tmpfs -o mode=755 tmpfs {top}"]
        for source, target in mounts:
            script.append(f"mkdir -p {target} && mount --bind {source} {target} && mount -o remount,bind,ro {target}")
        script.append("mount --bind / / && mount -o remount,bind,ro /")
        envs = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        script.append(f"cd / && exec setpriv --reuid {uid} --regid {gid} --groups {fs_group} "
                      f"--no-new-privs --inh-caps=-all --bounding-set=-all env -i {envs} {binary}")
        self.log = os.path.join(scratch, f"{name}.log")
        # The process joins the cgroup before it execs anything (`ip netns exec` mounts a
        # sysfs of its own, where the cgroup cannot be named): it waits for a line first.
        container = " ".join(shlex.quote(a) for a in
                             ["ip", "netns", "exec", ns, "unshare", "--mount", "--", "sh", "-euc",
                              "\n".join(script)])
        self.proc = subprocess.Popen(["sh", "-c", f"read go && exec {container}"], stdin=subprocess.PIPE,
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT)
        with open(os.path.join(self.cgroup.path, "cgroup.procs"), "w") as f:
            f.write(str(self.proc.pid))
        self.proc.stdin.write(b"go\n")
        self.proc.stdin.close()

    def running(self):
        return self.proc.poll() is None

    def terminate(self):
        os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def usage(self):
        return int(self.cgroup.read("memory.usage_in_bytes" if self.cgroup.v1 else "memory.current"))

    def peak(self):
        return self.cgroup.peak()

    def oom_killed(self):
        return self.cgroup.oom_kills() > 0

    def log_text(self):
        with open(self.log) as f:
            return f.read()

    def remove(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.cgroup.remove()


PODMAN_CONF = "[containers]\ndefault_ulimits = []\n"


def podman(*args, **kw):
    env = dict(os.environ, CONTAINERS_CONF=os.path.join(tempfile.gettempdir(), "memoctopus-podman.conf"))
    with open(env["CONTAINERS_CONF"], "w") as f:
        f.write(PODMAN_CONF)
    return subprocess.run(["podman", "--runtime", "runc", *args], env=env, text=True, capture_output=True, **kw)


class ImageContainer:
    """The image, run by podman as the kubelet's runtime would: the pod's network namespace, a
    read-only root with no tmpfs added, the manifest's user, groups and env, no capabilities,
    the memory limit, the Secret volumes read-only at their mountPaths."""

    def __init__(self, name, image, ns, env, limit, mounts, uid, gid, fs_group, scratch):
        self.name = name
        podman("rm", "-f", name)
        args = ["run", "-d", "--name", name, "--network", f"ns:/run/netns/{ns}",
                "--read-only", "--read-only-tmpfs=false", "--user", f"{uid}:{gid}",
                "--group-add", str(fs_group), "--cap-drop", "all",
                "--security-opt", "no-new-privileges", "--memory", str(limit),
                "--memory-swap", str(limit)]
        for source, target in mounts:
            args += ["-v", f"{source}:{target}:ro"]
        for k, v in env.items():
            args += ["--env", f"{k}={v}"]
        out = podman(*args, image)
        need(out.returncode == 0, f"podman run failed: {out.stderr}")

    def inspect(self, field):
        return podman("inspect", "--format", "{{" + field + "}}", self.name).stdout.strip()

    def running(self):
        return self.inspect(".State.Running") == "true"

    def terminate(self):
        podman("kill", "--signal", "TERM", self.name)

    def wait(self, timeout):
        out = podman("wait", self.name, timeout=timeout)
        return int(out.stdout.strip().splitlines()[-1])

    def cgroup_file(self, name):
        path = self.inspect(".State.CgroupPath")
        with open(f"/sys/fs/cgroup/memory{path}/{name}") as f:
            return int(f.read())

    def usage(self):
        return self.cgroup_file("memory.usage_in_bytes")

    def peak(self):
        return self.cgroup_file("memory.max_usage_in_bytes")

    def oom_killed(self):
        return self.inspect(".State.OOMKilled") == "true"

    def log_text(self):
        out = podman("logs", self.name)
        return out.stdout + out.stderr

    def remove(self):
        podman("rm", "-f", "-t", "0", self.name)


def build_image(scratch):
    """config/Dockerfile with its build stage replaced by the release binary's root filesystem,
    laid out by the same config/image-rootfs.sh the build stage runs."""
    context = os.path.join(scratch, "build-stage")
    run([os.path.join(ROOT, "config", "image-rootfs.sh"), os.path.join(RELEASE, "memoctopus"), context])
    out = podman("build", "-q", "--build-context", f"build={context}", "-f",
                 os.path.join(ROOT, "config", "Dockerfile"), "-t", "localhost/memoctopus:deploy-test", ROOT)
    need(out.returncode == 0, f"podman build failed: {out.stderr}")
    print(f"  built the image localhost/memoctopus:deploy-test from config/Dockerfile", flush=True)
    return "localhost/memoctopus:deploy-test"


def redis_service(pod, proxy, secrets, host_ip):
    """The Redis of PROXY_LIMITS_REDIS_URL_FILE, if the manifest sets it: the Secret's URL
    rewritten from the Service's name to `host_ip`, and its password."""
    env = {e["name"]: str(e.get("value", "")) for e in proxy.get("env", [])}
    path = env.get("PROXY_LIMITS_REDIS_URL_FILE")
    if not path:
        return None
    mount = next(m for m in proxy["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secret = secrets[volume["secret"]["secretName"]]
    url = urllib.parse.urlsplit(secret["url"].strip())
    need(url.scheme == "redis" and url.password, f"the Secret's URL is not redis:// with a password")
    need(url.password == secret["password"], "the Secret's URL and password differ")
    secret["url"] = f"redis://:{url.password}@{host_ip}:{url.port or 6379}\n"
    return {"host": host_ip, "port": url.port or 6379, "password": url.password}


def redis_cli(redis, *args):
    out = subprocess.run(["redis-cli", "-h", redis["host"], "-p", str(redis["port"]), "-a", redis["password"],
                          "--no-auth-warning", *args], capture_output=True, text=True)
    return out.stdout.strip()


def pod_test(manifest, section, index, image=None):
    print(f"== {manifest}{' on the image' if image else ''}", flush=True)
    pod, proxy, app, service = load_manifest(os.path.join(ROOT, "config", "kubernetes", manifest))
    scratch = tempfile.mkdtemp(prefix=f"memoctopus-pod-{index}-")
    os.chmod(scratch, 0o755)
    secrets = make_secrets(scratch, readme_secret_lines(section))
    security = {**pod.get("securityContext", {}), **proxy.get("securityContext", {})}
    uid, gid = security["runAsUser"], security["runAsGroup"]
    fs_group = pod["securityContext"].get("fsGroup", gid)
    need(proxy["securityContext"].get("readOnlyRootFilesystem"), "the container's root is writable")
    ns, host_if = f"memo-pod-{index}", f"memo-h{index}"
    host_ip, pod_ip = f"10.213.{index}.1", f"10.213.{index}.2"
    # The shared limits' Redis: the Secret's URL names a Service; here a real redis-server on
    # the pod network's host side stands in for it, with the Secret's password.
    redis = redis_service(pod, proxy, secrets, host_ip)
    volumes = {}
    for volume in pod.get("volumes", []):
        if "secret" in volume:
            mode = volume["secret"].get("defaultMode", 0o644)
            volumes[volume["name"]] = lay_out_volume(scratch, volume, secrets, mode, fs_group)
    binary = os.path.join(scratch, "memoctopus")
    shutil.copy(os.path.join(RELEASE, "memoctopus"), binary)
    os.chmod(binary, 0o755)

    cleanup = []
    try:
        # What a run that was killed may have left behind.
        subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL)
        subprocess.run(["ip", "link", "del", host_if], stderr=subprocess.DEVNULL)
        run(["ip", "netns", "add", ns])
        cleanup.append(lambda: subprocess.run(["ip", "netns", "del", ns]))
        run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns])
        cleanup.append(lambda: subprocess.run(["ip", "link", "del", host_if], stderr=subprocess.DEVNULL))
        run(["ip", "addr", "add", f"{host_ip}/24", "dev", host_if])
        run(["ip", "link", "set", host_if, "up"])
        for cmd in (["ip", "addr", "add", f"{pod_ip}/24", "dev", "eth0"],
                    ["ip", "link", "set", "eth0", "up"], ["ip", "link", "set", "lo", "up"]):
            run(["ip", "netns", "exec", ns] + cmd)

        mock = subprocess.Popen([os.path.join(RELEASE, "examples", "mock-upstream"), f"{host_ip}:9100"],
                                stdout=subprocess.DEVNULL)
        cleanup.append(mock.kill)
        if redis:
            server = subprocess.Popen(["redis-server", "--bind", host_ip, "--port", str(redis["port"]),
                                       "--requirepass", redis["password"], "--save", "", "--appendonly", "no"],
                                      stdout=subprocess.DEVNULL)
            cleanup.append(server.kill)
            deadline = time.monotonic() + 10
            while redis_cli(redis, "PING") != "PONG":
                need(time.monotonic() < deadline, "redis-server did not start")
                time.sleep(0.1)

        limit = mebibytes(proxy["resources"]["limits"]["memory"])
        env = {e["name"]: str(e["value"]) for e in proxy.get("env", [])}
        env["OPENAI_BASE_URL"] = f"http://{host_ip}:9100/v1"
        mounts = []
        for mount in proxy.get("volumeMounts", []):
            need(not mount.get("subPath"), "a subPath mount is never updated when its Secret changes")
            mounts.append((volumes[mount["name"]], mount["mountPath"]))

        def start(env, tag):
            name = f"memo-pod-{index}-{tag}"
            if image:
                container = ImageContainer(name, image, ns, env, limit, mounts, uid, gid, fs_group, scratch)
            else:
                container = BareContainer(name, binary, ns, env, limit, mounts, uid, gid, fs_group, scratch)
            cleanup.append(container.remove)
            global LOG_TAIL
            LOG_TAIL = lambda: "; the proxy's output: " + container.log_text()[-2000:]
            return container

        ports = {p["name"]: p["containerPort"] for p in proxy.get("ports", [])}
        client_key = None
        if "PROXY_CLIENT_KEYS_FILE" in env:
            clients = next(v for s in secrets.values() for k, v in s.items() if k == os.path.basename(env["PROXY_CLIENT_KEYS_FILE"]))
            entries = [l.strip() for l in clients.splitlines() if l.strip() and not l.startswith("#")]
            need(len(entries) >= 2, f"the README's client-keys Secret holds {len(entries)} entries")
            client_key = entries[0].split(":", 1)[-1]
        if app is not None:
            app_env = {e["name"]: e["value"] for e in app.get("env", [])}
            base, where = app_env["OPENAI_BASE_URL"], ns
            headers = {"Authorization": f"Bearer {app_env.get('OPENAI_API_KEY', '')}"}
        else:
            service_port = next(p for p in service["spec"]["ports"] if p["targetPort"] == "proxy")
            base, where = f"http://{pod_ip}:{ports.get('proxy', 8000)}/v1", None
            print(f"  the Service's port {service_port['port']} goes to {base}", flush=True)
            headers = {"Authorization": f"Bearer {client_key}"}

        # PROXY_MAX_CONNECTIONS streams at once, under the memory limit. One test client holds
        # them all, so the per-client limits, which would stop it at its own share, are lifted
        # for this container alone.
        cap = int(env.get("PROXY_MAX_CONNECTIONS", "10000"))
        lifted = {k: v for k, v in env.items() if k not in ("PROXY_CLIENT_MAX_IN_FLIGHT", "PROXY_CLIENT_RATE")}
        proc = start(lifted, "streams")
        probe("readiness", proxy["readinessProbe"], ports, pod_ip)
        baseline = proc.usage()
        result = stream_quality(base + "/chat/completions", cap, 6, client_key, ns=where)
        peak = proc.peak()
        print(f"  {cap} streams at once: {result['completed']} completed, {result['failed']} failed; "
              f"peak {peak / (1 << 20):.1f} MiB of {limit / (1 << 20):.0f} MiB, "
              f"{(peak - baseline) / cap / 1024:.1f} KiB a stream over {baseline / (1 << 20):.1f} MiB at rest",
              flush=True)
        need(not proc.oom_killed() and proc.running(), "the proxy was OOM-killed")
        need(result["failed"] == 0 and result["completed"] >= cap, f"streams failed: {result}")
        proc.remove()

        # The container as the manifest has it.
        proc = start(env, "pod")
        started = time.monotonic()
        if "startupProbe" in proxy:
            probe("startup", proxy["startupProbe"], ports, pod_ip)
        ready_url = probe("readiness", proxy["readinessProbe"], ports, pod_ip)
        probe("liveness", proxy["livenessProbe"], ports, pod_ip)
        print(f"  ready {time.monotonic() - started:.2f}s after start", flush=True)
        need(proc.running(), f"the proxy exited: {proc.log_text()}")
        need("\"level\":\"ERROR\"" not in proc.log_text(), "the proxy logged an error at start")

        # The app's requests, as the app makes them.
        chat = '{"model":"gpt-4","messages":[{"role":"user","content":"Hello!"}]}'
        if app is None:
            status, body = http(base + "/chat/completions", "POST", chat,
                                {"Content-Type": "application/json"}, ns=where)
            need(status == 401, f"without a client key: {status} {body}")
        status, body = http(base + "/chat/completions", "POST", chat,
                            {"Content-Type": "application/json", **headers}, ns=where)
        need(status == 200 and "chat.completion" in body, f"the app's request: {status} {body}")
        print(f"  the app's request through {base}: {status}", flush=True)
        if redis:
            deadline = time.monotonic() + 5
            while 'memoctopus_limits_backend{state="shared"} 1' not in http(f"http://{pod_ip}:{ports['admin']}/metrics")[1]:
                need(time.monotonic() < deadline, "the shared limits are not in force")
                time.sleep(0.2)
            status, _ = http(base + "/chat/completions", "POST", chat,
                             {"Content-Type": "application/json", **headers}, ns=where)
            need(status == 200, f"a request under the shared limits: {status}")
            keys = redis_cli(redis, "--scan").split()
            need(any(k.endswith(":rate") for k in keys), f"no client's rate in Redis: {keys}")
            need(not any(client_key in k for k in keys), "a client key is in Redis")
            print(f"  the limits are shared through Redis: {', '.join(sorted(keys))}", flush=True)
        if app is not None:
            status, _ = http(f"http://{pod_ip}:8000/health")
            need(status == 0, "the sidecar's proxy port answers outside the pod")

        # SIGTERM with a stream in flight, then the kill at terminationGracePeriodSeconds.
        grace = pod.get("terminationGracePeriodSeconds", 30)
        stream_cmd = ["curl", "-s", "-N", "-X", "POST", "-H", "Content-Type: application/json",
                      "-H", "x-mock-events: 30", "-H", "x-mock-interval-ms: 200",
                      "-H", f"Authorization: {headers['Authorization']}",
                      "--data-binary", '{"stream":true}', base + "/chat/completions"]
        if where:
            stream_cmd = ["ip", "netns", "exec", where] + stream_cmd
        stream = subprocess.Popen(stream_cmd, stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        terminated = time.monotonic()
        proc.terminate()
        time.sleep(0.5)
        status, _ = http(ready_url)
        need(status == 503, f"/ready after SIGTERM: {status}")
        out, _ = stream.communicate(timeout=grace)
        need(out.rstrip().endswith("data: [DONE]"), f"the stream in flight was cut: {out[-200:]!r}")
        try:
            code = proc.wait(timeout=max(0.0, grace - (time.monotonic() - terminated)))
        except subprocess.TimeoutExpired:
            proc.remove()
            fail(f"still running at terminationGracePeriodSeconds ({grace}s): killed")
        need(code == 0, f"exit status {code} after SIGTERM")
        print(f"  SIGTERM: /ready 503, the stream finished, exit 0 after "
              f"{time.monotonic() - terminated:.1f}s (grace {grace}s)", flush=True)
        logged = proc.log_text()
        for secret in secrets.values():
            for value in secret.values():
                for line in value.splitlines():
                    key = line.split(":", 1)[-1].strip()
                    need(not key or key not in logged, "a key from a Secret is in the log")
    finally:
        for step in reversed(cleanup):
            step()
        shutil.rmtree(scratch, ignore_errors=True)


def main():
    need(os.geteuid() == 0, "needs root (network namespaces, mounts, cgroups)")
    for tool in ("ip", "unshare", "setpriv", "curl", "openssl"):
        need(shutil.which(tool), f"{tool} is not installed")
    for binary in ("memoctopus", "examples/mock-upstream", "examples/stream-quality"):
        need(os.path.exists(os.path.join(RELEASE, binary)),
             f"target/release/{binary} is missing: cargo build --release --bin memoctopus --examples")
    try:
        import yaml  # noqa: F401
    except ImportError:
        fail("PyYAML is not installed")
    pod_test("sidecar.yaml", "### As a sidecar", 1)
    pod_test("gateway.yaml", "### As a shared gateway", 2)
    need(shutil.which("podman") and shutil.which("runc"), "podman and runc are not installed")
    scratch = tempfile.mkdtemp(prefix="memoctopus-image-")
    try:
        image = build_image(scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    pod_test("sidecar.yaml", "### As a sidecar", 3, image)
    pod_test("gateway.yaml", "### As a shared gateway", 4, image)
    print("deploy test passed: 4 passed, 0 failed", flush=True)


if __name__ == "__main__":
    main()

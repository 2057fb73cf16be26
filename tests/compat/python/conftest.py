"""Starts the real memoctopus binary in front of the project's mock upstream: its plain port, or,
with COMPAT_UPSTREAM=tls, its TLS port (h2 and http/1.1 by ALPN, a test CA the proxy trusts
through PROXY_UPSTREAM_CA), which is the path users take to api.openai.com."""

import json
import os
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
RELEASE = ROOT / "target" / "release"
SERVER_KEY = "sk-compat-server-key-000111"
CLIENT_KEY = "ck-compat-client-key-222333"
FAST_KEY = "ck-compat-fast-key-666777"
TLS = os.environ.get("COMPAT_UPSTREAM") == "tls"
CA = Path(os.environ.get("TMPDIR", "/tmp")) / f"memoctopus-compat-ca-{os.getpid()}.pem"


def _start(args, env, ready):
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 20
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = ready(line)
        if found:
            return proc, found
    proc.kill()
    raise RuntimeError(f"{args[0]} did not start")


@pytest.fixture(scope="session")
def mock_upstream():
    args = [str(RELEASE / "examples" / "mock-upstream"), "127.0.0.1:0"]
    if TLS:
        args += ["--tls", "127.0.0.1:0", str(CA)]

    def ready(line):
        if "listening on" not in line or TLS != line.strip().endswith("(TLS)"):
            return None
        return line.split("listening on ")[1].split()[0]

    proc, addr = _start(args, dict(os.environ), ready)
    yield addr
    proc.kill()


def _proxy(mock_addr, extra=None, base_path="/v1"):
    env = {
        "PATH": os.environ.get("PATH", ""),
        "OPENAI_API_KEY": SERVER_KEY,
        "OPENAI_BASE_URL": f"http://{mock_addr}{base_path}",
        **(
            {
                "OPENAI_BASE_URL": f"https://localhost:{mock_addr.rsplit(':', 1)[1]}{base_path}",
                "PROXY_UPSTREAM_CA": str(CA),
            }
            if TLS
            else {}
        ),
        "HOST": "127.0.0.1",
        "PORT": "0",
        "PROXY_LOG_FORMAT": "json",
        "PROXY_UPSTREAM_PROTOCOL": os.environ.get("COMPAT_PROTOCOL", "auto"),
        **(extra or {}),
    }
    if "PROXY_UPSTREAMS_FILE" in env:
        # The file names the upstreams and their keys, in place of these.
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
            del env[name]

    def ready(line):
        try:
            event = json.loads(line)
        except ValueError:
            return None
        return event.get("address") if event.get("message") == "memoctopus listening" else None

    return _start([str(RELEASE / "memoctopus")], env, ready)


def _serving(mock_addr, extra=None, base_path="/v1"):
    """A proxy for one fixture: yields its base URL, and stops it afterwards."""
    proc, addr = _proxy(mock_addr, extra, base_path)
    yield f"http://{addr}/v1"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def proxy_url(mock_upstream):
    yield from _serving(mock_upstream)


@pytest.fixture(scope="session")
def keyed_proxy_url(mock_upstream):
    yield from _serving(mock_upstream, {"PROXY_CLIENT_KEYS": CLIENT_KEY})


@pytest.fixture(scope="session")
def limited_proxy_url(mock_upstream):
    """One client, `app`, allowed one request a second with no burst beyond one."""
    yield from _serving(
        mock_upstream,
        {"PROXY_CLIENT_KEYS": f"app:{CLIENT_KEY}", "PROXY_CLIENT_RATE": "60", "PROXY_CLIENT_RATE_BURST": "1"},
    )


@pytest.fixture(scope="session")
def budget_proxy_url(mock_upstream):
    """Limits in the key entries: `team` may spend 60 tokens a minute; `fast` may send one
    request a second."""
    yield from _serving(
        mock_upstream,
        {"PROXY_CLIENT_KEYS": f"team:{CLIENT_KEY} token_budget=60/minute,fast:{FAST_KEY} rate=60 burst=1"},
    )


@pytest.fixture(scope="session")
def azure_proxy_url(mock_upstream):
    """In front of an Azure-style upstream: deployments in the path, api-version, api-key."""
    yield from _serving(
        mock_upstream,
        {
            "PROXY_UPSTREAM_AUTH": "api-key",
            "PROXY_UPSTREAM_QUERY": "api-version=2024-10-21",
            "PROXY_EXTRA_ROUTES": "POST /v1/deployments/*",
            "PROXY_CLIENT_KEYS": f"azure-app:{CLIENT_KEY}",
        },
        base_path="/openai",
    )


@pytest.fixture(scope="session")
def realtime_proxy_url(mock_upstream):
    """With the Realtime API's WebSocket enabled, and a client key."""
    yield from _serving(
        mock_upstream,
        {"PROXY_EXTRA_ROUTES": "GET /v1/realtime", "PROXY_CLIENT_KEYS": f"voice-app:{CLIENT_KEY}"},
    )


class _Refusing(BaseHTTPRequestHandler):
    """An upstream that answers every request as OpenAI does past a rate limit."""

    seen = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        _Refusing.seen.append(self.headers.get("authorization"))
        body = json.dumps(
            {
                "error": {
                    "message": "Rate limit reached for gpt-4 on requests per min (RPM)",
                    "type": "requests",
                    "param": None,
                    "code": "rate_limit_exceeded",
                }
            }
        ).encode()
        self.send_response(429)
        self.send_header("content-type", "application/json")
        self.send_header("retry-after", "1")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def two_upstreams(mock_upstream, tmp_path_factory):
    """PROXY_UPSTREAMS_FILE with two upstreams: first (priority 0) one that answers 429 with
    Retry-After: 1, then the mock. Yields the proxy's base URL and what the first one saw."""
    refusing = ThreadingHTTPServer(("127.0.0.1", 0), _Refusing)
    threading.Thread(target=refusing.serve_forever, daemon=True).start()
    folder = tmp_path_factory.mktemp("upstreams")
    (folder / "key-refusing").write_text("sk-refusing-key\n")
    (folder / "key-mock").write_text(SERVER_KEY + "\n")
    port = mock_upstream.rsplit(":", 1)[1]
    mock_base = f"https://localhost:{port}/v1" if TLS else f"http://{mock_upstream}/v1"
    (folder / "upstreams.toml").write_text(
        f"""
[[upstream]]
name = "refusing"
base_url = "http://127.0.0.1:{refusing.server_port}/v1"
api_key_file = "key-refusing"
priority = 0

[[upstream]]
name = "mock"
base_url = "{mock_base}"
api_key_file = "key-mock"
priority = 1
"""
    )
    for url in _serving(mock_upstream, {"PROXY_UPSTREAMS_FILE": str(folder / "upstreams.toml")}):
        yield url, _Refusing.seen
    refusing.shutdown()

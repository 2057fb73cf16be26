#!/usr/bin/env python3
"""Memory per idle client connection: RSS of memoctopus before and after N keep-alive
connections that each made one request and then sit idle. (That PROXY_MAX_CONNECTIONS bounds
them is asserted in tests/connections.rs.)

    python3 benches/idle_memory.py [N]      (after benches/run.sh has built the binaries)
"""

import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import MOCK, PROXY, free_port, memoctopus_env, status_kib, wait_port  # noqa: E402


def open_idle(port, n, connect_timeout=None):
    conns = []
    request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=connect_timeout)
            s.sendall(request)
            conns.append(s)
        except OSError:
            continue  # the listen backlog is full
    opened = len(conns)
    answered = 0
    for s in conns:
        s.settimeout(0.5)
        try:
            if s.recv(4096).startswith(b"HTTP/1.1 200"):
                answered += 1
        except OSError:
            pass
    return conns, answered, opened


def measure(n, max_connections, connect_timeout=None):
    mock_port, port = free_port(), free_port()
    mock = subprocess.Popen([str(MOCK), f"127.0.0.1:{mock_port}"], stdout=subprocess.DEVNULL)
    env = memoctopus_env(
        mock_port, port, PROXY_MAX_CONNECTIONS=str(max_connections), PROXY_HEADER_READ_TIMEOUT="60s"
    )
    proxy = subprocess.Popen([str(PROXY)], env=env)
    try:
        wait_port(port)
        time.sleep(0.3)
        before = status_kib(proxy.pid, "VmRSS")
        conns, answered, opened = open_idle(port, n, connect_timeout)
        time.sleep(0.5)
        after = status_kib(proxy.pid, "VmRSS")
        for s in conns:
            s.close()
        return before, after, answered, opened
    finally:
        proxy.terminate()
        mock.terminate()
        proxy.wait()
        mock.wait()


def main():
    import resource

    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65535, hard), hard))
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    before, after, answered, _ = measure(n, 100_000)
    print(f"{n} idle keep-alive connections: RSS {before} KiB -> {after} KiB, "
          f"{(after - before) * 1024 / max(answered, 1):.0f} bytes per connection ({answered} answered)")



if __name__ == "__main__":
    main()

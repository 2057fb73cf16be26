#!/usr/bin/env python3
"""Cost guard: the proxy's syscalls per chat JSON exchange and per forwarded SSE event, counted
with `strace -c -f` on the release binary in front of the mock upstream. Counts do not move
with the machine's speed the way CPU times do. Each figure is the difference between a long and
a short run, so start-up and shutdown cancel out, and the lowest of two tries. A change that
raises a count past its bound fails here; one that earns a lower count lowers the bound.

    python3 tests/cost/syscalls.py        # after cargo build --release --bin memoctopus --examples

MEMOCTOPUS_BINARY=PATH counts another build, for an A/B.
"""
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RELEASE = os.path.join(ROOT, "target", "release")

# Today's counts of the syscalls that move bytes (6.2-6.4 per exchange: the client's read and
# write, the upstream's write and read, and a share of partial reads; 2.0 per event: one read
# from the upstream, one write to the client), with room for the share's drift. One syscall
# more per exchange, or half a syscall more per event, fails.
PER_EXCHANGE = 7.0
PER_EVENT = 2.25


MOVING = {"read", "write", "readv", "writev", "recvfrom", "sendto", "recvmsg", "sendmsg",
          "accept4", "connect", "socket", "close", "shutdown", "setsockopt", "getsockopt"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port):
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"nothing listens on {port}")


def traced(mock_port, work):
    """Total syscalls of one proxy process that serves `work` and is then stopped."""
    port = free_port()
    out = f"/tmp/memoctopus-strace-{os.getpid()}.txt"
    env = {"OPENAI_API_KEY": "sk-cost-guard", "OPENAI_BASE_URL": f"http://127.0.0.1:{mock_port}/v1",
           "HOST": "127.0.0.1", "PORT": str(port), "PATH": os.environ["PATH"]}
    binary = os.environ.get("MEMOCTOPUS_BINARY", os.path.join(RELEASE, "memoctopus"))
    proxy = subprocess.Popen(["strace", "-f", "-c", "-o", out, binary],
                             env=env, cwd="/", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(port)
        time.sleep(0.3)
        work(port)
    finally:
        # SIGTERM to the proxy itself (strace's child): it drains and exits, then strace reports.
        child = subprocess.run(["pgrep", "-P", str(proxy.pid)], capture_output=True, text=True).stdout.split()
        for pid in child:
            os.kill(int(pid), 15)
        proxy.wait(timeout=30)
    text = open(out).read()
    os.unlink(out)
    counts = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][0].isdigit() and fields[-1] != "total":
            counts[fields[-1]] = int(fields[3])
    if not counts:
        sys.exit(f"no strace summary in {text}")
    # The syscalls that move bytes or sockets. The ones that wait (epoll_wait, futex) depend on
    # how the scheduler happened to interleave the threads, and would blur the count.
    return sum(n for name, n in counts.items() if name in MOVING)


def chats(n, events=None):
    def work(port):
        conn = http.client.HTTPConnection("127.0.0.1", port)
        headers = {"Content-Type": "application/json"}
        if events is not None:
            headers.update({"x-mock-events": str(events), "x-mock-interval-ms": "2"})
        for _ in range(n):
            body = b'{"stream":true}' if events is not None else b"{}"
            conn.request("POST", "/v1/chat/completions", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            if response.status != 200:
                sys.exit(f"status {response.status}")
        conn.close()
    return work


def lowest(mock_port, short, long, units):
    return min((traced(mock_port, long) - traced(mock_port, short)) / units for _ in range(2))


def main():
    if not shutil.which("strace"):
        sys.exit("syscall guard FAILED: strace is not installed")
    mock_port = free_port()
    mock = subprocess.Popen([os.path.join(RELEASE, "examples", "mock-upstream"), f"127.0.0.1:{mock_port}"],
                            stdout=subprocess.DEVNULL)
    try:
        wait_for(mock_port)
        per_exchange = lowest(mock_port, chats(100), chats(1100), 1000)
        per_event = lowest(mock_port, chats(10, 10), chats(10, 110), 10 * 100)
    finally:
        mock.kill()
    print(f"syscalls: {per_exchange:.2f} per chat JSON exchange (bound {PER_EXCHANGE}), "
          f"{per_event:.2f} per SSE event (bound {PER_EVENT})")
    failed = per_exchange > PER_EXCHANGE or per_event > PER_EVENT
    print(f"syscall guard: {0 if failed else 2} passed, {2 if failed else 0} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()

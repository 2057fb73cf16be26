"""The README's first commands, pasted in order as a new user would, read from the README itself.

1. "Run it": `cp config/example.env .env`, then `cargo run --release`: the proxy serves
   `/health` on port 8000 with example.env as it is (its upstream is never contacted).
2. "Try it without a key": the mock, then the proxy pointed at it, each line as written.
3. "Examples": every curl line, its `# ...` answer held to what came back: each fragment of the
   comment between `...` elisions must appear, in order.

Run from the repository's root after `cargo build --release --bin memoctopus --examples`
(`.ci/run` does both). A `.env` already there is put back afterwards. Ports 8000 and 9100 must be
free: the README names them.
"""

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()


def section(title):
    """The text under a `## ` or `### ` heading, up to the next heading."""
    match = re.search(r"^#{2,3} " + re.escape(title) + r"\n(.*?)(?=^#{2,3} |\Z)", README, re.M | re.S)
    if not match:
        sys.exit(f"README has no section {title!r}")
    return match.group(1)


def blocks(text):
    return re.findall(r"^```(?:sh|bash)\n(.*?)^```", text, re.M | re.S)


def without_comment(line):
    """The line up to a `#` that starts a comment in bash: unquoted, after a blank."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line


def commands(block):
    """Each command of a block, continuation lines joined, with the comment lines after it."""
    out = []
    pending = ""
    for line in block.splitlines():
        if not pending and line.startswith("#"):
            if out:
                out[-1][1].append(line[1:].strip())
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        command = without_comment(pending + line).strip()
        pending = ""
        if command:
            out.append((command, []))
    return out


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def wait_for_health(port, process, limit=900):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"the proxy exited with status {process.returncode} before serving /health")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status, r.read().decode()
        except OSError:
            time.sleep(0.2)
    sys.exit(f"nothing served /health on port {port} within {limit} s")


def start(command, log):
    """A line that runs a server, in the background, in a process group of its own."""
    command = command.rstrip("&").strip()
    return subprocess.Popen(
        ["bash", "-c", command], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process):
    if process and process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            sys.exit("the proxy did not exit within 40 s of SIGTERM")


def read(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()


def expect(output, comments, command):
    """Every `...`-separated fragment of every comment line, in order, in `output`."""
    at = 0
    for comment in comments:
        for fragment in (f.strip(" ") for f in comment.split("...")):
            if not fragment:
                continue
            found = output.find(fragment, at)
            if found < 0:
                sys.exit(f"{command}\n  expected {fragment!r} (from the README's {comment!r})\n  got {output!r}")
            at = found + len(fragment)


def main():
    for port in (8000, 9100):
        if not port_free(port):
            sys.exit(f"port {port} is in use; the README's commands need it")
    scratch = tempfile.mkdtemp(prefix="memoctopus-quick-start-")
    dotenv = os.path.join(ROOT, ".env")
    saved = os.path.join(scratch, "saved.env")
    if os.path.exists(dotenv):
        os.rename(dotenv, saved)
    running = []
    try:
        # 1. Run it: the two commands as written.
        run_it = commands(blocks(section("Run it"))[0])
        assert [c for c, _ in run_it][:1] == ["cp config/example.env .env"], run_it
        for command, _ in run_it:
            if command.startswith("cargo run"):
                log = open(os.path.join(scratch, "run-it.log"), "w")
                proxy = start(command, log)
                running.append(proxy)
                status, body = wait_for_health(8000, proxy)
                assert (status, body) == (200, '{"status":"ok"}'), (status, body)
                stop(proxy)
                print(f"ok: {command!r} with example.env as it is served /health")
            else:
                subprocess.run(["bash", "-c", command], cwd=ROOT, check=True)

        # 2. Try it without a key: the mock, then the proxy pointed at it.
        try_it = commands(blocks(section("Try it without a key"))[0])
        mock_log = os.path.join(scratch, "mock.log")
        for command, _ in try_it:
            if command.endswith("&"):
                mock = start(command, open(mock_log, "w"))
                running.append(mock)
                deadline = time.monotonic() + 900
                while "listening" not in read(mock_log):
                    if mock.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"the mock did not start: {read(mock_log)}")
                    time.sleep(0.2)
            elif command.startswith("cargo run") or " cargo run" in command:
                proxy = start(command, open(os.path.join(scratch, "proxy.log"), "w"))
                running.append(proxy)
                wait_for_health(8000, proxy)
            else:
                subprocess.run(["bash", "-c", command], cwd=ROOT, check=True)
        print("ok: the mock and the proxy in front of it started as the README says")

        # 3. Examples: each curl line against the proxy and the mock.
        audio = os.path.join(scratch, "audio.mp3")
        with open(audio, "wb") as f:
            f.write(b"ID3" + bytes(range(256)) * 64)
        examples = commands(blocks(section("Examples"))[0])
        assert len(examples) >= 5, examples
        for command, comments in examples:
            argv = [a.replace("/path/to/audio.mp3", audio) for a in shlex.split(command)]
            argv[1:1] = ["--silent", "--show-error", "--max-time", "20"]
            done = subprocess.run(argv, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{command}\n  curl failed: {done.stderr}")
            expect(done.stdout, comments, command)
            print(f"ok: {command[:90]}")
    finally:
        for process in reversed(running):
            stop(process)
        if os.path.exists(dotenv):
            os.remove(dotenv)
        if os.path.exists(saved):
            os.rename(saved, dotenv)
    print("quick start: every command of the README's first sections worked as written")


if __name__ == "__main__":
    main()

"""MEDSSL_OFFLINE=1: a network access from medssl is an immediate, clear error naming the host.

The guard is an audit hook, which cannot be removed from a process, so everything that installs
it runs in a child process. Each child also adds a fail-safe hook after the guard: should the
guard ever let a non-local access through, the fail-safe stops it before a packet leaves the
machine, with a message the test recognises (so a broken guard fails the test, and sends nothing).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from medssl.core.offline import is_local, requested

ROOT = Path(__file__).resolve().parents[2]

FAILSAFE = textwrap.dedent("""
    import sys
    from medssl.core import offline
    offline.install()
    def _failsafe(event, args):
        if event in ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname"):
            host = args[1][0] if event == "socket.connect" and isinstance(args[1], tuple) else args[0]
            if not offline.is_local(host):
                raise SystemExit(f"FAILSAFE: the guard let {event} {host!r} through")
    sys.addaudithook(_failsafe)
""")


def _child(code: str, *args: str, env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    full_env = {**os.environ, "MEDSSL_OFFLINE": "1", **(env or {})}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", FAILSAFE + textwrap.dedent(code), *args], capture_output=True,
                          text=True, env=full_env, cwd=ROOT, timeout=timeout)
    return proc, time.monotonic() - t0


@pytest.mark.parametrize("host, local", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True), ("localhost", True),
    (b"localhost", True), (None, True), ("0.0.0.0", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.1", False), ("192.168.1.20", False), ("8.8.8.8", False), ("2001:db8::1", False),
    ("zenodo.org", False), ("huggingface.co", False),
])
def test_what_counts_as_local(host, local):
    assert is_local(host) is local


def test_requested_values():
    assert requested({"MEDSSL_OFFLINE": "1"}) and requested({"MEDSSL_OFFLINE": "true"})
    assert not requested({}) and not requested({"MEDSSL_OFFLINE": "0"})


def test_every_way_to_reach_a_host_is_refused_at_once():
    code = """
        import socket, time, urllib.request
        from medssl.core.offline import NetworkBlocked
        calls = [
            lambda: urllib.request.urlopen("https://example.org/weights.pt", timeout=60),
            lambda: socket.create_connection(("example.org", 443), timeout=60),
            lambda: socket.getaddrinfo("example.org", 80),
            lambda: socket.gethostbyname("example.org"),
            lambda: socket.socket().connect(("192.0.2.1", 80)),
            lambda: socket.socket(socket.AF_INET6).connect(("2001:db8::1", 80, 0, 0)),
        ]
        for call in calls:
            t0 = time.monotonic()
            try:
                call()
            except NetworkBlocked as exc:
                print(f"{time.monotonic() - t0:.3f} {exc}")
            else:
                print("NOT BLOCKED")
    """
    proc, _ = _child(code)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 6 and "NOT BLOCKED" not in proc.stdout, proc.stdout
    for line, host in zip(lines, ["example.org:443", "example.org:443", "example.org:80", "example.org",
                                  "192.0.2.1:80", "2001:db8::1:80"]):
        seconds, message = line.split(" ", 1)
        assert float(seconds) < 0.5, line
        assert message.startswith(f"network access to {host} blocked: medssl runs offline (MEDSSL_OFFLINE=1)"), line


def test_loopback_still_works():
    """torchrun / DDP rendezvous on one node and local servers use the loopback: not blocked."""
    code = """
        import socket
        server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen(2)
        port = server.getsockname()[1]
        socket.create_connection(("localhost", port), timeout=5).close()
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
        print("ok")
    """
    proc, _ = _child(code)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr


def test_allow_list_lets_a_named_host_through():
    code = """
        import socket
        from medssl.core import offline
        print(offline.is_local("rendezvous.example"), offline.is_local("other.example"))
    """
    proc, _ = _child(code, env={"MEDSSL_OFFLINE_ALLOW": "rendezvous.example, 10.1.2.3"})
    assert proc.stdout.split() == ["True", "False"], proc.stderr


def test_cli_download_offline_is_one_clear_line(tmp_path):
    """`medssl data medmnist --download` in an offline container: no hang, no traceback."""
    code = """
        import sys
        from medssl.cli import main
        sys.argv = ["medssl", *sys.argv[1:]]
        main()
    """
    proc, seconds = _child(code, "data", "medmnist", "breastmnist", "--root", str(tmp_path), "--download")
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    assert "FAILSAFE" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: network access to ") and "MEDSSL_OFFLINE=1" in lines[0], lines
    assert "zenodo.org" in lines[0]
    assert seconds < 60  # interpreter start and imports; the refusal itself is immediate (test above)
    assert not list(tmp_path.iterdir())  # the partial download was removed


def test_guard_is_off_without_the_variable():
    proc = subprocess.run([sys.executable, "-c", "from medssl.core import offline; "
                           "print(offline.install_from_env(), offline.enabled())"],
                          capture_output=True, text=True, cwd=ROOT, env={**os.environ, "MEDSSL_OFFLINE": ""})
    assert proc.stdout.split() == ["False", "False"], proc.stderr

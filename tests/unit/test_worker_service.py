"""``tapwatch worker`` as a process: a model that fails its card checks exits 2 at start-up (the worker on a real
Redis: tests/redis/test_worker_service_redis.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.tiny_model import write_tiny_model
from tests.support.worker import T


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T).paths


def test_a_model_that_fails_its_card_check_exits_2(tmp_path: Path, model: tuple[Path, Path]) -> None:
    model[0].write_bytes(b"tampered")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
    cmd = [sys.executable, "-m", "tapwatch.app", "worker", "--model", str(model[0]), "--metrics-port", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "model refused" in done.stderr and "sha256" in done.stderr and str(model[0]) in done.stderr

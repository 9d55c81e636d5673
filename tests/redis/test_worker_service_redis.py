"""``tapwatch worker`` as a process on a real Redis: SIGTERM drains, a second SIGTERM exits at once, SIGHUP
reloads (a model that fails its card checks: tests/unit/test_worker_service.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tapwatch.bus.streams import VERDICTS_STREAM, WINDOWS_STREAM, RedisBus
from tapwatch.features.schema import Verdict
from tests.support.env import free_port
from tests.support.tiny_model import write_tiny_model
from tests.support.worker import RELOADED, T, http_get, mixed_windows, scrape, wait_for


class WorkerProcess:
    """``python -m tapwatch.app worker …`` with its stderr in a file and its metrics port known."""

    def __init__(self, tmp_path: Path, url: str, model: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = tmp_path / "worker.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
        cmd = [sys.executable, "-m", "tapwatch.app", "-v", "worker", "--redis", url, "--model", str(model),
               "--consumer", "w1", "--metrics-port", str(self.port), "--reload-poll", "0", *extra]  # fmt: skip
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self) -> None:
        def ready() -> bool:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                return http_get(self.base + "/readyz")[0] == 200
            except OSError:
                return False

        wait_for(ready, timeout_s=20)

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout_s: float = 20) -> int:
        return self.proc.wait(timeout=timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T).paths


@pytest.fixture
def client(redis_server: Any) -> redis.Redis:
    return redis.Redis.from_url(redis_server.url)


@pytest.fixture
def spawn(tmp_path: Path, redis_server: Any, model: tuple[Path, Path]) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(*extra: str) -> WorkerProcess:
        w = WorkerProcess(tmp_path, redis_server.url, model[0], *extra)
        started.append(w)
        w.wait_ready()
        return w

    yield start
    for w in started:
        w.kill()


def group_info(client: redis.Redis) -> dict[str, Any]:
    [info] = client.xinfo_groups(WINDOWS_STREAM)
    return dict(info)


def verdicts(client: redis.Redis) -> list[Verdict]:
    return [Verdict.decode(f) for _, f in client.xrange(VERDICTS_STREAM)]


def test_sigterm_finishes_the_batch_in_hand_acks_and_exits_0(
    spawn: Any, client: redis.Redis, redis_server: Any
) -> None:
    bus = RedisBus(redis_server.url)
    bus.add_many(WINDOWS_STREAM, mixed_windows(500))
    feeding = threading.Event()
    feeding.set()

    def feed() -> None:  # the stream never runs dry while the worker runs: the stop is mid-stream
        while feeding.is_set():
            bus.add_many(WINDOWS_STREAM, mixed_windows(100))
            time.sleep(0.02)

    producer = threading.Thread(target=feed)
    producer.start()
    try:
        worker = spawn("--batch-size", "4")
        wait_for(lambda: client.xlen(VERDICTS_STREAM) >= 200)
        worker.signal(signal.SIGTERM)
        assert worker.wait() == 0
    finally:
        feeding.clear()
        producer.join(10)
    info = group_info(client)
    ids = [v.window_id for v in verdicts(client)]
    assert info["pending"] == 0  # every entry read was acked
    assert info["entries-read"] < client.xlen(WINDOWS_STREAM)  # it stopped mid-stream …
    assert len(ids) == len(set(ids)) == info["entries-read"]  # … with one verdict for every entry it read
    assert "finishing the batch in hand" in worker.log.read_text()


def test_a_second_sigterm_exits_at_once(spawn: Any) -> None:
    worker = spawn("--block-ms", "20000")  # the first SIGTERM would wait for the blocked read to end
    worker.signal(signal.SIGTERM)
    time.sleep(0.3)
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 128 + signal.SIGTERM
    assert time.monotonic() - started < 2.0


def test_sighup_reloads_the_model_and_metrics_show_it(
    spawn: Any, client: redis.Redis, model: tuple[Path, Path], redis_server: Any
) -> None:
    bus = RedisBus(redis_server.url)
    worker = spawn("--block-ms", "200")
    bus.add_many(WINDOWS_STREAM, mixed_windows(6))
    wait_for(lambda: client.xlen(VERDICTS_STREAM) == 6)
    write_tiny_model(model[0].parent, RELOADED, version="2")
    worker.signal(signal.SIGHUP)  # takes effect before the next batch: at the latest when the blocked read ends
    wait_for(lambda: ("tapwatch_model_info", (("name", "tiny"), ("version", "2"))) in scrape(worker.port))
    bus.add_many(WINDOWS_STREAM, mixed_windows(6))
    wait_for(lambda: client.xlen(VERDICTS_STREAM) == 12)
    versions = [v.model_version for v in verdicts(client)]
    assert versions[:6] == ["1"] * 6 and versions[6:] == ["2"] * 6
    got = scrape(worker.port)
    assert got[("tapwatch_inference_model_reloads_total", (("result", "ok"),))] == 1
    assert got[("tapwatch_model_info", (("name", "tiny"), ("version", "2")))] == 1
    assert got[("tapwatch_inference_verdicts_total", (("class", "BENIGN"),))] == 4
    assert any(name == "tapwatch_build_info" for name, _ in got)
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0

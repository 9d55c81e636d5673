"""The inference worker loop on a real Redis: one verdict per window and acks, dead letters, claims of stale
entries, groups recreated after Redis lost them, and a batch written and acked in one bus call (on the
in-memory bus: tests/unit/test_worker.py)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tapwatch.bus.streams import DEAD_STREAM, VERDICTS_STREAM, WINDOWS_STREAM, Bus, RedisBus
from tapwatch.inference.config import WorkerConfig
from tests.support.tiny_model import write_tiny_model
from tests.support.worker import (
    FAST,
    GROUP,
    T,
    WorkerOnAnyBus,
    make_worker,
    mixed_windows,
    pending,
    poison_entries,
    sample,
    verdicts_of,
    wait_for,
)


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T).paths


class TestWorkerOnRedisBus(WorkerOnAnyBus):
    @pytest.fixture
    def bus(self, redis_server: Any) -> Bus:
        return RedisBus(redis_server.url, timeout_s=2.0)


def test_a_missing_group_is_recreated_and_counted(redis_server: Any, model_files: tuple[Path, Path]) -> None:
    bus = RedisBus(redis_server.url)
    worker = make_worker(bus, model_files, WorkerConfig(block_ms=1500, consumer="w1"))
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    client = bus.client
    bus.add_many(WINDOWS_STREAM, mixed_windows(5))
    thread.start()
    try:
        wait_for(lambda: client.xlen(VERDICTS_STREAM) == 5)
        time.sleep(0.2)  # the worker is now blocked in XREADGROUP
        client.flushall()  # Redis 7 answers the blocked read "UNBLOCKED the stream key no longer exists"
        wait_for(lambda: sample(worker, "tapwatch_inference_group_recreations_total") == 1)
        ids = bus.add_many(WINDOWS_STREAM, mixed_windows(4))
        wait_for(lambda: client.xlen(VERDICTS_STREAM) == 4)
        client.xgroup_destroy(WINDOWS_STREAM, GROUP)  # NOGROUP at the next read
        wait_for(lambda: sample(worker, "tapwatch_inference_group_recreations_total") == 2)
        # recreated from the stream's start: the 4 entries are read again (at least once; the alerter dedups)
        wait_for(lambda: client.xlen(VERDICTS_STREAM) == 8)
    finally:
        stop.set()
        thread.join(10)
    assert sorted(v.window_id for v in verdicts_of(bus)) == sorted(ids * 2)
    assert pending(bus) == 0


class CallCountingRedisBus(RedisBus):
    """A real RedisBus that counts the bus calls of the worker's write path."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.calls: dict[str, int] = {}

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def write_and_ack(self, *args: Any, **kw: Any) -> None:
        self._count("write_and_ack")
        super().write_and_ack(*args, **kw)

    def ack(self, *args: Any, **kw: Any) -> int:
        self._count("ack")
        return super().ack(*args, **kw)

    def add_many(self, stream: str, entries: Any) -> list[str]:
        self._count("add_many")
        return super().add_many(stream, entries)


def test_a_batch_is_written_and_acked_in_one_bus_call(redis_server: Any, model_files: tuple[Path, Path]) -> None:
    bus = CallCountingRedisBus(redis_server.url)
    windows = mixed_windows(10) + list(poison_entries().values())
    ids = RedisBus(redis_server.url).add_many(WINDOWS_STREAM, windows)
    worker = make_worker(bus, model_files, WorkerConfig(**{**FAST.__dict__, "batch_size": len(ids)}))
    assert worker.run_once() == len(ids)
    # Verdicts, dead letters and the ack: one pipelined call for the batch, no separate XADD or XACK.
    assert bus.calls == {"write_and_ack": 1}
    assert len(verdicts_of(bus)) == 10 and bus.length(DEAD_STREAM) == len(poison_entries())
    assert pending(bus) == 0
    stats = bus.client.info("commandstats")
    assert stats["cmdstat_xack"]["calls"] == 1

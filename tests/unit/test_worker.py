"""The inference worker loop on the in-memory bus: one verdict per window and acks, dead letters, claims of stale
entries, and the batch in hand while the bus is down (on a real Redis: tests/redis/test_worker_redis.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tapwatch.bus.streams import WINDOWS_STREAM, Bus, BusUnavailable, MemoryBus
from tests.support.tiny_model import write_tiny_model
from tests.support.worker import (
    FAST,
    GROUP,
    T,
    WorkerOnAnyBus,
    make_worker,
    mixed_windows,
    pending,
    run_until_idle,
    verdicts_of,
)


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T).paths


class TestWorkerOnMemoryBus(WorkerOnAnyBus):
    @pytest.fixture
    def bus(self) -> Bus:
        return MemoryBus()


class FlakyBus(MemoryBus):
    """A memory bus whose writes fail while ``down`` is set, as Redis does between a read and a write."""

    down = False

    def add_many(self, stream: str, entries: Any) -> list[str]:
        if self.down:
            raise BusUnavailable("flaky: down")
        return super().add_many(stream, entries)


def test_the_batch_in_hand_is_written_once_after_the_bus_returns(model_files: tuple[Path, Path]) -> None:
    bus = FlakyBus()
    ids = bus.add_many(WINDOWS_STREAM, mixed_windows(5))
    worker = make_worker(bus, model_files)
    bus.down = True
    assert worker.run_once() == 0 and worker.delay == FAST.backoff_initial_s and not worker.connected
    assert worker.run_once() == 0 and worker.delay == 2 * FAST.backoff_initial_s  # doubling
    bus.down = False
    run_until_idle(worker)
    assert sorted(v.window_id for v in verdicts_of(bus)) == sorted(ids)  # once each
    assert worker.connected and pending(bus) == 0
    # Stopped while the bus is down: the drain gives up after its timeout, the entries stay pending.
    more = bus.add_many(WINDOWS_STREAM, mixed_windows(3))
    bus.down = True
    worker.run_once()
    started = time.monotonic()
    assert worker.drain(0.3) is False
    assert time.monotonic() - started < 1.0
    assert sorted(i for i, _ in bus.claim_stale(WINDOWS_STREAM, GROUP, "other", 0, 100)) == sorted(more)


def test_an_entry_over_the_size_limit_is_dead_lettered_unparsed(model_files: tuple[Path, Path]) -> None:
    """The worker's size limit (issue 17): refused before parsing, with its reason; the good windows around it
    get their verdicts, and nothing stays pending."""
    from dataclasses import replace

    from tapwatch.bus.streams import DEAD_STREAM

    bus = MemoryBus()
    good = mixed_windows(6)
    huge = {**dict(good[0]), "padding": "x" * 40_000}
    bus.add_many(WINDOWS_STREAM, [*good[:3], huge, *good[3:]])
    worker = make_worker(bus, model_files, replace(FAST, max_entry_bytes=32_768))
    run_until_idle(worker)
    assert len(verdicts_of(bus)) == 6 and pending(bus) == 0
    bus.ensure_group(DEAD_STREAM, "check")
    dead = [f for _, f in bus.read_group(DEAD_STREAM, "check", "c", 10, 0)]
    assert [d["dead_reason"] for d in dead] == [b"too_large"]
    assert b"over max_entry_bytes 32768" in dead[0]["dead_detail"] and "padding" not in dead[0]  # not copied
    labels = {"reason": "too_large"}
    assert worker.metrics.registry.get_sample_value("tapwatch_inference_dead_lettered_windows_total", labels) == 1

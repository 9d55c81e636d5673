"""The alerter on a real Redis: idempotency across a restart, a lost group recreated, and ``tapwatch alerter``
itself as a process (the loop on the in-memory bus: tests/unit/test_alerter.py)."""

from __future__ import annotations

import json
import signal
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.alerter import Alerter
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.sinks import FileSink, SinkSet
from tapwatch.bus.streams import ALERTS_STREAM, VERDICTS_STREAM, RedisBus
from tests.support.alerting import (
    PORTSCAN_SID,
    Crash,
    CrashingSink,
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
from tests.support.cli import tapwatch
from tests.support.env import free_port
from tests.support.tiny_model import TinyModel, write_tiny_model


def test_idempotent_across_an_alerter_restart(redis_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    bus = RedisBus(redis_server.url)
    put(bus, verdict(1), verdict(2), verdict(3))
    m1 = AlerterMetrics(CollectorRegistry())
    first = Alerter(bus, None, settings(redis_url=redis_server.url), SinkSet([FileSink(out), CrashingSink()], m1),
                    m1)  # fmt: skip
    with pytest.raises(Crash):
        first.run_once()  # window 1's alert is in the file; the process dies before its XACK
    assert len(list(read_jsonl(out))) == 1

    second, m2 = make(RedisBus(redis_server.url), out, redis_url=redis_server.url, alerter_consumer="a2",
                      claim_idle_ms=0)  # fmt: skip
    drain(second)  # claims the dead consumer's pending verdicts
    put(bus, verdict(2))  # a worker re-delivers a verdict after its own crash
    drain(second)
    assert [a["flow_id"] for a in read_jsonl(out)] == [1001, 1002, 1003]
    assert sample(m2, "tapwatch_alerting_duplicates_total") == 2
    assert bus.client.xpending(VERDICTS_STREAM, "alerters")["pending"] == 0
    assert bus.client.ttl("tapwatch:alerted:1700000000001-0") > 3000


def test_a_lost_group_is_recreated_and_counted(redis_server: Any, tmp_path: Path) -> None:
    bus, out = RedisBus(redis_server.url), tmp_path / "alerts.jsonl"
    alerter, m = make(bus, out, redis_url=redis_server.url)
    put(bus, verdict(1))
    drain(alerter)
    bus.client.delete(VERDICTS_STREAM)  # a Redis that lost its data
    assert alerter.run_once() == 0
    assert sample(m, "tapwatch_alerting_group_recreated_total") == 1
    put(bus, verdict(2))
    drain(alerter)
    assert [a["flow_id"] for a in read_jsonl(out)] == [1001, 1002]


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_model(tmp_path_factory.mktemp("alerter-model"), alert_model_spec())


def test_tapwatch_alerter_command(redis_server: Any, model: TinyModel, tmp_path: Path) -> None:
    out, port = tmp_path / "alerts.jsonl", free_port()
    rules = tmp_path / "threshold.config"
    rules.write_text("pass-net 192.168.0.0/16\n")
    bus = RedisBus(redis_server.url)
    put(bus, verdict(1, 0.2), verdict(2, 0.9, tensor=alert_windows(model, 1)[0]), verdict(3, src="192.168.0.5"),
        verdict(4, 0.95, classes=("BENIGN", "DoS Hulk")))  # fmt: skip
    # the per-window alerter (its ids, dedup and explanation budget are what this test is about)
    proc = tapwatch("-v", "alerter", "--alert-mode", "flows", "--redis", redis_server.url, "--card",
                    str(model.card_path), "-o", str(out), "--threshold-file", str(rules), "--metrics-port", str(port),
                    "--explain",
                    env={"TAPWATCH_EXPLAIN_DEADLINE_MS": "10000", "TAPWATCH_BLOCK_MS": "100"})  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(list(read_jsonl(out))) < 2 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5).read())
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    alerts = list(read_jsonl(out))
    assert [a["alert"]["signature_id"] for a in alerts] == [PORTSCAN_SID, 9_101_001]
    assert alerts[0]["ml"]["explanation_status"] == "ok" and len(alerts[0]["ml"]["explanation"]) == 5
    assert ready == {"bus_reachable": True, "explainer_ready": True}
    assert bus.length(ALERTS_STREAM) == 2  # the Redis sink is on by default with --redis
    assert "signal" in err


def test_tapwatch_alerter_bad_threshold_file_exits_2(redis_server: Any, tmp_path: Path) -> None:
    rules = tmp_path / "t.conf"
    rules.write_text("# ok\nthreshold gen_id 1, sig_id 5, type limit, track by_src, count 1\n")
    proc = tapwatch("alerter", "--redis", redis_server.url, "--threshold-file", str(rules), "--metrics-port", "0")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and f"{rules}:2" in err and "missing seconds" in err
    proc = tapwatch("alerter", "--redis", redis_server.url, "--syslog-udp", "nohostport")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "--syslog-udp (or TAPWATCH_SYSLOG_UDP): syslog: expected HOST:PORT" in err

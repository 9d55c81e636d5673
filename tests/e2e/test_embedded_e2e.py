"""The embedded modes: ``tapwatch detect`` on the sample pcap, ``tapwatch run`` live on loopback (a BPF filter on
a port of our own), and the in-process pipeline's back-pressure and failure handling (no Redis anywhere)."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.settings import AlerterSettings
from tapwatch.app.embedded import shipped_model
from tapwatch.app.pipeline import Embedded, EmbeddedConfig, EmbeddedSettings
from tapwatch.bus.bounded import StageFailed
from tapwatch.bus.streams import WINDOWS_STREAM
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.service import CaptureSettings
from tapwatch.inference.model import load_model
from tests.support.e2e import SAMPLE, expected_windows, free_port, read_jsonl, scrape, wait_for, write_model

SENSOR = "embedded-test"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_model(tmp_path_factory.mktemp("model"))


def tapwatch(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
    return subprocess.Popen([sys.executable, "-m", "tapwatch.app", *args], env={**clean, **(env or {})},
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def summary_of(stderr: str) -> dict[str, str]:
    """The summary's ``name   value`` lines."""
    return {m[1]: m[2] for m in re.finditer(r"^  (packets|flows|windows|verdicts|alerts|dropped) +(.*)$", stderr, re.M)}


def per_class(text: str) -> dict[str, int]:
    """``"212: DoS 4, PortScan 200 (…)"`` → {"DoS": 4, "PortScan": 200}."""
    listed = text.split(":", 1)[1].split("(")[0] if ":" in text else ""
    return {name: int(n) for name, n in re.findall(r"([A-Za-z][\w-]*) (\d+)", listed)}


def test_detect_writes_the_alerts_and_a_summary_that_adds_up(model: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    out.write_text("stale line from an earlier run\n")
    # A deadline no busy test machine misses: the budget's first explanations are then always there.
    proc = tapwatch("detect", str(SAMPLE), "--model", str(model[0]), "-o", str(out), "--sensor", SENSOR,
                    env={"TAPWATCH_EXPLAIN_DEADLINE_MS": "20000"})  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s = summary_of(err)
    expected = expected_windows([SAMPLE], model[0], SENSOR)
    windows = int(s["windows"])
    assert windows == len(expected) and int(s["flows"].split()[0]) >= windows
    assert per_class(s["verdicts"]) == dict(Counter(expected.classes.values()))
    assert int(s["verdicts"].split(":")[0]) + int(s["dropped"].split(":")[0]) == windows
    assert s["dropped"] == "0"
    alerts = read_jsonl(out)
    assert {a["flow_id"] for a in alerts} == expected.alerting and len(alerts) == len(expected.alerting)
    assert sum(per_class(s["alerts"]).values()) == len(alerts)
    assert per_class(s["alerts"]) == dict(Counter(a["ml"]["class"] for a in alerts))
    explained = [a for a in alerts if a["ml"]["explanation_status"] == "ok"]
    assert f"({len(explained)} explained" in s["alerts"] and explained  # the budget explains the first ones
    assert {a["alert"]["signature"] for a in alerts} >= {"TAPWATCH ML PortScan (tiny-e2e)"}


def test_detect_writes_eve_lines_to_stdout_by_default(model: tuple[Path, Path]) -> None:
    proc = tapwatch("detect", str(SAMPLE), "--model", str(model[0]), "--no-explain")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(e["event_type"] == "alert" for e in lines)
    assert len(lines) == sum(per_class(summary_of(err)["alerts"]).values())


def test_detect_without_a_model_says_what_to_do() -> None:
    proc = tapwatch("detect", str(SAMPLE), "-o", os.devnull)
    _, err = proc.communicate(timeout=60)
    if shipped_model().exists():  # once the deployment model ships, the first README command just works
        assert proc.returncode == 0, err
        assert "windows" in summary_of(err)
    else:
        assert proc.returncode == 2
        assert err.strip().splitlines()[-1].startswith("tapwatch: error: ") and "--model" in err
        assert len(err.strip().splitlines()) == 1


def test_detect_with_a_missing_pcap_exits_2(model: tuple[Path, Path], tmp_path: Path) -> None:
    proc = tapwatch("detect", str(tmp_path / "nope.pcap"), "--model", str(model[0]))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "nope.pcap" in err


def embedded(model: Path, **settings: Any) -> Embedded:
    config = EmbeddedConfig(EmbeddedSettings(**settings), AlerterSettings(explain=False), CaptureSettings())
    return Embedded(load_model(model), config, CollectorRegistry())


def test_a_slow_consumer_makes_the_producer_wait_and_nothing_is_dropped(model: tuple[Path, Path]) -> None:
    e = embedded(model[0], backlog=8, batch_size=4)
    source = PcapSource([str(SAMPLE)], CaptureConfig(sensor=SENSOR), e.pipeline.metrics)
    summary = e.process(source)
    assert summary.windows == 212 and summary.n_verdicts == 212 and summary.n_dropped == 0 and summary.balanced
    assert e.bus.waits(WINDOWS_STREAM) > 0  # the back-pressure was used
    assert e.bus.length(WINDOWS_STREAM) == 0  # acked windows are not kept


class Exploding:
    """An ONNX Runtime session that describes itself as the real one and fails at run time."""

    def __init__(self, real: Any) -> None:
        self.get_inputs, self.get_outputs = real.get_inputs, real.get_outputs

    def run(self, *args: Any, **kw: Any) -> Any:
        raise RuntimeError("device lost")


def test_a_failing_stage_stops_the_pipeline_instead_of_hanging_it(model: tuple[Path, Path]) -> None:
    good = load_model(model[0])
    config = EmbeddedConfig(EmbeddedSettings(backlog=4, batch_size=2), AlerterSettings(explain=False),
                            CaptureSettings())  # fmt: skip
    e = Embedded(dataclasses.replace(good, session=Exploding(good.session)), config, CollectorRegistry())
    source = PcapSource([str(SAMPLE)], CaptureConfig(sensor=SENSOR), e.pipeline.metrics)
    result: dict[str, BaseException] = {}

    def go() -> None:
        try:
            e.process(source)
        except BaseException as err:
            result["err"] = err

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the producer stayed blocked on a dead worker"
    assert isinstance(result.get("err"), StageFailed) and "device lost" in str(result["err"])


class Server:
    """A TCP server on loopback that accepts, reads a little, answers and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                conn.sendall(b"ok\n")

    def hit(self, n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                c.sendall(b"hello\n")
                c.recv(16)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(90)
def test_run_on_loopback_serves_health_and_flushes_on_sigterm(model: tuple[Path, Path], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture needs root (CAP_NET_RAW)")
    server, port, out = Server(), free_port(), tmp_path / "alerts.jsonl"
    proc = tapwatch("run", "--interface", "lo", "--bpf", f"tcp port {server.port}", "--model", str(model[0]), "-o",
                    str(out), "--metrics-port", str(port), "--termination-linger", "0.2", "--no-explain")  # fmt: skip

    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, 40, "/readyz")
        time.sleep(1.0)  # the meter's packet socket is open a moment after the capture thread starts
        server.hit(8)
        wait_for(lambda: len(read_jsonl(out)) >= 1, 20, "an alert while running")  # scored live, not at stop
        before = scrape(port)
        server.hit(4)  # flows still open or lingering at the stop: the flush must score them
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    s = summary_of(err)
    assert int(s["windows"]) == 12 and s["dropped"] == "0"
    assert int(s["verdicts"].split(":")[0]) == 12
    alerts = read_jsonl(out)
    assert alerts and {a["dest_port"] for a in alerts} == {server.port}
    assert len(alerts) == sum(per_class(s["alerts"]).values())
    assert before[("tapwatch_capture_packets_total", ())] > 0
    assert before[("tapwatch_inference_verdicts_total", (("class", "PortScan"),))] >= 1

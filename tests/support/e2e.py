"""Builders shared by the end-to-end tests (``tests/e2e/test_e2e.py``) and the embedded-mode tests
(``test_embedded*.py`` of tests/unit, tests/e2e and tests/netns).

No tests here. The model (:func:`e2e_model_spec`, written by :func:`tests.support.tiny_model.write_tiny_model`)
is the tiny real ONNX graph (linear over the window → Softmax; the mean of feature 0 drives class DoS, of
feature 1 class PortScan) with a card whose scaler makes it detect something in real traffic:

* ``Protocol`` is scaled as (p - 6) / 11: TCP 0, UDP 1 — windows of UDP flows lean to "DoS";
* ``Flow Duration`` as (d - 1000 µs) / -1000 µs: a flow over in under a millisecond gives +1, one of 10 ms
  gives -9 — windows of instant flows (an nmap SYN scan: SYN, RST) lean to "PortScan".

With T = 4 and the attack threshold 0.5, a window alerts when its flows are mostly instant, or mostly UDP:
the scan of ``capture/samples/sample.pcap`` alerts and its HTTP downloads do not.
:func:`expected_windows` computes the verdicts in-process (the same sensor code, the same model), which is
what the services must reproduce.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tapwatch.bus.publish import PublisherCounts
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.service import CaptureSettings, run_capture
from tapwatch.features.card import FeatureStats, Scaler, ScalerKind
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.schema import WindowEntry
from tapwatch.features.window import Windower
from tapwatch.inference.model import load_model
from tests.support.env import REPO, free_port
from tests.support.tiny_model import TinySpec

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
T = 4
F = len(FEATURE_NAMES)
NAME = "tiny-e2e"
SHARED_PCAPS = ("zeek/ftp/bruteforce.pcap", "zeek/ssh/sshguess.pcap", "zeek/nmap-vsn.pcap")


def _scaler() -> Scaler:
    center, scale = [0.0] * F, [1.0] * F
    center[0], scale[0] = 6.0, 11.0
    center[1], scale[1] = 1000.0, -1000.0
    return Scaler(kind=ScalerKind.STANDARD, center=center, scale=scale)


def _stats() -> list[FeatureStats]:
    """Training statistics for LIME: a normal per feature, in raw units (plausible for the two used ones)."""
    special = {"Protocol": (8.0, 4.0), "Flow Duration": (5000.0, 5000.0)}
    return [FeatureStats(feature=f, mean=special.get(f, (0.0, 1.0))[0], std=special.get(f, (0.0, 1.0))[1])
            for f in FEATURE_NAMES]  # fmt: skip


def e2e_model_spec() -> TinySpec:
    """The end-to-end tests' tiny model, ``tiny-e2e`` (see the module docstring)."""
    return TinySpec(name=NAME, window_length=T, card={"scaler": _scaler(), "feature_stats": _stats()})


@dataclass(frozen=True)
class Expected:
    """What the pipeline must produce for some pcaps: per newest-flow id, whether its window alerts."""

    over: dict[int, bool]
    classes: dict[int, str]

    @property
    def alerting(self) -> set[int]:
        return {fid for fid, over in self.over.items() if over}

    def __len__(self) -> int:
        return len(self.over)


def expected_windows(pcaps: Iterable[Path], model_path: Path, sensor: str) -> Expected:
    """Run the sensor's window builder and the model in-process over ``pcaps`` (the services' reference)."""
    card = load_model(model_path).card
    source = PcapSource([str(p) for p in pcaps], CaptureConfig(sensor=sensor), CaptureMetrics(CollectorRegistry()))
    windower = Windower(card)
    return expected_from([windower.add(record) for record in source], model_path)


def expected_from(windows: list[WindowEntry], model_path: Path) -> Expected:
    """The verdicts the model at ``model_path`` gives the windows, run in-process."""
    if not windows:
        return Expected({}, {})
    model = load_model(model_path)
    probs = model.predict(np.stack([w.tensor for w in windows]))
    scores = 1.0 - probs[:, model.benign_index]
    ids, names = [w.flow.flow_id for w in windows], model.card.class_names
    return Expected(
        {fid: bool(s >= model.threshold) for fid, s in zip(ids, scores, strict=True)},
        {fid: names[int(i)] for fid, i in zip(ids, probs.argmax(axis=1), strict=True)},
    )


def capture(url: str, card: Path, pcaps: Iterable[Path], sensor: str) -> PublisherCounts:
    """``tapwatch capture -r PCAP... --redis URL`` in-process (:func:`run_capture`); returns its counts."""
    settings = CaptureSettings(redis_url=url, card=str(card), metrics_port=0)
    code, counts = run_capture(settings, CaptureConfig(sensor=sensor), None, [str(p) for p in pcaps],
                               CollectorRegistry())  # fmt: skip
    assert code == 0
    return counts


def wait_for(cond: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.05)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


def metric(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], metric_name: str, **labels: str) -> float:
    return samples.get((metric_name, tuple(sorted(labels.items()))), 0.0)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass
class Service:
    """One ``python -m tapwatch.app <command>`` process, its log file and its metrics port."""

    name: str
    argv: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Service:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
        cmd = [sys.executable, "-m", "tapwatch.app", "-v", *self.argv, "--metrics-port", str(self.port)]
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**clean, **self.env})
        return self

    def ready(self) -> bool:
        assert self.proc is not None
        assert self.proc.poll() is None, f"{self.name} exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}"
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200
        except OSError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return scrape(self.port)

    def signal(self, sig: int) -> None:
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM (a drain), then SIGKILL if it does not exit; our own child, by its PID."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        return int(self.proc.returncode)


class Services:
    """Workers and alerters of one test; all stopped at teardown."""

    def __init__(self, tmp: Path, url: str) -> None:
        self.tmp = tmp
        self.url = url
        self.all: list[Service] = []

    def worker(self, name: str, model: Path, *extra: str, **env: str) -> Service:
        argv = ["worker", "--redis", self.url, "--model", str(model), "--consumer", name, "--block-ms", "500", *extra]
        base = {"TAPWATCH_CLAIM_INTERVAL_S": "0.2", "TAPWATCH_BACKOFF_INITIAL_S": "0.05",
                "TAPWATCH_BACKOFF_MAX_S": "0.5", "TAPWATCH_STATS_INTERVAL_S": "0.5"}  # fmt: skip
        return self._add(Service(name, argv, self.tmp / f"{name}.log", {**base, **env}))

    def alerter(self, card: Path, out: Path, *extra: str, mode: str = "flows", **env: str) -> Service:
        """The alerter; per window (``flows``) by default: the invariants of tests/e2e/test_e2e.py are per window."""
        argv = ["alerter", "--redis", self.url, "--card", str(card), "-o", str(out), "--consumer", "a1",
                "--alert-mode", mode, *extra]  # fmt: skip
        base = {"TAPWATCH_BLOCK_MS": "200", "TAPWATCH_CLAIM_IDLE_MS": "1000", "TAPWATCH_CLAIM_INTERVAL_S": "0.5"}
        return self._add(Service("alerter", argv, self.tmp / "alerter.log", {**base, **env}))

    def _add(self, service: Service) -> Service:
        self.all.append(service.start())
        return service

    def wait_ready(self, *services: Service, timeout_s: float = 60.0) -> None:
        for s in services or tuple(self.all):
            wait_for(s.ready, timeout_s, f"{s.name} /readyz")

    def close(self) -> None:
        running = [s for s in self.all if s.proc is not None and s.proc.poll() is None]
        for s in running:  # all at once: each drains for up to one read's block time
            s.signal(signal.SIGCONT)
            s.signal(signal.SIGTERM)
        for s in running:
            s.stop(10)


def sum_metric(services: Iterable[Service], metric_name: str, **labels: str) -> float:
    return sum(metric(s.metrics(), metric_name, **labels) for s in services)


def windows_by_id(client: Any) -> dict[str, int | None]:
    """Window entry id → newest flow id (None when unreadable), for every entry on the windows stream."""
    out: dict[str, int | None] = {}
    for eid, fields in client.xrange("tapwatch:windows"):
        try:
            out[eid.decode()] = int(json.loads(fields[b"flow"])["flow_id"])
        except (KeyError, ValueError):
            out[eid.decode()] = None
    return out


def verdict_fields(client: Any) -> Iterator[dict[bytes, bytes]]:
    for _, fields in client.xrange("tapwatch:verdicts"):
        yield fields

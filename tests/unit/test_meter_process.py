"""The pcap reader and NFStream's meter process: an early start, and a meter that dies is reported, never waited
for (NFStream's own loop would wait for its end message for ever)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

import tapwatch.capture.plugin as plugin
from tapwatch.capture.meter import CaptureConfig, MeterDied, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"


def _flows(source: PcapSource, timeout_s: float = 60.0) -> tuple[list[Any], BaseException | None]:
    out: list[Any] = []
    error: list[BaseException] = []

    def read() -> None:
        try:
            out.extend(source)
        except BaseException as err:
            error.append(err)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "the reader hung"
    return out, error[0] if error else None


def test_started_early_or_not_the_flows_are_the_same() -> None:
    def read(early: bool) -> list[str]:
        source = PcapSource([str(SAMPLE)], CaptureConfig(sensor="s"), CaptureMetrics(CollectorRegistry()))
        if early:
            source.start()
        flows, error = _flows(source)
        assert error is None
        return [f"{r.meta.flow_id} {r.values}" for r in flows]

    late, early = read(False), read(True)
    assert late and early == late


def test_a_meter_that_dies_is_an_error_not_a_hang(monkeypatch: pytest.MonkeyPatch) -> None:
    made = {"n": 0}
    real = plugin.FlowState

    def failing(*args: Any) -> Any:  # runs in the forked meter: its 20th flow crashes it
        made["n"] += 1
        if made["n"] == 20:
            raise RuntimeError("a bug in the meter")
        return real(*args)

    monkeypatch.setattr(plugin, "FlowState", failing)
    source = PcapSource([str(SAMPLE)], CaptureConfig(), CaptureMetrics(CollectorRegistry()))
    _, error = _flows(source)
    assert isinstance(error, MeterDied)
    assert str(error).startswith("the meter process exited with status 1 before the end of the capture")

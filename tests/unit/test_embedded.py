"""The embedded pipeline in-process on the sample pcap: back-pressure instead of drops, and a failing stage that
stops the pipeline instead of hanging it (no Redis anywhere; ``tapwatch detect`` itself: tests/e2e/)."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.settings import AlerterSettings
from tapwatch.app.pipeline import Embedded
from tapwatch.app.settings import EmbeddedConfig, EmbeddedSettings
from tapwatch.bus.bounded import StageFailed
from tapwatch.bus.streams import WINDOWS_STREAM
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.service import CaptureSettings
from tapwatch.inference.model import load_model
from tests.support.e2e import SAMPLE, e2e_model_spec
from tests.support.tiny_model import write_tiny_model

SENSOR = "embedded-test"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path_factory.mktemp("model"), e2e_model_spec()).paths


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

"""The worker's model: card checks at load, hot reload (poll and SIGHUP), settings, and no TensorFlow at
run time (inference/'s doctests run from pyproject's testpaths)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.bus.streams import WINDOWS_STREAM, MemoryBus
from tapwatch.features.errors import ConfigError
from tapwatch.inference.config import WorkerConfig
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import ModelRejected, load_model
from tapwatch.inference.reload import ModelReloader
from tapwatch.inference.settings import build_settings
from tapwatch.inference.worker import Worker
from tests.support.tiny_model import write_tiny_model
from tests.support.worker import FAST, RELOADED, T, mixed_windows, run_until_idle, sample, verdicts_of


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T).paths


RUNTIME_PACKAGES = ["tapwatch.inference", "tapwatch.bus"]
"""The worker's packages: every module of them is imported (found by pkgutil, so a new one is covered)."""


def test_hot_reload_swaps_a_good_model_and_refuses_a_broken_one(model_files: tuple[Path, Path]) -> None:
    bus = MemoryBus()
    reloader = ModelReloader(*model_files, poll_s=0.05)
    worker = Worker(bus, reloader.load(), FAST, InferenceMetrics(CollectorRegistry()), reloader)

    def versions_after(n: int) -> set[str]:
        bus.add_many(WINDOWS_STREAM, mixed_windows(n))
        run_until_idle(worker)
        return {v.model_version for v in verdicts_of(bus)}

    def settle() -> None:  # two polls: a change must hold still for one interval
        for _ in range(3):
            time.sleep(0.06)
            worker.run_once()

    assert versions_after(3) == {"1"}
    write_tiny_model(model_files[0].parent, RELOADED, version="2")
    settle()
    assert worker.model.card.version == "2" and versions_after(3) == {"2"}
    assert sample(worker, "tapwatch_model_info", {"name": "tiny", "version": "2"}) == 1
    # The card names the good bytes: sha256 mismatch.
    write_tiny_model(model_files[0].parent, RELOADED, version="3", onnx_bytes=b"not an onnx file")
    settle()
    # The card contradicts the graph.
    write_tiny_model(model_files[0].parent, RELOADED, version="4", card={"input_shape": [None, 5, 82]})
    settle()
    assert worker.model.card.version == "2" and versions_after(3) == {"2"}
    assert sample(worker, "tapwatch_inference_model_reloads_total", {"result": "ok"}) == 1
    assert sample(worker, "tapwatch_inference_model_reloads_total", {"result": "failed"}) == 2
    write_tiny_model(model_files[0].parent, RELOADED, version="5")
    worker.request_reload()  # SIGHUP: no waiting for the poll
    assert versions_after(3) == {"5"}
    assert sample(worker, "tapwatch_inference_model_reloads_total", {"result": "ok"}) == 2


@pytest.mark.parametrize(
    ("card", "data", "problem"),
    [
        ({}, b"garbage", "sha256"),
        ({"onnx": None}, None, "sha256"),
        ({"window_length": 5}, None, "input T = 10 in the graph"),
        ({"class_names": ["BENIGN", "DoS"]}, None, "output 'probs' has shape (2, 3)"),
        ({"thresholds": {"attack": 1.5}}, None, "thresholds.attack"),
        ({"thresholds": {"attack": {"value": 0.9, "chosen": "FPR 0.1%"}}}, None, ""),
    ],
)
def test_a_model_that_contradicts_its_card_is_refused(
    tmp_path: Path, card: dict[str, Any], data: bytes | None, problem: str
) -> None:
    model = write_tiny_model(tmp_path, RELOADED, name="m", card=card, onnx_bytes=data)
    if not problem:
        assert load_model(model.onnx_path).threshold == 0.9
        return
    with pytest.raises(ModelRejected, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_model(model.onnx_path)


def test_bad_settings_fail_at_startup_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"batch_size .*TAPWATCH_BATCH_SIZE.*greater than or equal to 1"):
        build_settings({"model": "m.onnx", "batch_size": 0})
    with pytest.raises(ConfigError, match="model"):
        build_settings({})
    with pytest.raises(ConfigError, match="block_ms"):
        WorkerConfig(block_ms=0)


def test_the_inference_package_never_imports_tensorflow() -> None:
    code = ("import sys, importlib, pkgutil\n"
            f"for p in {RUNTIME_PACKAGES!r}:\n"
            "    for m in pkgutil.iter_modules(importlib.import_module(p).__path__):\n"
            "        importlib.import_module(p + '.' + m.name)\n"
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
            "assert not bad, bad\n")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

"""The worker's model: card checks at load, hot reload (poll and SIGHUP), settings, and no TensorFlow at
run time (inference/'s doctests run from pyproject's testpaths)."""

from __future__ import annotations

import os
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
from tests.support.tiny_model import tiny_card, tiny_graph_bytes, write_tiny_model
from tests.support.worker import FAST, T, mixed_windows, run_until_idle, sample, verdicts_of


@pytest.fixture
def model_files(tmp_path: Path) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path / "model", window_length=T)


RUNTIME_PACKAGES = ["tapwatch.inference", "tapwatch.bus"]
"""The worker's packages: every module of them is imported (found by pkgutil, so a new one is covered)."""


def replace_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_model(files: tuple[Path, Path], version: str, data: bytes | None = None, **card: Any) -> None:
    """Replace the model (and its card, which names the new sha256) as a deployment would."""
    good = tiny_graph_bytes(T, 3, weight=6.0)
    replace_atomically(files[0], data if data is not None else good)
    replace_atomically(
        files[1], tiny_card(good, version=version, **{"window_length": T, **card}).model_dump_json().encode()
    )


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
    write_model(model_files, "2")
    settle()
    assert worker.model.card.version == "2" and versions_after(3) == {"2"}
    assert sample(worker, "tapwatch_model_info", {"name": "tiny", "version": "2"}) == 1
    write_model(model_files, "3", data=b"not an onnx file")  # card names the good bytes: sha256 mismatch
    settle()
    write_model(model_files, "4", input_shape=[None, 5, 82])  # the card contradicts the graph
    settle()
    assert worker.model.card.version == "2" and versions_after(3) == {"2"}
    assert sample(worker, "tapwatch_inference_model_reloads_total", {"result": "ok"}) == 1
    assert sample(worker, "tapwatch_inference_model_reloads_total", {"result": "failed"}) == 2
    write_model(model_files, "5")
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
    files = (tmp_path / "m.onnx", tmp_path / "m.json")
    write_model(files, "1", data=data, **card)
    if not problem:
        assert load_model(files[0]).threshold == 0.9
        return
    with pytest.raises(ModelRejected, match=problem.replace("(", r"\(").replace(")", r"\)")):
        load_model(files[0])


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

"""CI-sized checks of training, export and evaluation on the CIC-IDS2017 subset in ../shared.

The training tests need the ``train`` extra and the subset (``need`` skips locally, fails under CI=true).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.inference.model import load_model
from tapwatch.models.training.train import TrainConfig
from tests.support.env import CIC_SUBSET, need

HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras", "tf2onnx", "lightgbm"))


@pytest.fixture(scope="module")
def cic_small() -> Any:
    need(HAVE_TF, "the train extra (tensorflow, keras, tf2onnx, lightgbm) is not installed")
    need(CIC_SUBSET.exists(), f"the CIC-IDS2017 subset is not at {CIC_SUBSET}")
    from tapwatch.models.evaluation.evaluate import subset_rows
    from tapwatch.models.training.train import load_for

    return subset_rows(load_for(TrainConfig("cic-ids2017", "mlp")), 4000)


def test_quick_train_decreases_the_loss_and_exports_with_parity(cic_small: Any, tmp_path: Path) -> None:
    from tapwatch.models.cli import export_command
    from tapwatch.models.training.train import train_run

    cfg = TrainConfig("cic-ids2017", "mlp", epochs=4, patience=4, max_train=2000, batch_size=128)
    keras_path, meta = train_run(cfg, tmp_path / "mlp-quick", verbose=0, ds=cic_small)
    loss = meta.history["loss"]
    assert loss[-1] < loss[0]
    out = tmp_path / "mlp-quick.onnx"
    result = CliRunner().invoke(export_command, ["--model", str(keras_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = json.loads(out.with_name("mlp-quick.card.json").read_text())
    assert card["metrics"]["parity"]["n"] == 1000 and card["metrics"]["parity"]["argmax_equal"]
    assert card["metrics"]["parity"]["max_abs_diff"] <= 1e-4
    assert card["features"] == list(FEATURE_NAMES)
    load_model(out)


def test_evaluate_quick_builds_a_report_and_resumes(cic_small: Any, tmp_path: Path) -> None:
    from tapwatch.models.cli import evaluate_command

    args = ["--dataset", "cic-ids2017", "--quick", "--out-dir", str(tmp_path)]
    first = CliRunner().invoke(evaluate_command, args)
    assert first.exit_code == 0, first.output
    doc = json.loads((tmp_path / "cic-ids2017-quick.json").read_text())
    assert {"hybrid-fast", "mlp", "lgbm"} <= set(doc["protocols"][0]["summary"])
    assert all(len(f["sha256"]) == 64 for f in doc["files"])
    md = (tmp_path / "cic-ids2017-quick.md").read_text()
    assert "| P benign | P attack |" in md and "DR @ FPR 1%" in md
    assert all((tmp_path / img).exists() for img in doc["protocols"][0]["images"])
    cached = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(cached) == 3
    again = CliRunner().invoke(evaluate_command, args)  # every run cached: no training
    assert again.exit_code == 0 and "training" not in again.output

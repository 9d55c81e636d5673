"""CI-sized checks of training, export and evaluation, and the consistency of the shipped models.

The shipped-model tests need only ONNX Runtime; the training tests need the ``train`` extra and the
CIC-IDS2017 subset in ../shared (``need`` skips locally, fails under CI=true).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from tapwatch.features.card import load_card
from tapwatch.features.contract import FEATURE_NAMES, FEATURE_SUBSETS, feature_set_id
from tapwatch.models.scoring.runtime import load_session
from tapwatch.models.training.train import TrainConfig, choose_threshold, class_weights
from tests.conftest import SHARED, need

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
SHIPPED = ("hybrid-cic", "seq2seq-cic", "lunet-cic")
SUBSET_MODELS = {"hybrid-cic-original": "original", "hybrid-cic-original-mlcve": "original-mlcve"}
"""Shipped models trained on a feature subset, and the subset."""
CIC = SHARED / "datasets" / "cic-ids2017" / "engelen_improved_sample_rnd5000"
HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras", "tf2onnx", "lightgbm"))


def test_every_shipped_card_is_checked() -> None:
    cards = {p.name.removesuffix(".card.json") for p in MODELS_DIR.glob("*.card.json")}
    assert cards == set(SHIPPED) | set(SUBSET_MODELS) and {p.stem for p in MODELS_DIR.glob("*.onnx")} == cards


@pytest.mark.parametrize("name", SHIPPED + tuple(SUBSET_MODELS))
def test_shipped_card_matches_the_feature_contract(name: str) -> None:
    onnx_path = MODELS_DIR / f"{name}.onnx"
    need(onnx_path.exists(), f"{onnx_path} is not shipped yet")
    card = load_card(MODELS_DIR / f"{name}.card.json")
    features = FEATURE_SUBSETS[SUBSET_MODELS.get(name, "all")]  # a named subset of the contract, in its order
    assert tuple(card.features) == features
    assert card.feature_set_id == feature_set_id(card.window_length, features)
    assert card.window_key == "src_ip" and card.window_length == 10
    assert len(card.scaler.center) == len(features) and len(card.feature_stats) == len(features)
    assert [s.feature for s in card.feature_stats] == list(features)
    assert 0.0 < card.thresholds["attack_score"] < 1.0 and "validation" in card.thresholds["chosen"]
    assert onnx_path.stat().st_size < 4_500_000
    model = load_session(onnx_path)
    probs = model.predict(np.zeros((3, card.window_length, len(card.features)), np.float32))
    assert probs.shape == (3, len(card.class_names))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", SHIPPED + tuple(SUBSET_MODELS))
def test_shipped_card_metrics_are_the_reports_shipped_protocol(name: str) -> None:
    path = MODELS_DIR / f"{name}.card.json"
    need(path.exists(), f"{name} is not shipped yet")
    card = load_card(path)
    report = json.loads((MODELS_DIR.parent / card.metrics["report"]).read_text())
    proto = next(p for p in report["protocols"] if p["name"] == "shipped")
    assert card.metrics["protocol"] == proto["title"] and card.metrics["parity"]["argmax_equal"]
    assert card.metrics["test_mean_over_seeds"] in proto["summary"].values()
    subsets = {r["config"].get("features", "all") for r in proto["runs"]}
    assert subsets == {SUBSET_MODELS.get(name, "all")}  # measured on the card's own feature set


def test_deployment_model_is_the_hybrid() -> None:
    path = MODELS_DIR / "hybrid-cic.card.json"
    need(path.exists(), "hybrid-cic is not shipped yet")
    card = load_card(path)
    assert "hybrid" in card.name and card.benign_class == card.class_names[0] == "BENIGN"


def test_models_cli_imports_no_tensorflow() -> None:
    code = "import sys, tapwatch.models.cli; assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_threshold_respects_the_fpr_cap() -> None:
    rng = np.random.default_rng(0)
    y = np.r_[np.zeros(1000, int), np.ones(1000, int)]
    score = np.r_[rng.uniform(0, 0.6, 1000), rng.uniform(0.4, 1.0, 1000)]
    t = choose_threshold(score, y, max_fpr=0.01)
    assert (score[y == 0] >= t["attack_score"]).mean() <= 0.01
    assert choose_threshold(score[:10], y[:10])["attack_score"] == 0.5  # one label only: the default


def test_class_weights_are_balanced_and_clipped() -> None:
    w = class_weights(np.array([0] * 1000 + [1] * 10 + [2]), 4)
    assert w[0] < 1 < w[1] and w[2] == 50.0 and w[3] == 1.0


@pytest.fixture(scope="module")
def cic_small() -> Any:
    need(HAVE_TF, "the train extra (tensorflow, keras, tf2onnx, lightgbm) is not installed")
    need(CIC.exists(), f"the CIC-IDS2017 subset is not at {CIC}")
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
    load_session(out)


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

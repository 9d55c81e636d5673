"""The consistency of the shipped models, and CI-sized checks of the training helpers.

The shipped-model tests need only ONNX Runtime. Training, export and evaluation on the CIC-IDS2017 subset in
../shared: tests/corpus/test_models_train_corpus.py.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tapwatch.features.card import load_card
from tapwatch.features.contract import FEATURE_SUBSETS, feature_set_id
from tapwatch.inference.model import load_model
from tapwatch.models.training.train import choose_threshold, class_weights
from tests.support.env import REPO, need

MODELS_DIR = REPO / "models"
SHIPPED = ("hybrid-cic", "seq2seq-cic", "lunet-cic", "hybrid-lab")
SUBSET_MODELS = {"hybrid-cic-original": "original", "hybrid-cic-original-mlcve": "original-mlcve"}
"""Shipped models trained on a feature subset, and the subset."""


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
    model = load_model(onnx_path)
    probs = model.predict(np.zeros((3, card.window_length, len(card.features)), np.float32))
    assert probs.shape == (3, len(card.class_names))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", SHIPPED + tuple(SUBSET_MODELS))
def test_shipped_card_metrics_are_the_reports_shipped_protocol(name: str) -> None:
    path = MODELS_DIR / f"{name}.card.json"
    need(path.exists(), f"{name} is not shipped yet")
    card = load_card(path)
    if "report" not in card.metrics:  # no report of its dataset yet: the training run's own held-out test part
        run_test = card.metrics["run_test"]
        assert run_test["protocol"].startswith("the training run's test part")
        assert card.metrics["parity"]["argmax_equal"]
        assert abs(run_test["threshold"] - card.thresholds["attack_score"]) < 1e-6
        return
    report = json.loads((MODELS_DIR.parent / card.metrics["report"]).read_text())
    proto = next(p for p in report["protocols"] if p["name"] == "shipped")
    assert card.metrics["protocol"] == proto["title"] and card.metrics["parity"]["argmax_equal"]
    assert card.metrics["test_mean_over_seeds"] in proto["summary"].values()
    subsets = {r["config"].get("features", "all") for r in proto["runs"]}
    assert subsets == {SUBSET_MODELS.get(name, "all")}  # measured on the card's own feature set


def test_deployment_model_is_the_hybrid_trained_on_the_labs_flows() -> None:
    from tapwatch.app.embedded import shipped_model

    path = shipped_model().with_name("hybrid-lab.card.json")
    assert shipped_model().name == "hybrid-lab.onnx" and path.exists()
    card = load_card(path)
    assert card.name == "hybrid-lab" and card.benign_class == card.class_names[0] == "benign"
    assert card.class_names == ["benign", "botnet", "bruteforce", "dos", "scan", "webattack"]
    assert card.training_data.dataset == "cic-ids2017+lab" and card.thresholds["attack_score"] > 0.5
    assert any(f["name"].endswith("flows.csv") for f in card.training_data.files)  # tapwatch's own flows


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

"""Models on a feature subset (the original CIC-IDS2017 release's 77 features): training and export.

The training test needs the ``train`` extra and the CIC-IDS2017 subset in ../shared (``need`` skips locally,
fails under CI=true). It trains a tiny MLP on 2,000 windows and exports it (about 15 s).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tapwatch.features.card import load_card
from tapwatch.features.contract import FEATURE_SUBSETS, ORIGINAL_FEATURE_NAMES, feature_set_id
from tapwatch.inference.model import load_model
from tapwatch.models.training.train import TrainConfig
from tests.support.env import CIC_SUBSET, need

HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras", "tf2onnx"))


@pytest.fixture(scope="module")
def cic_small() -> Any:
    need(HAVE_TF, "the train extra (tensorflow, keras, tf2onnx) is not installed")
    need(CIC_SUBSET.exists(), f"the CIC-IDS2017 subset is not at {CIC_SUBSET}")
    from tapwatch.models.evaluation.evaluate import subset_rows
    from tapwatch.models.training.train import load_for

    return subset_rows(load_for(TrainConfig("cic-ids2017", "mlp")), 4000)


def test_subset_windows_train_and_export_with_parity(cic_small: Any, tmp_path: Path) -> None:
    from tapwatch.models.cli import export_command
    from tapwatch.models.training.train import prepare, train_run

    cfg = TrainConfig("cic-ids2017", "mlp", epochs=3, patience=3, max_train=2000, batch_size=128, features="original")
    prep = prepare(cfg, cic_small)
    assert prep.ds.features == ORIGINAL_FEATURE_NAMES and prep.train.X.shape[1:] == (10, 77)
    assert len(prep.scaler.center) == 77 and "subset 'original'" in prep.ds.steps[-1]
    assert prep.ds.y.equals(cic_small.y)  # rows untouched: the same split as with all features
    keras_path, meta = train_run(cfg, tmp_path / "mlp-orig", verbose=0, ds=cic_small)
    assert meta.features == list(ORIGINAL_FEATURE_NAMES) and meta.config["features"] == "original"
    assert [s["feature"] for s in meta.feature_stats] == list(ORIGINAL_FEATURE_NAMES)
    out = tmp_path / "mlp-orig.onnx"
    result = CliRunner().invoke(export_command, ["--model", str(keras_path), "--out", str(out)])
    assert result.exit_code == 0, result.output
    card = load_card(out.with_name("mlp-orig.card.json"))
    assert tuple(card.features) == FEATURE_SUBSETS["original"]
    assert card.feature_set_id == feature_set_id(10, ORIGINAL_FEATURE_NAMES) != feature_set_id(10)
    assert card.metrics["parity"]["n"] == 1000 and card.metrics["parity"]["argmax_equal"]
    assert card.metrics["parity"]["max_abs_diff"] <= 1e-4
    assert "inputs: the 77 features of subset 'original'" in card.training_data.split
    assert card.onnx is not None and card.onnx.input_shape == [None, 10, 77]
    assert load_model(out).predict(prep.val.X[:5]).shape == (5, len(card.class_names))

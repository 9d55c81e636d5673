"""Models on a feature subset (the original CIC-IDS2017 release's 77 features): contract, config, training, export.

The training test needs the ``train`` extra and the CIC-IDS2017 subset in ../shared (``need`` skips locally,
fails under CI=true). It trains a tiny MLP on 2,000 windows and exports it (about 15 s).
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tapwatch.features.card import load_card
from tapwatch.features.contract import (
    FEATURE_NAMES,
    FEATURE_SUBSETS,
    ORIGINAL_FEATURE_NAMES,
    ORIGINAL_RELEASE_LACKS,
    feature_set_id,
    feature_subset,
)
from tapwatch.features.errors import ConfigError
from tapwatch.models.scoring.runtime import load_session
from tapwatch.models.training.data import ORIGINAL_TO_CORRECTED, map_cic_columns
from tapwatch.models.training.train import TrainConfig
from tests.conftest import SHARED, need

REPO = Path(__file__).resolve().parents[2]
CIC = SHARED / "datasets" / "cic-ids2017" / "engelen_improved_sample_rnd5000"
HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras", "tf2onnx"))


def test_original_subset_is_the_contract_without_the_five_features_the_original_release_lacks() -> None:
    assert len(ORIGINAL_FEATURE_NAMES) == 77 and set(ORIGINAL_RELEASE_LACKS) <= set(FEATURE_NAMES)
    assert tuple(f for f in FEATURE_NAMES if f not in ORIGINAL_RELEASE_LACKS) == ORIGINAL_FEATURE_NAMES
    assert feature_subset("original") is ORIGINAL_FEATURE_NAMES and feature_subset("all") is FEATURE_NAMES
    # The original release's header (its spellings, the repeated column) maps onto exactly these 77.
    inverse = {v: k for k, v in ORIGINAL_TO_CORRECTED.items()}
    header = [f" {inverse.get(f, f)}" for f in ORIGINAL_FEATURE_NAMES] + [" Fwd Header Length.1", " Label"]
    mapping = map_cic_columns(header)
    assert mapping.missing_features == ORIGINAL_RELEASE_LACKS and mapping.duplicates == (" Fwd Header Length.1",)
    assert feature_set_id(10, ORIGINAL_FEATURE_NAMES) != feature_set_id(10)
    assert feature_subset("original-mlcve") == tuple(f for f in ORIGINAL_FEATURE_NAMES if f != "Protocol")
    with pytest.raises(ConfigError, match="unknown feature subset 'nope'; known: all, original, original-mlcve"):
        feature_subset("nope")


def test_config_subset_keeps_earlier_cache_keys_and_is_checked() -> None:
    from tapwatch.models.evaluation.evaluate import run_key

    shipped = TrainConfig("cic-ids2017", "hybrid-fast", epochs=15, learning_rate=3e-3)
    # The key of the committed evaluation run of the shipped Hybrid (models/reports/cache/cic-ids2017/).
    assert run_key(shipped) == "78d39b0513f2c21a" and "features" not in shipped.key()
    assert (REPO / "models" / "reports" / "cache" / "cic-ids2017" / "78d39b0513f2c21a.json").exists()
    original = replace(shipped, features="original")
    assert original.key()["features"] == "original" and run_key(original) != run_key(shipped)
    with pytest.raises(ConfigError, match="--features: unknown feature subset 'x'"):
        TrainConfig("cic-ids2017", "mlp", features="x")
    with pytest.raises(ConfigError, match="names CIC features; unsw-nb15 has its own"):
        TrainConfig("unsw-nb15", "mlp", features="original")


def test_embedded_and_worker_defaults_stay_on_the_82_feature_deployment_model() -> None:
    from tapwatch.app.embedded import shipped_model

    path = shipped_model()
    need(path.exists(), f"{path} is not shipped")
    assert path.name == "hybrid-cic.onnx"
    assert tuple(load_card(path.with_name("hybrid-cic.card.json")).features) == FEATURE_NAMES


@pytest.fixture(scope="module")
def cic_small() -> Any:
    need(HAVE_TF, "the train extra (tensorflow, keras, tf2onnx) is not installed")
    need(CIC.exists(), f"the CIC-IDS2017 subset is not at {CIC}")
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
    assert load_session(out).predict(prep.val.X[:5]).shape == (5, len(card.class_names))


@pytest.mark.parametrize("subset", ["original", "original-mlcve"])
def test_subset_report_is_the_shipped_protocol_with_only_the_features_changed(subset: str) -> None:
    from tapwatch.models.evaluation.evaluate import make_plan
    from tapwatch.models.evaluation.subset_report import subset_plan

    shipped = next(p for p in make_plan("cic-ids2017").protocols if p.name == "shipped")
    (cfg,) = subset_plan(subset).protocols[0].runs
    assert cfg.features == subset and replace(cfg, features="all") in shipped.runs
    report = REPO / "models" / "reports" / f"cic-ids2017-{subset}.json"
    need(report.exists(), f"{report} is not generated yet")
    doc = json.loads(report.read_text())
    assert doc["protocols"][0]["runs"][0]["config"] == cfg.key() and doc["features"] == list(feature_subset(subset))

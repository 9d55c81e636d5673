"""Models on a feature subset (the original CIC-IDS2017 release's 77 features): contract, config, reports.

Training and export on the CIC-IDS2017 subset in ../shared: tests/corpus/test_models_subset_corpus.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tapwatch.features.card import load_card
from tapwatch.features.contract import (
    FEATURE_NAMES,
    ORIGINAL_FEATURE_NAMES,
    ORIGINAL_RELEASE_LACKS,
    feature_set_id,
    feature_subset,
)
from tapwatch.features.errors import ConfigError
from tapwatch.models.training.data import ORIGINAL_TO_CORRECTED, map_cic_columns
from tapwatch.models.training.train import TrainConfig
from tests.support.env import REPO, need


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
    assert path.name == "hybrid-lab.onnx"
    assert tuple(load_card(path.with_name("hybrid-lab.card.json")).features) == FEATURE_NAMES


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

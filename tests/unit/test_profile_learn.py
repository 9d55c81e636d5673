"""Learning a profile's parts from benign flows: the windows as the sensor builds them, family thresholds at the
budget, the drift reference, and the card (the novelty model is tested in test_novelty, and end to end in
tests/e2e/test_learn_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.schema import FlowRecord
from tapwatch.inference.model import Model, load_model
from tapwatch.models.profile import LearnConfig, drift_reference, family_thresholds, learn_profile, site_windows
from tests.support.alerting import meta
from tests.support.tiny_model import write_tiny_model

T = 4


def record(i: int, level: float, t_ms: int, packets: int = 4, src: str = "10.0.0.1") -> FlowRecord:
    values = [0.0] * len(FEATURE_NAMES)
    values[0] = level  # the tiny model's DoS logit follows feature 0
    m = meta(i, src=src, last_seen_ms=t_ms)
    return FlowRecord(meta=m.__class__(**{**m.__dict__, "packets": packets}), values=tuple(values))


@pytest.fixture
def model(tmp_path: Path) -> Model:
    return load_model(write_tiny_model(tmp_path, window_length=T).onnx_path)


def test_windows_are_built_per_file_and_one_packet_flows_are_not_windowed(model: Model) -> None:
    a = [record(1, 0.0, 1_000), record(2, 0.0, 2_000, packets=1), record(3, 0.0, 3_000)]
    b = [record(4, 0.0, 4_000)]
    w = site_windows([a, b], model)
    assert len(w.tensors) == 3  # the one-packet flow is only aggregated, as the sensor does
    assert w.valid_rows.tolist() == [1, 2, 1]  # the second file starts its own windows
    assert w.probs.shape == (3, 3) and np.allclose(w.probs.sum(axis=1), 1, atol=1e-5)


def test_family_thresholds_let_the_budget_through_and_never_undercut_the_card(model: Model) -> None:
    flows = [record(i, level, 1000 * i, src=f"10.0.1.{i}") for i, level in enumerate(np.linspace(0, 3, 100))]
    w = site_windows([flows], model)
    dos_scores = w.probs[:, 1]
    found = family_thresholds(w, model, budget=0.05)
    assert set(found) == {"dos", "scan"}
    over = (dos_scores >= found["dos"]).mean()
    assert over <= 0.05 and found["dos"] > float(np.quantile(dos_scores, 0.9))
    assert found["scan"] == pytest.approx(model.threshold, abs=1e-6)  # no benign window looks like a scan


def test_the_drift_reference_is_the_newest_rows_mean_and_spread(model: Model) -> None:
    flows = [record(i, float(i % 2), 1000 * i, src=f"10.0.2.{i}") for i in range(10)]
    mean, std = drift_reference(site_windows([flows], model))
    assert mean[0] == pytest.approx(0.5) and std[0] == pytest.approx(0.5) and mean[1] == 0.0
    assert len(mean) == len(model.card.features)


def test_the_card_says_what_was_learned_from(model: Model) -> None:
    a = [record(i, 0.0, 10_000 + 1000 * i) for i in range(5)]
    b = [record(10 + i, 0.0, 500_000 + 1000 * i) for i in range(3)]
    data = [{"path": "a.pcap", "kind": "pcap", "sha256": "aa", "flows": 5}]
    p = learn_profile([a, b], model, "cd" * 32, LearnConfig(novelty=False), {"data": data, "command": "tapwatch learn"})
    c = p.card
    assert (c.model.name, c.model.version, c.model.onnx_sha256) == (model.card.name, model.card.version, "cd" * 32)
    assert c.flows == 8 and c.windows == 8 and c.data == data and c.budget == 0.001
    assert c.span_s == pytest.approx(4.5 + 2.5)  # each file's span (first seen to last seen), summed
    assert p.novelty is None and set(p.thresholds) == {"dos", "scan"}
    assert p.baseline.source["files"] == data and model.card.name in p.baseline.window_open

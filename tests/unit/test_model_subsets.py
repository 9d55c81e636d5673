"""A model that reads a subset of the sensor's features is served by ``detect`` with its columns chosen by name;
one that reads a feature the sensor does not compute is a usage error (issue 10 item 8)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tapwatch.app.cli import main
from tapwatch.features.card import load_card
from tapwatch.features.contract import FEATURE_NAMES, feature_set_id
from tapwatch.features.errors import ModelCardError
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord
from tapwatch.features.window import Windower
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
ORIGINAL = REPO / "models" / "hybrid-cic-original.onnx"


def record(values: tuple[float, ...]) -> FlowRecord:
    meta = FlowMeta(flow_id="f", community_id="c", src_ip="10.0.0.1", src_port=1, dst_ip="10.0.0.2", dst_port=2,
                    protocol=6, first_seen_ms=0, last_seen_ms=1, packets=2, bytes=100, expiry=ExpiryReason.IDLE,
                    expired_at_ms=1, sensor="s")  # fmt: skip
    return FlowRecord(meta=meta, values=values)


def test_the_window_of_a_subset_model_holds_its_columns_by_name_in_its_order() -> None:
    card = load_card(ORIGINAL.with_name("hybrid-cic-original.card.json"))
    assert set(card.features) < set(FEATURE_NAMES)
    w = Windower(card)
    values = tuple(float(i) for i in range(len(FEATURE_NAMES)))
    got = w.scale(values)
    center, scale = card.scaler.arrays(len(card.features))
    raw = np.array([FEATURE_NAMES.index(f) for f in card.features], dtype=np.float64)
    if card.scaler.log1p:
        raw = np.sign(raw) * np.log1p(np.abs(raw))
    assert np.allclose(got, (raw - center) / scale)
    assert w.add(record(values)).tensor.shape == (card.window_length, len(card.features))


def test_detect_serves_a_model_of_the_original_release() -> None:
    result = CliRunner().invoke(main, ["detect", str(SAMPLE), "--model", str(ORIGINAL), "--no-explain"])
    assert result.exit_code == 0, result.output
    lines = {ln.split()[0]: ln for ln in result.output.splitlines() if ln.startswith("  ")}
    windows = int(lines["windows"].split()[1])
    assert (
        windows > 0 and lines["verdicts"].split()[1] == f"{windows}:" and "model hybrid-cic-original" in result.output
    )


def test_a_model_reading_a_feature_the_sensor_lacks_is_a_usage_error(tmp_path: Path) -> None:
    onnx = tmp_path / "odd.onnx"
    shutil.copy(ORIGINAL, onnx)
    doc = json.loads(ORIGINAL.with_name("hybrid-cic-original.card.json").read_text())
    doc["features"][0] = "Flow Wobble"
    doc["feature_set_id"] = feature_set_id(doc["window_length"], tuple(doc["features"]))
    (tmp_path / "odd.card.json").write_text(json.dumps(doc))
    with pytest.raises(ModelCardError, match=r"reads 1 features the sensor does not compute \(Flow Wobble\)"):
        Windower(load_card(tmp_path / "odd.card.json"))
    result = CliRunner().invoke(main, ["detect", str(SAMPLE), "--model", str(onnx)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1] == (
        f"tapwatch: error: {onnx}: the sensor cannot serve this model: card {doc['name']} reads 1 features the "
        "sensor does not compute (Flow Wobble)"
    )

"""The feature contract, model cards and windows (the contract against the dataset's header:
tests/corpus/test_contract_corpus.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tapwatch.features.card import ModelCard, Scaler, ScalerKind, identity_card, load_card, verify_onnx_file
from tapwatch.features.contract import FEATURE_NAMES, FEATURES, TIME_FEATURES, Unit, feature_set_id
from tapwatch.features.errors import ModelCardError
from tapwatch.features.resolution import quantize_row
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord
from tapwatch.features.window import Windower, WindowKey


def test_every_feature_has_a_unit_and_a_rule() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURES) == 82
    assert all(f.rule and isinstance(f.unit, Unit) for f in FEATURES)
    assert "Flow Duration" in TIME_FEATURES and "Flow Bytes/s" not in TIME_FEATURES


def test_feature_set_id_changes_with_order_and_window_length() -> None:
    assert feature_set_id(10) != feature_set_id(10, tuple(reversed(FEATURE_NAMES)))
    assert feature_set_id(10) != feature_set_id(20)


def test_quantize_row_rounds_times_and_recomputes_rates() -> None:
    row = {n: 0.0 for n in FEATURE_NAMES}
    row.update({"Flow Duration": 2499.0, "Flow IAT Mean": 500.0, "Total Fwd Packet": 2, "Total Bwd packets": 1,
                "Total Length of Fwd Packet": 100, "Flow Bytes/s": 1.0, "Fwd Packets/s": 1.0})  # fmt: skip
    q = quantize_row(row)
    assert q["Flow Duration"] == 2000 and q["Flow IAT Mean"] == 1000
    assert q["Flow Bytes/s"] == pytest.approx(100 / 0.002) and q["Fwd Packets/s"] == pytest.approx(1000)
    row["Flow Duration"] = 400.0
    q = quantize_row(row)
    assert q["Flow Duration"] == 0 and q["Flow Bytes/s"] == -1 and q["Fwd Packets/s"] == 0


def test_card_round_trips_through_json_and_is_validated(tmp_path: Path) -> None:
    card = identity_card(10)
    path = tmp_path / "card.json"
    path.write_text(card.model_dump_json())
    assert load_card(path) == card
    bad = json.loads(card.model_dump_json())
    bad["window_length"] = 5  # the feature-set id no longer matches
    path.write_text(json.dumps(bad))
    with pytest.raises(ModelCardError, match="feature_set_id"):
        load_card(path)
    path.write_text("{not json")
    with pytest.raises(ModelCardError, match=str(path)):
        load_card(path)


def test_card_checks_the_onnx_sha256(tmp_path: Path) -> None:
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"model bytes")
    data = json.loads(identity_card().model_dump_json())
    data["onnx"] = {"file": "m.onnx", "sha256": "0" * 64, "opset": 17, "input_name": "x",
                    "input_shape": [None, 10, 82], "output_names": ["probs"]}  # fmt: skip
    card = ModelCard.model_validate(data)
    with pytest.raises(ModelCardError, match="does not match"):
        verify_onnx_file(card, onnx)


def record(src: str, dst: str, value: float, i: int) -> FlowRecord:
    meta = FlowMeta(i, "1:x", src, 1000 + i, dst, 80, 6, i, i + 1, 2, 120, ExpiryReason.TCP_FIN, i + 2, "s")
    return FlowRecord(meta, tuple([value] * 82))


def test_windows_are_left_padded_stride_one_per_key() -> None:
    w = Windower(identity_card(3))
    entries = [w.add(record("10.0.0.1", "10.0.0.9", float(i), i)) for i in range(5)]
    assert [e.valid_rows for e in entries] == [1, 2, 3, 3, 3]
    np.testing.assert_array_equal(entries[0].tensor[:, 0], [0, 0, 0])
    np.testing.assert_array_equal(entries[1].tensor[:, 0], [0, 0, 1])
    np.testing.assert_array_equal(entries[4].tensor[:, 0], [2, 3, 4])
    other = w.add(record("10.0.0.2", "10.0.0.9", 7.0, 9))
    assert other.valid_rows == 1 and other.key == "10.0.0.2"
    by_dst = Windower(identity_card(3), key=WindowKey.DST_IP)
    assert by_dst.add(record("10.0.0.1", "10.0.0.9", 1.0, 1)).key == "10.0.0.9"


def test_window_keys_are_capped_with_lru_eviction_counted() -> None:
    evicted: list[int] = []
    w = Windower(identity_card(2), max_keys=2, on_evict=lambda: evicted.append(1))
    w.add(record("10.0.0.1", "x", 1.0, 1))
    w.add(record("10.0.0.2", "x", 1.0, 2))
    w.add(record("10.0.0.1", "x", 1.0, 3))  # .1 is now the most recent
    w.add(record("10.0.0.3", "x", 1.0, 4))  # evicts .2
    assert len(w) == 2 and len(evicted) == 1
    assert w.add(record("10.0.0.1", "x", 1.0, 5)).valid_rows == 2  # .1 kept its history
    assert w.add(record("10.0.0.2", "x", 1.0, 6)).valid_rows == 1  # .2 starts again


def test_windows_apply_the_card_scaler() -> None:
    data = json.loads(identity_card(2).model_dump_json())
    data["scaler"] = Scaler(kind=ScalerKind.STANDARD, log1p=True, center=[1.0] * 82, scale=[2.0] * 82).model_dump()
    w = Windower(ModelCard.model_validate(data))
    row = w.add(record("10.0.0.1", "x", float(np.e - 1), 1)).tensor[-1]
    assert row[0] == pytest.approx((1.0 - 1.0) / 2.0) and row.dtype == np.float32

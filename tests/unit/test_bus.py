"""The bus contract on the in-memory bus (on a real Redis: tests/redis/test_bus_redis.py), and the encoding of
window entries and verdicts."""

from __future__ import annotations

import numpy as np
import pytest

from tapwatch.bus.streams import Bus, MemoryBus
from tapwatch.features.errors import SchemaError
from tapwatch.features.schema import FlowMeta, Verdict, WindowEntry
from tests.support.bus_contract import BusContract, meta, window


class TestMemoryBus(BusContract):
    @pytest.fixture
    def bus(self) -> Bus:
        return MemoryBus()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"v": "99"}, "version"),
        ({"dtype": "float64"}, "dtype"),
        ({"shape": "5,82"}, "shape"),
        ({"tensor": b"\x00" * 7}, "shape"),
        ({"flow": "{not json"}, "flow_meta"),
    ],
)
def test_malformed_window_entries_are_rejected_with_a_reason(change: dict[str, object], reason: str) -> None:
    fields: dict[str, object] = dict(window().encode())
    fields.update(change)
    with pytest.raises(SchemaError) as err:
        WindowEntry.decode(fields)
    assert err.value.reason == reason


def test_missing_field_is_rejected() -> None:
    fields = dict(window().encode())
    del fields["fsid"]
    with pytest.raises(SchemaError, match="fsid"):
        WindowEntry.decode(fields)


def test_verdict_round_trip() -> None:
    w = window()
    v = Verdict(
        window_id="5-0", sensor="s1", key=w.key, flow=w.flow, model="hybrid", model_version="1",
        class_names=("BENIGN", "Portscan"), probabilities=(0.1, 0.9), predicted="Portscan", score=0.9,
        threshold=0.5, feature_set_id=w.feature_set_id, decided_at_ms=7, tensor=w.tensor, valid_rows=2,
    )  # fmt: skip
    back = Verdict.decode(v.encode())
    assert back.over_threshold and back.probabilities == (0.1, 0.9) and back.flow == w.flow
    np.testing.assert_array_equal(back.tensor, w.tensor)
    quiet = Verdict.decode({**v.encode(), "score": "0.1"})
    assert not quiet.over_threshold
    fields = dict(v.encode())
    fields["v"] = "2"
    with pytest.raises(SchemaError, match="version"):
        Verdict.decode(fields)


def test_a_decoded_flow_keeps_its_json_text() -> None:
    text = meta(5).to_json()
    back = FlowMeta.from_json(text.encode())
    assert back == meta(5) and back.to_json() == text
    w = window()
    v = Verdict(
        window_id="5-0", sensor="s1", key=w.key, flow=WindowEntry.decode(w.encode()).flow, model="m",
        model_version="1", class_names=("BENIGN", "X"), probabilities=(0.5, 0.5), predicted="X", score=0.5,
        threshold=0.5, feature_set_id=w.feature_set_id, decided_at_ms=7,
    )  # fmt: skip
    assert v.encode()["flow"] == w.encode()["flow"]
    assert Verdict.decode(v.encode()).class_names == ("BENIGN", "X")

"""The bus contract, run on the in-memory bus and on a real Redis server."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pytest

from tapwatch.bus.streams import Bus, GroupMissing, MemoryBus, RedisBus
from tapwatch.features.contract import feature_set_id
from tapwatch.features.errors import SchemaError
from tapwatch.features.schema import ExpiryReason, FlowMeta, Verdict, WindowEntry


@pytest.fixture(params=["memory", "redis"])
def bus(request: pytest.FixtureRequest) -> Iterator[Bus]:
    if request.param == "memory":
        yield MemoryBus()
    else:
        server = request.getfixturevalue("redis_server")
        yield RedisBus(server.url)


def meta(i: int = 1) -> FlowMeta:
    return FlowMeta(
        flow_id=i, community_id="1:abc", src_ip="10.0.0.1", src_port=1234, dst_ip="10.0.0.2", dst_port=80,
        protocol=6, first_seen_ms=1000, last_seen_ms=2000, packets=4, bytes=300, expiry=ExpiryReason.TCP_FIN,
        expired_at_ms=3000, sensor="s1",
    )  # fmt: skip


def window(t: int = 4, f: int = 82) -> WindowEntry:
    tensor = np.arange(t * f, dtype=np.float32).reshape(t, f)
    return WindowEntry("s1", "10.0.0.1", meta(), tensor, 2, feature_set_id(t))


def test_add_read_ack_in_order(bus: Bus) -> None:
    bus.ensure_group("s", "g")
    ids = bus.add_many("s", [{"n": str(i)} for i in range(5)])
    assert len(set(ids)) == 5
    got = bus.read_group("s", "g", "c1", count=3, block_ms=10)
    assert [f["n"] for _, f in got] == [b"0", b"1", b"2"]
    rest = bus.read_group("s", "g", "c2", count=10, block_ms=10)
    assert [f["n"] for _, f in rest] == [b"3", b"4"]
    assert bus.ack("s", "g", [i for i, _ in got + rest]) == 5
    assert bus.read_group("s", "g", "c1", count=10, block_ms=10) == []
    assert bus.length("s") == 5


def test_trim_counts_what_it_removes(bus: Bus) -> None:
    bus.add_many("t", [{"n": str(i)} for i in range(300)])
    removed = bus.trim("t", 100)
    assert removed == 300 - bus.length("t")
    assert bus.length("t") >= 100


def test_window_entry_round_trip_through_the_bus(bus: Bus) -> None:
    bus.ensure_group("w", "g")
    entry = window()
    bus.add_many("w", [entry.encode()])
    [(_, fields)] = bus.read_group("w", "g", "c", count=1, block_ms=10)
    back = WindowEntry.decode(fields)
    assert back.flow == entry.flow
    assert back.valid_rows == 2 and back.feature_set_id == entry.feature_set_id
    np.testing.assert_array_equal(back.tensor, entry.tensor)
    assert len(fields["tensor"]) == 4 * 82 * 4  # binary float32, not JSON numbers


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


def test_stale_entries_are_claimed_by_another_consumer(bus: Bus) -> None:
    bus.ensure_group("c", "g")
    bus.add_many("c", [{"n": str(i)} for i in range(3)])
    taken = bus.read_group("c", "g", "dead-worker", count=3, block_ms=10)
    assert len(taken) == 3
    assert bus.claim_stale("c", "g", "survivor", min_idle_ms=60_000, count=10) == []
    time.sleep(0.05)
    claimed = bus.claim_stale("c", "g", "survivor", min_idle_ms=20, count=10)
    assert [i for i, _ in claimed] == [i for i, _ in taken]
    assert bus.ack("c", "g", [i for i, _ in claimed]) == 3


def test_a_missing_group_is_reported_and_recreated(bus: Bus) -> None:
    bus.add_many("m", [{"n": "1"}])
    with pytest.raises(GroupMissing):
        bus.read_group("m", "g", "c", count=1, block_ms=10)
    assert bus.ensure_group("m", "g") is True
    assert bus.ensure_group("m", "g") is False
    assert len(bus.read_group("m", "g", "c", count=5, block_ms=10)) == 1


def test_set_once_guards_a_key(bus: Bus) -> None:
    assert bus.set_once("tapwatch:test:alerted:1-0", 60) is True
    assert bus.set_once("tapwatch:test:alerted:1-0", 60) is False
    assert bus.set_once("tapwatch:test:alerted:2-0", 60) is True


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


def test_set_once_and_add_writes_the_entry_only_with_the_key(bus: Bus) -> None:
    fields = {"eve": "{}", "window_id": "1-0"}
    assert bus.set_once_and_add("tapwatch:test:alerted:9-0", 60, "tapwatch:test:alerts", fields, 1000) is True
    assert bus.set_once_and_add("tapwatch:test:alerted:9-0", 60, "tapwatch:test:alerts", fields, 1000) is False
    assert bus.length("tapwatch:test:alerts") == 1
    assert bus.set_once("tapwatch:test:alerted:9-0", 60) is False  # the same guard as set_once
    for i in range(300):  # the stream stays near maxlen
        bus.set_once_and_add(f"tapwatch:test:alerted:t{i}", 60, "tapwatch:test:trimmed", fields, 100)
    assert 100 <= bus.length("tapwatch:test:trimmed") < 300


def test_write_and_ack_writes_then_acks(bus: Bus) -> None:
    bus.ensure_group("in", "g")
    ids = bus.add_many("in", [{"n": str(i)} for i in range(3)])
    assert len(bus.read_group("in", "g", "c", count=10, block_ms=10)) == 3
    bus.write_and_ack([("out", [{"n": "a"}, {"n": "b"}]), ("dead", [])], "in", "g", ids)
    assert bus.length("out") == 2 and bus.length("dead") == 0
    assert bus.claim_stale("in", "g", "other", 0, 10) == []  # nothing pending: all acked


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

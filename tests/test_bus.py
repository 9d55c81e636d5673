"""The bus contract, run on the in-memory bus and on a real Redis server."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from tapwatch.features.bus import Bus, MemoryBus, RedisBus
from tapwatch.features.contract import feature_set_id
from tapwatch.features.errors import SchemaError
from tapwatch.features.schema import ExpiryReason, FlowMeta, WindowEntry


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

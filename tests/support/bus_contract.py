"""The bus contract: one suite every :class:`~tapwatch.bus.streams.Bus` passes, and the records it carries.

A test module runs the suite on one bus by subclassing :class:`BusContract` as ``Test<Kind>Bus`` with a
``bus`` fixture: the in-memory bus in ``tests/unit/test_bus.py``, a real Redis in ``tests/redis/test_bus_redis.py``.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from tapwatch.bus.streams import Bus, GroupMissing
from tapwatch.features.contract import feature_set_id
from tapwatch.features.schema import ExpiryReason, FlowMeta, WindowEntry


def meta(i: int = 1) -> FlowMeta:
    return FlowMeta(
        flow_id=i, community_id="1:abc", src_ip="10.0.0.1", src_port=1234, dst_ip="10.0.0.2", dst_port=80,
        protocol=6, first_seen_ms=1000, last_seen_ms=2000, packets=4, bytes=300, expiry=ExpiryReason.TCP_FIN,
        expired_at_ms=3000, sensor="s1",
    )  # fmt: skip


def window(t: int = 4, f: int = 82) -> WindowEntry:
    tensor = np.arange(t * f, dtype=np.float32).reshape(t, f)
    return WindowEntry("s1", "10.0.0.1", meta(), tensor, 2, feature_set_id(t))


class BusContract:
    """The tests every bus passes; a subclass named ``Test...`` provides the ``bus`` fixture."""

    def test_add_read_ack_in_order(self, bus: Bus) -> None:
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

    def test_trim_counts_what_it_removes(self, bus: Bus) -> None:
        bus.add_many("t", [{"n": str(i)} for i in range(300)])
        removed = bus.trim("t", 100)
        assert removed == 300 - bus.length("t")
        assert bus.length("t") >= 100

    def test_window_entry_round_trip_through_the_bus(self, bus: Bus) -> None:
        bus.ensure_group("w", "g")
        entry = window()
        bus.add_many("w", [entry.encode()])
        [(_, fields)] = bus.read_group("w", "g", "c", count=1, block_ms=10)
        back = WindowEntry.decode(fields)
        assert back.flow == entry.flow
        assert back.valid_rows == 2 and back.feature_set_id == entry.feature_set_id
        np.testing.assert_array_equal(back.tensor, entry.tensor)
        assert len(fields["tensor"]) == 4 * 82 * 4  # binary float32, not JSON numbers

    def test_stale_entries_are_claimed_by_another_consumer(self, bus: Bus) -> None:
        bus.ensure_group("c", "g")
        bus.add_many("c", [{"n": str(i)} for i in range(3)])
        taken = bus.read_group("c", "g", "dead-worker", count=3, block_ms=10)
        assert len(taken) == 3
        assert bus.claim_stale("c", "g", "survivor", min_idle_ms=60_000, count=10) == []
        time.sleep(0.05)
        claimed = bus.claim_stale("c", "g", "survivor", min_idle_ms=20, count=10)
        assert [i for i, _ in claimed] == [i for i, _ in taken]
        assert bus.ack("c", "g", [i for i, _ in claimed]) == 3

    def test_a_missing_group_is_reported_and_recreated(self, bus: Bus) -> None:
        bus.add_many("m", [{"n": "1"}])
        with pytest.raises(GroupMissing):
            bus.read_group("m", "g", "c", count=1, block_ms=10)
        assert bus.ensure_group("m", "g") is True
        assert bus.ensure_group("m", "g") is False
        assert len(bus.read_group("m", "g", "c", count=5, block_ms=10)) == 1

    def test_set_once_guards_a_key(self, bus: Bus) -> None:
        assert bus.set_once("tapwatch:test:alerted:1-0", 60) is True
        assert bus.set_once("tapwatch:test:alerted:1-0", 60) is False
        assert bus.set_once("tapwatch:test:alerted:2-0", 60) is True

    def test_set_once_and_add_writes_the_entry_only_with_the_key(self, bus: Bus) -> None:
        fields = {"eve": "{}", "window_id": "1-0"}
        assert bus.set_once_and_add("tapwatch:test:alerted:9-0", 60, "tapwatch:test:alerts", fields, 1000) is True
        assert bus.set_once_and_add("tapwatch:test:alerted:9-0", 60, "tapwatch:test:alerts", fields, 1000) is False
        assert bus.length("tapwatch:test:alerts") == 1
        assert bus.set_once("tapwatch:test:alerted:9-0", 60) is False  # the same guard as set_once
        for i in range(300):  # the stream stays near maxlen
            bus.set_once_and_add(f"tapwatch:test:alerted:t{i}", 60, "tapwatch:test:trimmed", fields, 100)
        assert 100 <= bus.length("tapwatch:test:trimmed") < 300

    def test_write_and_ack_writes_then_acks(self, bus: Bus) -> None:
        bus.ensure_group("in", "g")
        ids = bus.add_many("in", [{"n": str(i)} for i in range(3)])
        assert len(bus.read_group("in", "g", "c", count=10, block_ms=10)) == 3
        bus.write_and_ack([("out", [{"n": "a"}, {"n": "b"}]), ("dead", [])], "in", "g", ids)
        assert bus.length("out") == 2 and bus.length("dead") == 0
        assert bus.claim_stale("in", "g", "other", 0, 10) == []  # nothing pending: all acked

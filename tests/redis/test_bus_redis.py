"""The bus contract on a real Redis server (on the in-memory bus: tests/unit/test_bus.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tapwatch.bus.streams import Bus, GroupMissing, RedisBus
from tests.support.bus_contract import BusContract


class TestRedisBus(BusContract):
    @pytest.fixture
    def bus(self, redis_server: Any) -> Bus:
        return RedisBus(redis_server.url)


def test_a_read_blocked_when_its_stream_goes_away_reports_the_group_missing(redis_server: Any) -> None:
    bus = RedisBus(redis_server.url)
    bus.ensure_group("u", "g")
    threading.Timer(0.2, bus.client.flushall).start()
    started = time.monotonic()
    with pytest.raises(GroupMissing):  # Redis 7: "UNBLOCKED" at once; 6.2: NOGROUP at the next read
        while time.monotonic() - started < 5:
            bus.read_group("u", "g", "c", count=1, block_ms=1500)
    if int(str(bus.client.info("server")["redis_version"]).split(".")[0]) >= 7:
        assert time.monotonic() - started < 1.0

"""The bus contract on a real Redis server (on the in-memory bus: tests/unit/test_bus.py)."""

from __future__ import annotations

from typing import Any

import pytest

from tapwatch.bus.streams import Bus, RedisBus
from tests.support.bus_contract import BusContract


class TestRedisBus(BusContract):
    @pytest.fixture
    def bus(self, redis_server: Any) -> Bus:
        return RedisBus(redis_server.url)

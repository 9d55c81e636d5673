"""Consumer-group gauges from Redis: pending entries and lag, one XINFO GROUPS per refresh.

The :class:`~tapwatch.bus.streams.Bus` protocol has no such call, so the service injects a probe into
the worker; the in-memory bus runs without one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from tapwatch.bus.streams import BusUnavailable, RedisBus


@dataclass(frozen=True)
class GroupStats:
    """Entries pending in the group (delivered, not acked) and not yet delivered (``nan`` when unknown)."""

    pending: int
    lag: float


StatsProbe = Callable[[str, str], GroupStats | None]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


class RedisGroupStats:
    """A :data:`StatsProbe` over a :class:`RedisBus`.

    ``lag`` is a Redis 7.0 field of XINFO GROUPS; Redis 6.2 does not report it, and 7.x reports nil after
    deletions inside the group's unread range. Counting the unread entries instead would read them all
    (about 3.4 kB each), so the gauge is ``nan`` then and the pending count still works on 6.2.
    """

    def __init__(self, bus: RedisBus) -> None:
        self.bus = bus

    def __call__(self, stream: str, group: str) -> GroupStats | None:
        try:
            groups = self.bus.client.xinfo_groups(stream)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise BusUnavailable(f"redis: {err}") from err
        except redis.ResponseError:  # no such stream (yet)
            return None
        for info in groups:
            if _text(info.get("name")) == group:
                lag = info.get("lag")
                return GroupStats(int(info.get("pending", 0)), self._lag(stream, info, lag))
        return None

    def _lag(self, stream: str, info: dict[Any, Any], lag: Any) -> float:
        """The group's lag, bounded by what the stream holds: Redis 7.0 keeps counting the entries trimmed before the
        group read them (its entries-read skips them), so after an overload XINFO's lag stays high for ever, even
        once the group has read the last entry. Undelivered entries are in the stream: lag <= its length, and 0
        when the group's last delivered id is the stream's last id."""
        if lag is None:
            return math.nan
        try:
            s = self.bus.client.xinfo_stream(stream)
        except redis.ResponseError:
            return float(lag)
        if _text(info.get("last-delivered-id")) == _text(s.get("last-generated-id")):
            return 0.0
        return float(min(int(lag), int(s.get("length", lag))))

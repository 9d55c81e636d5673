"""The bus between stages: Redis streams with consumer groups, or an in-memory stand-in.

Both implement :class:`Bus`. Stream names are the design's (``tapwatch:windows``, ``tapwatch:verdicts``,
``tapwatch:alerts``, ``tapwatch:dead``). :class:`RedisBus` raises :class:`BusUnavailable` when Redis cannot
be reached; :class:`~tapwatch.bus.publish.Publisher` turns that into buffering and backoff.

>>> bus = MemoryBus()
>>> bus.ensure_group("s", "g")
True
>>> ids = bus.add_many("s", [{"a": "1"}, {"a": "2"}])
>>> [f["a"] for _, f in bus.read_group("s", "g", "c1", count=10, block_ms=0)]
[b'1', b'2']
>>> bus.ack("s", "g", ids)
2
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from tapwatch.features.errors import TapwatchError
from tapwatch.features.schema import Encoded

if TYPE_CHECKING:
    from tapwatch.bus.redisbus import RedisBus as RedisBus

WINDOWS_STREAM = "tapwatch:windows"
VERDICTS_STREAM = "tapwatch:verdicts"
ALERTS_STREAM = "tapwatch:alerts"
DEAD_STREAM = "tapwatch:dead"

Fields = Mapping[str, str | bytes]
Entry = tuple[str, dict[str, bytes]]


class BusUnavailable(TapwatchError):
    """The bus cannot be reached right now (Redis down or restarting)."""


class GroupMissing(TapwatchError):
    """The stream or its consumer group is gone (a Redis that lost its data); recreate and count it.

    :class:`RedisBus` raises it for NOGROUP and for Redis 7's ``UNBLOCKED`` (a XREADGROUP blocked on a stream key
    that FLUSHALL or DEL removed), so no stage needs to know Redis's error replies."""


class Bus(Protocol):
    """What every stage needs of a stream bus."""

    def add_many(self, stream: str, entries: Sequence[Fields]) -> list[str]: ...

    def trim(self, stream: str, maxlen: int) -> int: ...

    def ensure_group(self, stream: str, group: str) -> bool:
        """Create the stream and group if missing; True if the group had to be created."""
        ...

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        """New entries for this consumer; raises :class:`GroupMissing` if the group is gone."""
        ...

    def claim_stale(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Take over entries pending longer than ``min_idle_ms`` in other consumers (XAUTOCLAIM)."""
        ...

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int: ...

    def length(self, stream: str) -> int: ...

    def set_once(self, key: str, ttl_s: int) -> bool:
        """Set ``key`` unless it exists (SET NX EX); True if this call set it."""
        ...

    def set_once_and_add(self, key: str, ttl_s: int, stream: str, fields: Fields, maxlen: int) -> bool:
        """:meth:`set_once`, and only if this call set the key, add ``fields`` to ``stream`` (trimmed to about
        ``maxlen``): atomic and one round trip on Redis (a script). True if the key was set and the entry added."""
        ...

    def write_and_ack(self, writes: Sequence[tuple[str, Sequence[Fields]]], stream: str, group: str,
                      ids: Sequence[str]) -> None:  # fmt: skip
        """Add each ``(stream, entries)`` of ``writes``, then ack ``ids`` on ``stream``: one round trip on Redis
        (a pipeline, not a transaction: after a failure any prefix may have been done; retrying repeats it,
        which at-least-once delivery allows)."""
        ...


def _b(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


class _MemStream:
    def __init__(self) -> None:
        self.entries: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        # The ids in order and their (ms, seq) keys, from ``head`` on (trim drops the oldest): a read finds its
        # cursor by bisection instead of scanning every entry the stream holds.
        self.ids: list[str] = []
        self.keys: list[tuple[int, int]] = []
        self.head = 0
        self.last_ms = 0
        self.seq = 0
        # group -> (cursor, pending: entry id -> (consumer, delivery time))
        self.groups: dict[str, tuple[list[str], dict[str, tuple[str, float]]]] = {}


def write_then_ack(bus: Bus, writes: Sequence[tuple[str, Sequence[Fields]]], stream: str, group: str,
                   ids: Sequence[str]) -> None:  # fmt: skip
    """:meth:`Bus.write_and_ack` as separate calls of ``bus``'s own :meth:`~Bus.add_many` and :meth:`~Bus.ack`
    (for buses with no single round trip to save)."""
    for target, entries in writes:
        if entries:
            bus.add_many(target, entries)
    if ids:
        bus.ack(stream, group, ids)


class MemoryBus:
    """An in-process bus with Redis stream semantics (ids, groups, pending, ack, approximate trim).

    Used by the embedded mode and by tests that need no server. Thread-safe.
    """

    def __init__(self) -> None:
        self._streams: dict[str, _MemStream] = {}
        self._keys: dict[str, float] = {}
        self._cond = threading.Condition()
        self._wakes = 0

    def wake(self) -> None:
        """End every blocking :meth:`read_group` now (it returns what it has, maybe nothing): a stage being stopped
        notices at once instead of at the end of its block time."""
        with self._cond:
            self._wakes += 1
            self._cond.notify_all()

    def _stream(self, name: str) -> _MemStream:
        return self._streams.setdefault(name, _MemStream())

    def add_many(self, stream: str, entries: Sequence[Fields]) -> list[str]:
        ids = []
        with self._cond:
            s = self._stream(stream)
            for fields in entries:
                now = int(time.time() * 1000)
                if now > s.last_ms:
                    s.last_ms, s.seq = now, 0
                else:
                    s.seq += 1
                eid = f"{s.last_ms}-{s.seq}"
                stored = {k: _b(v) for k, v in fields.items()}
                # an entry encoded in this process keeps its object (see features.schema.Encoded)
                s.entries[eid] = Encoded(stored, fields.obj) if type(fields) is Encoded else stored
                s.ids.append(eid)
                s.keys.append((s.last_ms, s.seq))
                ids.append(eid)
            self._cond.notify_all()
        return ids

    def trim(self, stream: str, maxlen: int) -> int:
        with self._cond:
            s = self._stream(stream)
            n = 0
            while len(s.entries) > maxlen:
                s.entries.popitem(last=False)
                s.head += 1
                n += 1
            if s.head > 4096 and s.head * 2 > len(s.ids):  # drop the trimmed ids now and then, not on every trim
                del s.ids[: s.head], s.keys[: s.head]
                s.head = 0
            return n

    def ensure_group(self, stream: str, group: str) -> bool:
        with self._cond:
            groups = self._stream(stream).groups
            if group in groups:
                return False
            groups[group] = (["0-0"], {})
            return True

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            wakes = self._wakes
            while True:
                s = self._stream(stream)
                if group not in s.groups:
                    raise GroupMissing(f"memory bus: no group {group!r} on {stream!r}")
                cursor, pending = s.groups[group]
                start = bisect.bisect_right(s.keys, _key(cursor[0]), lo=s.head)
                out = [(eid, s.entries[eid]) for eid in s.ids[start : start + count]]
                if out or block_ms <= 0 or time.monotonic() >= deadline or self._wakes != wakes:
                    break
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            now = time.monotonic()
            for eid, _ in out:
                pending[eid] = (consumer, now)
            if out:
                cursor[0] = out[-1][0]
            return out

    def claim_stale(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        with self._cond:
            s = self._stream(stream)
            if group not in s.groups:
                raise GroupMissing(f"memory bus: no group {group!r} on {stream!r}")
            pending = s.groups[group][1]
            now = time.monotonic()
            out: list[Entry] = []
            for eid, (_, since) in list(pending.items()):
                if len(out) >= count:
                    break
                if (now - since) * 1000 >= min_idle_ms:
                    if eid in s.entries:
                        pending[eid] = (consumer, now)
                        out.append((eid, s.entries[eid]))
                    else:  # trimmed while pending: nothing left to claim
                        del pending[eid]
            return out

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        with self._cond:
            groups = self._stream(stream).groups
            if group not in groups:
                return 0
            pending = groups[group][1]
            return sum(pending.pop(i, None) is not None for i in ids)

    def length(self, stream: str) -> int:
        with self._cond:
            return len(self._stream(stream).entries)

    def set_once_and_add(self, key: str, ttl_s: int, stream: str, fields: Fields, maxlen: int) -> bool:
        with self._cond:  # re-entrant: the guard and the entry go together, as in the Redis script
            if not self.set_once(key, ttl_s):
                return False
            self.add_many(stream, [fields])
            self.trim(stream, maxlen)
            return True

    def write_and_ack(self, writes: Sequence[tuple[str, Sequence[Fields]]], stream: str, group: str,
                      ids: Sequence[str]) -> None:  # fmt: skip
        write_then_ack(self, writes, stream, group, ids)

    def set_once(self, key: str, ttl_s: int) -> bool:
        with self._cond:
            now = time.monotonic()
            if self._keys.get(key, 0.0) > now:
                return False
            self._keys[key] = now + ttl_s
            if len(self._keys) > 1_000_000:  # bound the guard table like Redis's expiry would
                self._keys = {k: t for k, t in self._keys.items() if t > now}
            return True


def _key(eid: str) -> tuple[int, int]:
    ms, seq = eid.split("-")
    return int(ms), int(seq)


def __getattr__(name: str) -> Any:
    """``RedisBus`` is in :mod:`tapwatch.bus.redisbus`, imported when first asked for: a process with no Redis
    (``detect``, ``flows``, ``run``) never imports redis-py (a twentieth of ``detect``'s start)."""
    if name == "RedisBus":
        from tapwatch.bus.redisbus import RedisBus

        return RedisBus
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

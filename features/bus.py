"""The bus between stages: Redis streams with consumer groups, or an in-memory stand-in.

Both implement :class:`Bus`. Stream names are the design's (``tapwatch:windows``, ``tapwatch:verdicts``,
``tapwatch:alerts``, ``tapwatch:dead``). :class:`RedisBus` raises :class:`BusUnavailable` when Redis cannot
be reached; :class:`~tapwatch.features.publish.Publisher` turns that into buffering and backoff.

>>> bus = MemoryBus()
>>> bus.ensure_group("s", "g")
>>> ids = bus.add_many("s", [{"a": "1"}, {"a": "2"}])
>>> [f["a"] for _, f in bus.read_group("s", "g", "c1", count=10, block_ms=0)]
[b'1', b'2']
>>> bus.ack("s", "g", ids)
2
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import redis

from tapwatch.features.errors import TapwatchError

WINDOWS_STREAM = "tapwatch:windows"
VERDICTS_STREAM = "tapwatch:verdicts"
ALERTS_STREAM = "tapwatch:alerts"
DEAD_STREAM = "tapwatch:dead"

Fields = Mapping[str, str | bytes]
Entry = tuple[str, dict[str, bytes]]


class BusUnavailable(TapwatchError):
    """The bus cannot be reached right now (Redis down or restarting)."""


class Bus(Protocol):
    """What every stage needs of a stream bus."""

    def add_many(self, stream: str, entries: Sequence[Fields]) -> list[str]: ...

    def trim(self, stream: str, maxlen: int) -> int: ...

    def ensure_group(self, stream: str, group: str) -> None: ...

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]: ...

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int: ...

    def length(self, stream: str) -> int: ...


def _b(v: str | bytes) -> bytes:
    return v if isinstance(v, bytes) else v.encode()


class _MemStream:
    def __init__(self) -> None:
        self.entries: OrderedDict[str, dict[str, bytes]] = OrderedDict()
        self.last_ms = 0
        self.seq = 0
        self.groups: dict[str, tuple[list[str], dict[str, str]]] = {}  # group -> (cursor, pending id->consumer)


class MemoryBus:
    """An in-process bus with Redis stream semantics (ids, groups, pending, ack, approximate trim).

    Used by the embedded mode and by tests that need no server. Thread-safe.
    """

    def __init__(self) -> None:
        self._streams: dict[str, _MemStream] = {}
        self._cond = threading.Condition()

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
                s.entries[eid] = {k: _b(v) for k, v in fields.items()}
                ids.append(eid)
            self._cond.notify_all()
        return ids

    def trim(self, stream: str, maxlen: int) -> int:
        with self._cond:
            s = self._stream(stream)
            n = 0
            while len(s.entries) > maxlen:
                s.entries.popitem(last=False)
                n += 1
            return n

    def ensure_group(self, stream: str, group: str) -> None:
        with self._cond:
            self._stream(stream).groups.setdefault(group, (["0-0"], {}))

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        deadline = time.monotonic() + block_ms / 1000
        with self._cond:
            while True:
                s = self._stream(stream)
                cursor, pending = s.groups[group]
                out = [(eid, f) for eid, f in s.entries.items() if _after(eid, cursor[0])][:count]
                if out or block_ms <= 0 or time.monotonic() >= deadline:
                    break
                self._cond.wait(max(0.0, deadline - time.monotonic()))
            for eid, _ in out:
                pending[eid] = consumer
            if out:
                cursor[0] = out[-1][0]
            return out

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        with self._cond:
            pending = self._stream(stream).groups[group][1]
            return sum(pending.pop(i, None) is not None for i in ids)

    def length(self, stream: str) -> int:
        with self._cond:
            return len(self._stream(stream).entries)


def _after(a: str, b: str) -> bool:
    ams, aseq = a.split("-")
    bms, bseq = b.split("-")
    return (int(ams), int(aseq)) > (int(bms), int(bseq))


class RedisBus:
    """The bus on a Redis server (streams and consumer groups, Redis >= 6.2).

    Parameters
    ----------
    url
        ``redis://[:password@]host:port/db``; tapwatch ships no default password.
    timeout_s
        Socket timeouts, short so that a capture loop never stalls long on a dead server.
    """

    def __init__(self, url: str, timeout_s: float = 2.0) -> None:
        self.url = url
        self.client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=min(timeout_s, 1.0), retry_on_timeout=False
        )

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise BusUnavailable(f"redis {self._where()}: {err}") from err

    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def add_many(self, stream: str, entries: Sequence[Fields]) -> list[str]:
        def run() -> list[str]:
            pipe = self.client.pipeline(transaction=False)
            for fields in entries:
                pipe.xadd(stream, dict[Any, Any](fields))
            return [i.decode() if isinstance(i, bytes) else str(i) for i in pipe.execute()]

        return list(self._call(run))

    def trim(self, stream: str, maxlen: int) -> int:
        return int(self._call(self.client.xtrim, stream, maxlen=maxlen, approximate=True))

    def ensure_group(self, stream: str, group: str) -> None:
        try:
            self._call(self.client.xgroup_create, stream, group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        resp = self._call(self.client.xreadgroup, group, consumer, {stream: ">"}, count=count, block=block_ms)
        out: list[Entry] = []
        for _, items in resp or []:
            for eid, fields in items:
                key = eid.decode() if isinstance(eid, bytes) else str(eid)
                out.append((key, {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}))
        return out

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return int(self._call(self.client.xack, stream, group, *ids)) if ids else 0

    def length(self, stream: str) -> int:
        return int(self._call(self.client.xlen, stream))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False

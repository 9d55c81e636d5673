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
from typing import Any, Protocol

import hiredis
import redis

from tapwatch.features.errors import TapwatchError
from tapwatch.features.schema import Encoded

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


_SET_ONCE_AND_ADD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
    return 1
end
return 0
"""
"""RedisBus.set_once_and_add: the dedup key and the alert entry in one atomic step (KEYS: key, stream; ARGV:
ttl, maxlen, field, value, ...)."""


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


def _entry(eid: Any, fields: Mapping[Any, Any]) -> Entry:
    """An entry as read: its id and its field names as text. A field name that is not UTF-8 (anything may XADD
    anything) keeps its odd bytes as ``\\xNN`` escapes rather than stop the reader: it names no known field, so
    readers ignore it, and a dead letter can still copy it."""
    key = eid.decode() if isinstance(eid, bytes) else str(eid)
    return key, {(k.decode(errors="backslashreplace") if isinstance(k, bytes) else k): v for k, v in fields.items()}


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
        self._set_and_add: Any = None

    def _call(self, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise BusUnavailable(f"redis {self._where()}: {err}") from err

    def _where(self) -> str:
        kw = self.client.connection_pool.connection_kwargs
        return f"{kw.get('host', '?')}:{kw.get('port', '?')}"

    def _pipeline(self, commands: Sequence[tuple[str | bytes, ...]]) -> list[Any]:
        """Send ``commands`` in one write and read every reply: a pipeline (not a transaction) packed by hiredis
        in one call per command, without redis-py's per-argument encoding (a tenth of a worker's time).
        Replies are raw (bytes, ints); an error reply raises ``redis.ResponseError`` after the connection
        is dropped, since the replies after it are not read."""
        pool = self.client.connection_pool
        conn = pool.get_connection()
        try:
            packed = b"".join([hiredis.pack_command(c) for c in commands])  # type: ignore[arg-type]
            conn.send_packed_command([packed], check_health=False)  # type: ignore[no-untyped-call]
            return [conn.read_response() for _ in commands]
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            pool.release(conn)

    def add_many(self, stream: str, entries: Sequence[Fields]) -> list[str]:
        if not entries:
            return []
        commands = [("XADD", stream, "*", *[x for kv in fields.items() for x in kv]) for fields in entries]
        return [i.decode() if isinstance(i, bytes) else str(i) for i in self._call(self._pipeline, commands)]

    def trim(self, stream: str, maxlen: int) -> int:
        return int(self._call(self.client.xtrim, stream, maxlen=maxlen, approximate=True))

    def ensure_group(self, stream: str, group: str) -> bool:
        try:
            self._call(self.client.xgroup_create, stream, group, id="0", mkstream=True)
        except redis.ResponseError as err:
            if "BUSYGROUP" not in str(err):
                raise
            return False
        return True

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        try:
            block = block_ms if block_ms > 0 else None  # Redis reads BLOCK 0 as "forever"; MemoryBus as "don't"
            resp = self._call(self.client.xreadgroup, group, consumer, {stream: ">"}, count=count, block=block)
        except redis.ResponseError as err:
            # NOGROUP; or, for a read blocked while its stream key went away (FLUSHALL, DEL), Redis >= 7.0 ends the
            # read with "UNBLOCKED the stream key no longer exists": the group is gone either way.
            if "NOGROUP" in str(err) or str(err).startswith("UNBLOCKED"):
                raise GroupMissing(f"redis {self._where()}: {err}") from err
            raise
        return [_entry(eid, fields) for _, items in resp or [] for eid, fields in items]

    def claim_stale(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        try:
            resp = self._call(self.client.xautoclaim, stream, group, consumer, min_idle_ms, "0-0", count=count)
        except redis.ResponseError as err:
            if "NOGROUP" in str(err):
                raise GroupMissing(f"redis {self._where()}: {err}") from err
            raise
        # Redis 7 returns [cursor, entries, deleted ids], 6.2 [cursor, entries]; entries trimmed away are None.
        items = resp[1] if resp else []
        return [_entry(eid, fields) for eid, fields in items if fields is not None]

    def set_once(self, key: str, ttl_s: int) -> bool:
        return bool(self._call(self.client.set, key, b"1", nx=True, ex=ttl_s))

    def set_once_and_add(self, key: str, ttl_s: int, stream: str, fields: Fields, maxlen: int) -> bool:
        if self._set_and_add is None:
            self._set_and_add = self.client.register_script(_SET_ONCE_AND_ADD)
        args = [ttl_s, maxlen, *[x for kv in fields.items() for x in kv]]
        return bool(self._call(self._set_and_add, keys=[key, stream], args=args))

    def write_and_ack(self, writes: Sequence[tuple[str, Sequence[Fields]]], stream: str, group: str,
                      ids: Sequence[str]) -> None:  # fmt: skip
        commands: list[tuple[str | bytes, ...]] = [
            ("XADD", target, "*", *[x for kv in fields.items() for x in kv]) for target, entries in writes
            for fields in entries
        ]  # fmt: skip
        if ids:
            commands.append(("XACK", stream, group, *ids))
        if commands:
            self._call(self._pipeline, commands)

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        return int(self._call(self.client.xack, stream, group, *ids)) if ids else 0

    def length(self, stream: str) -> int:
        return int(self._call(self.client.xlen, stream))

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError):
            return False

"""The bus on a Redis server: :class:`RedisBus` (streams and consumer groups, Redis >= 6.2).

Imported only by the processes that use Redis (``tapwatch.bus.streams.RedisBus`` imports it when first asked for).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import redis

from tapwatch.bus.streams import BusUnavailable, Entry, Fields, GroupMissing

_SET_ONCE_AND_ADD = """
if redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
    return 1
end
return 0
"""
"""RedisBus.set_once_and_add: the dedup key and the alert entry in one atomic step (KEYS: key, stream; ARGV:
ttl, maxlen, field, value, ...)."""


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

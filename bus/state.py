"""Shared state by key: in the process (``detect``/``run``) or in Redis (services), changed atomically.

The alerter's episodes live here (:mod:`tapwatch.alerting.episodes`). A state changes only through
:meth:`StateStore.apply`: read the state of one key, compute the new state and what to do about it, write it
back, all as one atomic step; :meth:`StateStore.apply_many` does a batch of such changes, over many keys, in one.
In memory that is a lock; in Redis an optimistic transaction (WATCH the keys, MGET, MULTI, SET, EXEC; retried when
another process changed a key in between), so two alerters on one verdict stream open one episode per key and emit
each line once, and a restarted alerter finds the episodes that were open. A state is a JSON object; Redis keeps it
under ``<prefix>:<key>`` with an expiry renewed at each change (an abandoned key cleans itself up) and the live keys
in the set ``<prefix>s``.

The outbox: what a change says must be done once it is stored (the alerter's lines) goes into the hash
``<prefix>-outbox`` in the same atomic step (``apply(..., outbox=...)``), and leaves it when it is done
(:meth:`StateStore.settle`). A process killed in between leaves it there, for another (or itself, restarted) to
find (:meth:`StateStore.unsettled`) and do: a change is never stored without what it has to say.

>>> store = MemoryStateStore()
>>> store.apply("scan|source|10.0.0.1", lambda s: ({"n": (s or {}).get("n", 0) + 1}, "done"))
'done'
>>> store.get("scan|source|10.0.0.1"), store.keys()
({'n': 1}, ['scan|source|10.0.0.1'])
>>> store.apply("scan|source|10.0.0.1", lambda s: (None, None)); store.keys()
[]
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import redis

from tapwatch.bus.streams import BusUnavailable

T = TypeVar("T")
State = dict[str, Any]
Update = Callable[[State | None], tuple[State | None, T]]
Outbox = Callable[[T], dict[str, str]]
"""What a change's result leaves to be done, by id (JSON text), stored with the change."""

EPISODE_PREFIX = "tapwatch:episode"
MAX_RETRIES = 50
"""Transactions retried after a concurrent change; two alerters on one key converge in a few."""
MGET_KEYS = 2_000
"""States read per MGET by :meth:`RedisStateStore.get_many`."""
BATCH_RETRIES = 3
"""Transactions of a whole batch retried before :meth:`RedisStateStore.apply_many` falls back to one per key: a
batch watches many keys, and under steady contention a smaller transaction gets through where a large one would
keep losing."""


class StateStore(Protocol):
    """Atomic read-modify-write of JSON states by key."""

    def apply(self, key: str, fn: Update[T], outbox: Outbox[T] | None = None) -> T:
        """Give ``fn`` the state of ``key`` (None: none); store what it returns first (None: delete) and return
        the second, atomically, with what ``outbox`` makes of the second in the outbox. ``fn`` may run more than
        once (Redis retries): it must have no side effects."""
        ...

    def apply_many(self, changes: Sequence[tuple[str, Update[T]]], outbox: Outbox[T] | None = None) -> list[T]:
        """:meth:`apply` for each ``(key, fn)`` in order, all in one atomic step (a key named twice gets its second
        ``fn`` on what its first returned): a batch of evidence costs the store one transaction, not one each."""
        ...

    def get(self, key: str) -> State | None: ...

    def get_many(self, keys: Sequence[str]) -> list[State | None]:
        """The states of ``keys`` (None: none), read together."""
        ...

    def keys(self) -> list[str]:
        """Every key that holds a state."""
        ...

    def settle(self, ids: list[str]) -> None:
        """Take ``ids`` out of the outbox: done."""
        ...

    def unsettled(self) -> dict[str, str]:
        """Everything in the outbox, by id: being done now, or left by a process that died."""
        ...


class MemoryStateStore:
    """States in this process (the embedded ``detect``/``run``), behind one lock."""

    def __init__(self) -> None:
        self._states: dict[str, State] = {}
        self._outbox: dict[str, str] = {}
        self._lock = threading.Lock()

    def apply(self, key: str, fn: Update[T], outbox: Outbox[T] | None = None) -> T:
        return self.apply_many([(key, fn)], outbox)[0]

    def apply_many(self, changes: Sequence[tuple[str, Update[T]]], outbox: Outbox[T] | None = None) -> list[T]:
        outs: list[T] = []
        with self._lock:
            for key, fn in changes:
                new, out = fn(self._states.get(key))
                if new is None:
                    self._states.pop(key, None)
                else:
                    self._states[key] = new
                if outbox is not None:
                    self._outbox.update(outbox(out))
                outs.append(out)
        return outs

    def settle(self, ids: list[str]) -> None:
        with self._lock:
            for i in ids:
                self._outbox.pop(i, None)

    def unsettled(self) -> dict[str, str]:
        with self._lock:
            return dict(self._outbox)

    def get(self, key: str) -> State | None:
        with self._lock:
            return self._states.get(key)

    def get_many(self, keys: Sequence[str]) -> list[State | None]:
        with self._lock:
            return [self._states.get(k) for k in keys]

    def keys(self) -> list[str]:
        with self._lock:
            return list(self._states)


class RedisStateStore:
    """States in Redis, shared by every process of a deployment.

    Parameters
    ----------
    client
        A redis-py client (the bus has one: ``RedisBus.client``).
    prefix
        Key prefix: state ``<prefix>:<key>``, the set of live keys ``<prefix>s``.
    ttl_s
        Expiry of each state, renewed at every change: longer than any quiet period, so only abandoned
        states (every alerter gone) expire.
    """

    def __init__(self, client: redis.Redis, prefix: str = EPISODE_PREFIX, ttl_s: int = 86_400) -> None:
        self.client = client
        self.prefix = prefix
        self.members = prefix + "s"
        self.outbox = prefix + "-outbox"
        self.ttl_s = ttl_s

    def apply(self, key: str, fn: Update[T], outbox: Outbox[T] | None = None) -> T:
        return self._settled([(key, fn)], outbox)[0]

    def apply_many(self, changes: Sequence[tuple[str, Update[T]]], outbox: Outbox[T] | None = None) -> list[T]:
        """One transaction for the whole batch: WATCH its keys, read them with one MGET, run every ``fn``, and write
        every state and the outbox in one MULTI/EXEC, three round trips whatever the batch's size. A batch that
        keeps meeting another alerter's changes is applied one key at a time instead."""
        if len(changes) <= 1:
            return [self.apply(key, fn, outbox) for key, fn in changes]
        done = self._transaction(changes, outbox, BATCH_RETRIES)
        if done is not None:
            return done
        by_key: dict[str, list[int]] = {}
        for i, (key, _) in enumerate(changes):
            by_key.setdefault(key, []).append(i)
        outs: dict[int, T] = {}
        for idx in by_key.values():
            outs.update(zip(idx, self._settled([changes[i] for i in idx], outbox), strict=True))
        return [outs[i] for i in range(len(changes))]

    def _settled(self, changes: Sequence[tuple[str, Update[T]]], outbox: Outbox[T] | None) -> list[T]:
        """The transaction of one key's changes, retried up to ``MAX_RETRIES`` times."""
        done = self._transaction(changes, outbox, MAX_RETRIES)
        if done is None:
            raise BusUnavailable(f"redis: {self.prefix} {changes[0][0]}: still contended after {MAX_RETRIES} attempts")
        return done

    def _transaction(self, changes: Sequence[tuple[str, Update[T]]], outbox: Outbox[T] | None,
                     retries: int) -> list[T] | None:  # fmt: skip
        """Run ``changes`` as one optimistic transaction, up to ``retries`` times; None: every attempt lost."""
        keys = list(dict.fromkeys(key for key, _ in changes))
        names = [f"{self.prefix}:{key}" for key in keys]
        what = keys[0] if len(keys) == 1 else f"{len(keys)} keys"
        try:
            for _ in range(retries):
                with self.client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(*names)  # type: ignore[no-untyped-call]
                        raws = pipe.mget(names) if len(names) > 1 else [pipe.get(names[0])]
                        states: dict[str, State | None] = {
                            k: json.loads(raw) if raw is not None else None for k, raw in zip(keys, raws, strict=True)
                        }
                        outs: list[T] = []
                        todo: dict[str, str] = {}
                        for key, fn in changes:
                            states[key], out = fn(states[key])
                            outs.append(out)
                            if outbox is not None:
                                todo.update(outbox(out))
                        pipe.multi()
                        gone = [k for k in keys if states[k] is None]
                        for key, name in zip(keys, names, strict=True):
                            if (new := states[key]) is not None:
                                pipe.set(name, json.dumps(new, separators=(",", ":")), ex=self.ttl_s)
                        if gone:
                            pipe.delete(*(f"{self.prefix}:{k}" for k in gone))
                            pipe.srem(self.members, *gone)
                        if len(gone) < len(keys):
                            pipe.sadd(self.members, *(k for k in keys if states[k] is not None))
                        if todo:
                            pipe.hset(self.outbox, mapping=todo)  # type: ignore[arg-type]
                        pipe.execute()
                        return outs
                    except redis.WatchError:
                        continue  # another alerter changed one of these episodes between our read and our write
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as err:
            raise BusUnavailable(f"redis: {self.prefix} {what}: {err}") from err
        return None

    def get(self, key: str) -> State | None:
        try:
            raw = self.client.get(f"{self.prefix}:{key}")
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BusUnavailable(f"redis: {self.prefix} {key}: {err}") from err
        return json.loads(raw) if raw is not None else None

    def get_many(self, keys: Sequence[str]) -> list[State | None]:
        raws: list[Any] = []
        try:
            for i in range(0, len(keys), MGET_KEYS):  # one MGET per few thousand: no one reply of every episode
                raws += self.client.mget([f"{self.prefix}:{k}" for k in keys[i : i + MGET_KEYS]])
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BusUnavailable(f"redis: {self.prefix} {len(keys)} keys: {err}") from err
        return [json.loads(raw) if raw is not None else None for raw in raws]

    def keys(self) -> list[str]:
        try:
            members = self.client.smembers(self.members)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BusUnavailable(f"redis: {self.members}: {err}") from err
        return sorted(m.decode() if isinstance(m, bytes) else str(m) for m in members)

    def settle(self, ids: list[str]) -> None:
        if not ids:
            return
        try:
            self.client.hdel(self.outbox, *ids)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BusUnavailable(f"redis: {self.outbox}: {err}") from err

    def unsettled(self) -> dict[str, str]:
        try:
            found = self.client.hgetall(self.outbox)
        except (redis.ConnectionError, redis.TimeoutError) as err:
            raise BusUnavailable(f"redis: {self.outbox}: {err}") from err
        return {(k.decode() if isinstance(k, bytes) else str(k)): (v.decode() if isinstance(v, bytes) else str(v))
                for k, v in found.items()}  # fmt: skip

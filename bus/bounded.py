"""The in-memory bus of the embedded ``detect``/``run`` modes: bounded by back-pressure, never by dropping.

Between processes the windows and verdicts streams are bounded by ``XTRIM MAXLEN ~``, and whatever the trim
removes is counted as dropped. In one process there is no reason to drop anything: a producer that outruns
its consumer can simply wait. :class:`BoundedMemoryBus` wraps a :class:`~tapwatch.bus.streams.MemoryBus`
and, for each bounded stream, makes :meth:`~BoundedMemoryBus.add_many` wait while the entries not yet
acknowledged reach the bound, and trims acknowledged entries as soon as they are acked (so memory stays
bounded as well). With a pcap the file is then read as fast as the model keeps up; on a live interface the
sensor falls behind, its bounded queue fills and the kernel drops packets, which the sensor counts
(``tapwatch_capture_kernel_drops_total``): the loss stays where it is visible.

Trimming acked entries relies on each bounded stream having exactly one consumer group whose consumers ack
the entries in the order they read them, so that the acknowledged entries are always the oldest ones. The
embedded pipeline has one worker and one alerter, each acking its whole batch at once.

>>> bus = BoundedMemoryBus({"s": 2})
>>> bus.ensure_group("s", "g")
True
>>> ids = bus.add_many("s", [{"a": "1"}, {"a": "2"}])
>>> bus.backlog("s"), [e for e, _ in bus.read_group("s", "g", "c", 10, 0)] == ids
(2, True)
>>> bus.ack("s", "g", ids), bus.backlog("s"), bus.length("s")
(2, 0, 0)
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from tapwatch.bus.streams import Entry, Fields, MemoryBus, write_then_ack
from tapwatch.features.errors import TapwatchError

# How often a waiting producer looks whether a stage failed (the failure also wakes it at once).
_POLL_S = 0.5


class StageFailed(TapwatchError):
    """A stage of the embedded pipeline stopped with an error; the stages waiting on it stop too.

    Parameters
    ----------
    stage
        The stage's thread name (``worker`` or ``alerter``).
    cause
        What it raised.
    """

    def __init__(self, stage: str, cause: BaseException) -> None:
        self.stage = stage
        self.cause = cause
        super().__init__(f"embedded {stage} stopped: {type(cause).__name__}: {cause}")


class BoundedMemoryBus:
    """A :class:`~tapwatch.bus.streams.MemoryBus` with back-pressure on the streams in ``bounds``.

    Parameters
    ----------
    bounds
        Stream name → most entries added and not yet acknowledged; a writer waits at the bound.
    inner
        The memory bus underneath (a new one by default).
    """

    def __init__(self, bounds: Mapping[str, int], inner: MemoryBus | None = None) -> None:
        if any(n < 1 for n in bounds.values()):
            raise ValueError(f"stream bounds must be >= 1: {dict(bounds)}")
        self.inner = inner or MemoryBus()
        self.bounds = dict(bounds)
        self._added = dict.fromkeys(bounds, 0)
        self._acked = dict.fromkeys(bounds, 0)
        self._waits = dict.fromkeys(bounds, 0)
        self._cond = threading.Condition()
        self._failed: StageFailed | None = None

    def backlog(self, stream: str) -> int:
        """Entries of a bounded stream added and not yet acknowledged."""
        with self._cond:
            return self._added[stream] - self._acked[stream]

    def waits(self, stream: str) -> int:
        """How many writes to a bounded stream had to wait for its consumer."""
        with self._cond:
            return self._waits[stream]

    def fail(self, failure: StageFailed) -> None:
        """Record a stage's failure and wake every waiting writer, which then raises it."""
        with self._cond:
            self._failed = self._failed or failure
            self._cond.notify_all()

    def _check(self) -> None:
        if self._failed is not None:
            raise self._failed

    def wait_drained(self, stream: str) -> None:
        """Wait until every entry of a bounded stream is acknowledged (raises :class:`StageFailed`)."""
        with self._cond:
            while self._added[stream] > self._acked[stream]:
                self._check()
                self._cond.wait(_POLL_S)
            self._check()

    # -- the Bus protocol --------------------------------------------------------------------------------------

    def add_many(self, stream: str, entries: Sequence[Fields]) -> list[str]:
        bound = self.bounds.get(stream)
        if bound is None:
            return self.inner.add_many(stream, entries)
        with self._cond:
            if self._added[stream] - self._acked[stream] >= bound:
                self._waits[stream] += 1
            while self._added[stream] - self._acked[stream] >= bound:
                self._check()
                self._cond.wait(_POLL_S)
            self._check()
            ids = self.inner.add_many(stream, entries)
            self._added[stream] += len(ids)
            return ids

    def ack(self, stream: str, group: str, ids: Sequence[str]) -> int:
        if stream not in self.bounds:
            return self.inner.ack(stream, group, ids)
        with self._cond:
            n = self.inner.ack(stream, group, ids)
            self._acked[stream] += n
            # The acked entries are the oldest ones (see the module docstring): keep only the rest.
            self.inner.trim(stream, self._added[stream] - self._acked[stream])
            self._cond.notify_all()
            return n

    def trim(self, stream: str, maxlen: int) -> int:
        with self._cond:
            return self.inner.trim(stream, maxlen)

    def ensure_group(self, stream: str, group: str) -> bool:
        return self.inner.ensure_group(stream, group)

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        return self.inner.read_group(stream, group, consumer, count, block_ms)

    def wake(self) -> None:
        """:meth:`MemoryBus.wake`: blocked readers return now."""
        self.inner.wake()

    def claim_stale(self, stream: str, group: str, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        return self.inner.claim_stale(stream, group, consumer, min_idle_ms, count)

    def length(self, stream: str) -> int:
        return self.inner.length(stream)

    def set_once(self, key: str, ttl_s: int) -> bool:
        return self.inner.set_once(key, ttl_s)

    def set_once_and_add(self, key: str, ttl_s: int, stream: str, fields: Fields, maxlen: int) -> bool:
        if stream not in self.bounds:
            return self.inner.set_once_and_add(key, ttl_s, stream, fields, maxlen)
        if not self.inner.set_once(key, ttl_s):
            return False
        self.add_many(stream, [fields])  # waits at the bound like any write
        return True

    def write_and_ack(self, writes: Sequence[tuple[str, Sequence[Fields]]], stream: str, group: str,
                      ids: Sequence[str]) -> None:  # fmt: skip
        """Through this bus's own :meth:`add_many` and :meth:`ack`, so that the bounds hold."""
        write_then_ack(self, writes, stream, group, ids)

"""The one consumer loop: read a batch, hand it to the stage, which acks it; claims, backoff, a lost group, drain.

Every stage that reads a stream in a consumer group runs :class:`Consumer` with its own :class:`BatchHandler`
(the inference :class:`~tapwatch.inference.worker.Worker`, the :class:`~tapwatch.alerting.alerter.Alerter`), on
any :class:`~tapwatch.bus.streams.Bus`. The handler does the stage's work and acks; the loop decides what to read
and when, and reports what happened on the bus through :class:`ConsumerEvents`, so each stage keeps its own
metric names and log lines.

One step (:meth:`Consumer.step`): the group is created if it does not exist (once); the handler's housekeeping
(:meth:`BatchHandler.tend`); then one batch: the batch in hand if the bus failed under the last one, else entries
pending longer than ``claim_idle_ms`` in any consumer (XAUTOCLAIM, looked for every ``claim_interval_s``), else
new ones (XREADGROUP, blocking at most ``block_ms``, less if the handler asks); the handler handles it.

Failures, after rq's worker (``work()``, ``handle_job_failure``): a bad entry is the handler's to log with its id,
dead-letter and ack; an unreachable bus (:class:`~tapwatch.bus.streams.BusUnavailable`) means capped exponential
backoff, the batch in hand handed again, unchanged, once the bus is back; a missing group
(:class:`~tapwatch.bus.streams.GroupMissing`: NOGROUP, or Redis 7's ``UNBLOCKED`` for a read blocked on a key that
FLUSHALL or DEL removed) is recreated and reported; anything else propagates, so the process exits non-zero and
its supervisor restarts it (its pending entries are claimed by another consumer).

Stop, after rq's ``request_stop``: :meth:`Consumer.run` steps until its stop event is set (a service's first
SIGTERM sets it; the second exits at once), then drains (:meth:`Consumer.drain`): the batch in hand is handed
again and the handler finishes the work it set aside, retried with backoff for up to ``drain_timeout_s``.

>>> from tapwatch.bus.streams import MemoryBus
>>> class Printer:
...     def __init__(self, bus): self.bus = bus
...     def tend(self): return None
...     def handle(self, entries):
...         print([f["n"] for _, f in entries])
...         self.bus.ack("s", "g", [eid for eid, _ in entries])
...     def finish(self): return 0
>>> bus = MemoryBus()
>>> loop = Consumer(bus, ConsumerConfig("s", "g", "c1", batch_size=2, block_ms=1), Printer(bus))
>>> ids = bus.add_many("s", [{"n": "1"}, {"n": "2"}, {"n": "3"}])
>>> loop.run_once(), loop.run_once(), loop.run_once()
[b'1', b'2']
[b'3']
(2, 1, 0)
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from tapwatch.bus.streams import Bus, BusUnavailable, Entry, GroupMissing
from tapwatch.features.errors import ConfigError


@dataclass(frozen=True)
class ConsumerConfig:
    """How a :class:`Consumer` reads, claims, backs off and drains.

    Parameters
    ----------
    stream, group, consumer
        The stream, the consumer group and this consumer's name (one per process: consumers that share a name
        share their pending entries).
    batch_size
        Entries per read and per claim. It bounds the work in hand: the loop holds one batch at a time.
    block_ms
        Longest wait for new entries in one read; also how often an idle consumer does its housekeeping and how
        soon it notices a stop request. Must be >= 1: Redis reads ``BLOCK 0`` as "forever".
    claim_idle_ms, claim_interval_s
        Entries pending in any consumer longer than ``claim_idle_ms`` are taken over (XAUTOCLAIM), looked for
        every ``claim_interval_s``, and again at the next step after a full batch of them. The idle time must
        exceed the longest batch, or live consumers steal each other's batches (harmless, at least once, but
        wasted work).
    backoff_initial_s, backoff_max_s
        Wait after the bus becomes unreachable, doubled per failure up to the cap.
    drain_timeout_s
        After a stop request, how long to keep retrying the work in hand while the bus is unreachable (0: one
        attempt); after that its entries stay pending and another consumer claims them.
    """

    stream: str
    group: str
    consumer: str
    batch_size: int = 64
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    claim_interval_s: float = 5.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    drain_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        checks = [
            ("block_ms", self.block_ms >= 1, f"must be >= 1 (Redis reads BLOCK 0 as forever), not {self.block_ms}"),
            ("batch_size", self.batch_size >= 1, f"must be >= 1, not {self.batch_size}"),
            ("claim_idle_ms", self.claim_idle_ms >= 0, f"must be >= 0, not {self.claim_idle_ms}"),
            ("claim_interval_s", self.claim_interval_s > 0, f"must be > 0, not {self.claim_interval_s}"),
            ("backoff_initial_s", 0 < self.backoff_initial_s <= self.backoff_max_s, "must be > 0 and <= backoff_max_s"),
            ("drain_timeout_s", self.drain_timeout_s >= 0, f"must be >= 0, not {self.drain_timeout_s}"),
        ]
        for key, ok, problem in checks:
            if not ok:
                raise ConfigError(key, problem)


class BatchHandler(Protocol):
    """A stage's part of the loop: its housekeeping between reads, its batches, its work at stop."""

    def tend(self) -> int | None:
        """Housekeeping before each read (reloads, gauges, work set aside that is now due). Returns the longest the
        next read may block in ms (at most ``block_ms`` is used), or None for ``block_ms``."""
        ...

    def handle(self, entries: list[Entry]) -> None:
        """Handle a batch and ack its entries, except those it sets aside (acked later, by :meth:`tend` or
        :meth:`finish`). Raising :class:`~tapwatch.bus.streams.BusUnavailable` keeps the batch in hand: the next
        call is with the same batch, and the handler may resume where it stopped or start over (at least once)."""
        ...

    def finish(self) -> int:
        """At stop: finish the work set aside (waiting for it no longer than its own deadlines) and ack it; return
        the number of entries acked (0 when nothing was set aside)."""
        ...


class ConsumerEvents(Protocol):
    """What the loop reports to the stage, for its metrics and log lines."""

    def on_claim(self, entries: list[Entry]) -> None:
        """``entries`` pending longer than ``claim_idle_ms`` in other consumers were taken over."""
        ...

    def on_group(self, missing: str | None) -> None:
        """The group was created: at start (``missing`` None), or again after it went missing (``missing``: why)."""
        ...

    def on_bus(self, down: BusUnavailable | None) -> None:
        """The bus became unreachable (``down``: the error) or reachable again (None); once per change."""
        ...

    def on_abandon(self, entries: int) -> None:
        """At stop, the bus stayed unreachable past ``drain_timeout_s``: the ``entries`` of the batch in hand (and
        any work the handler set aside) stay pending, for another consumer to claim."""
        ...


class _Quiet:
    """No events wanted."""

    def on_claim(self, entries: list[Entry]) -> None:
        return None

    def on_group(self, missing: str | None) -> None:
        return None

    def on_bus(self, down: BusUnavailable | None) -> None:
        return None

    def on_abandon(self, entries: int) -> None:
        return None


class Consumer:
    """The consumer loop (see the module docstring): the same for every stage, on Redis and the in-memory bus.

    Parameters
    ----------
    bus
        A :class:`~tapwatch.bus.streams.Bus`.
    config
        Stream, group, consumer, read sizes, claiming, backoff and drain (:class:`ConsumerConfig`).
    handler
        The stage's work (:class:`BatchHandler`).
    events
        Told of claims, (re)created groups, bus state changes and entries left at stop (:class:`ConsumerEvents`);
        None: nobody is told.
    """

    def __init__(self, bus: Bus, config: ConsumerConfig, handler: BatchHandler,
                 events: ConsumerEvents | None = None) -> None:  # fmt: skip
        self.bus = bus
        self.config = config
        self.handler = handler
        self.events: ConsumerEvents = events if events is not None else _Quiet()
        self._batch: list[Entry] = []
        self._group_ready = False
        self._connected = True
        self._backoff = config.backoff_initial_s
        self._delay = 0.0
        self._next_claim = 0.0

    @property
    def connected(self) -> bool:
        """False while the bus is unreachable (as of the last step)."""
        return self._connected

    @property
    def delay(self) -> float:
        """Seconds to wait before the next step (the backoff while the bus is down, else 0)."""
        return self._delay

    @property
    def in_hand(self) -> int:
        """Entries of the batch in hand: taken, not yet handled because the bus failed under them."""
        return len(self._batch)

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set, waiting out the backoff while the bus is down, then :meth:`drain`."""
        while not stop.is_set():
            self.run_once()
            if self._delay:
                stop.wait(self._delay)  # no busy loop while the bus is down; a stop request ends the wait
        self.drain(self.config.drain_timeout_s)

    def run_once(self) -> int:
        """:meth:`step`, with the bus's state kept: unreachable, it returns 0 and sets :attr:`delay`."""
        try:
            taken = self.step()
        except BusUnavailable as err:
            self._down(err)
            return 0
        self._up()
        return taken

    def step(self) -> int:
        """Housekeeping and one batch; return the number of entries handled. Raises BusUnavailable, keeping the
        batch in hand for the next step."""
        if not self._group_ready:
            self._create_group()
        block_ms = self.handler.tend()
        entries = self._batch or self._take(block_ms)
        if entries:
            self._batch = entries
            self.handler.handle(entries)
            self._batch = []
        return len(entries)

    def drain(self, timeout_s: float) -> bool:
        """Hand the batch in hand again and let the handler finish its work, retrying with backoff for up to
        ``timeout_s`` while the bus is unreachable; True when done, False when it was left pending."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                done = self._finish()
            except BusUnavailable as err:
                self._down(err)
                if time.monotonic() + self._delay > deadline:
                    self.events.on_abandon(len(self._batch))
                    return False
                time.sleep(self._delay)
                continue
            if done:
                self._up()
            return True

    def _finish(self) -> int:
        done = len(self._batch)
        if self._batch:
            self.handler.handle(self._batch)
            self._batch = []
        return done + self.handler.finish()

    def _create_group(self) -> None:
        if self.bus.ensure_group(self.config.stream, self.config.group):
            self.events.on_group(None)
        self._group_ready = True

    def _take(self, block_ms: int | None) -> list[Entry]:
        c = self.config
        try:
            claimed = self._claim()
            if claimed:
                return claimed
            block = c.block_ms if block_ms is None else min(block_ms, c.block_ms)
            return self.bus.read_group(c.stream, c.group, c.consumer, c.batch_size, block)
        except GroupMissing as err:
            # RedisBus raises it for NOGROUP and for Redis 7's UNBLOCKED (the stream key went away under a blocked
            # read): either way the group is recreated, and reads from the stream's start.
            self.bus.ensure_group(c.stream, c.group)
            self.events.on_group(str(err))
            return []

    def _claim(self) -> list[Entry]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        c = self.config
        claimed = self.bus.claim_stale(c.stream, c.group, c.consumer, c.claim_idle_ms, c.batch_size)
        # A full batch means more may be waiting: look again at the next step rather than after the interval.
        self._next_claim = now if len(claimed) >= c.batch_size else now + c.claim_interval_s
        if claimed:
            self.events.on_claim(claimed)
        return claimed

    def _down(self, err: BusUnavailable) -> None:
        if self._connected:
            self._connected = False
            self._backoff = self.config.backoff_initial_s
            self.events.on_bus(err)
        else:
            self._backoff = min(self._backoff * 2, self.config.backoff_max_s)
        self._delay = self._backoff

    def _up(self) -> None:
        if not self._connected:
            self._connected = True
            self.events.on_bus(None)
        self._delay = 0.0

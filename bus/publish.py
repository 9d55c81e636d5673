"""Put window entries on the bus without ever stalling the capture for long.

The publisher batches entries into one pipelined XADD, trims the stream with ``XTRIM MAXLEN ~`` (the
number trimmed is counted as dropped), and survives an unreachable Redis: entries wait in a bounded
buffer while it reconnects with capped exponential backoff; when the buffer is full the oldest entry is
dropped and counted. Every state change (up → down → up) is logged once. ``sent + dropped == produced``
holds at every moment after :meth:`Publisher.close`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from tapwatch.bus.streams import Bus, BusUnavailable, Fields

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PublisherConfig:
    """Bounds of the publisher.

    Parameters
    ----------
    stream
        The stream to write (``tapwatch:windows``).
    maxlen
        Approximate stream length bound; entries trimmed beyond it are counted as dropped.
    batch
        Entries per pipelined XADD.
    buffer_limit
        Entries held while Redis is unreachable (about 3.5 kB each for T = 10: 100,000 is ~350 MB
        at worst; the default 20,000 keeps it near 70 MB).
    backoff_initial_s, backoff_max_s
        Reconnection backoff, doubled per failure and capped.
    """

    stream: str
    maxlen: int = 100_000
    batch: int = 64
    buffer_limit: int = 20_000
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0


@dataclass
class PublisherCounts:
    produced: int = 0
    sent: int = 0
    dropped_buffer_full: int = 0
    dropped_unreachable: int = 0
    trimmed: int = 0


Hook = Callable[[str, int], None]


class Publisher:
    """Batch, trim, buffer and retry; see the module docstring.

    Parameters
    ----------
    bus
        Where entries go.
    config
        Bounds.
    on_event
        Called as ``on_event(kind, n)`` with kind in ``sent``, ``buffer_full``, ``unreachable``,
        ``trimmed``, ``buffered`` (current size), ``connected`` (1/0); the sensor maps it to metrics.
    """

    def __init__(self, bus: Bus, config: PublisherConfig, on_event: Hook | None = None) -> None:
        self.bus = bus
        self.config = config
        self.counts = PublisherCounts()
        self._buf: deque[Fields] = deque()
        self._on_event = on_event or (lambda kind, n: None)
        self._connected = True
        self._backoff = config.backoff_initial_s
        self._retry_at = 0.0

    @property
    def connected(self) -> bool:
        return self._connected

    def publish(self, fields: Fields) -> None:
        """Queue one entry; send a batch when one is full and the bus is (believed) up."""
        self.counts.produced += 1
        if len(self._buf) >= self.config.buffer_limit:
            self._buf.popleft()
            self.counts.dropped_buffer_full += 1
            self._on_event("buffer_full", 1)
        self._buf.append(fields)
        if len(self._buf) >= self.config.batch:
            self.flush_once()

    def flush_once(self) -> bool:
        """Try to send everything buffered; False if the bus is down (entries stay buffered)."""
        if not self._buf:
            return True
        if not self._connected and time.monotonic() < self._retry_at:
            return False
        try:
            while self._buf:
                batch = [self._buf[i] for i in range(min(self.config.batch, len(self._buf)))]
                self.bus.add_many(self.config.stream, batch)
                for _ in batch:
                    self._buf.popleft()
                self.counts.sent += len(batch)
                self._on_event("sent", len(batch))
            trimmed = self.bus.trim(self.config.stream, self.config.maxlen)
        except BusUnavailable as err:
            self._down(err)
            return False
        if trimmed:
            self.counts.trimmed += trimmed
            self._on_event("trimmed", trimmed)
        self._up()
        return True

    def _down(self, err: BusUnavailable) -> None:
        if self._connected:
            log.warning("bus %s unreachable, buffering up to %s entries: %s",
                        self.config.stream, self.config.buffer_limit, err)  # fmt: skip
            self._connected = False
            self._on_event("connected", 0)
        else:
            self._backoff = min(self._backoff * 2, self.config.backoff_max_s)
        self._retry_at = time.monotonic() + self._backoff
        self._on_event("buffered", len(self._buf))

    def _up(self) -> None:
        if not self._connected:
            log.warning("bus %s reachable again; sending %s buffered entries", self.config.stream, len(self._buf))
            self._connected = True
            self._on_event("connected", 1)
        self._backoff = self.config.backoff_initial_s
        self._on_event("buffered", len(self._buf))

    def close(self, timeout_s: float = 10.0) -> PublisherCounts:
        """Send what is buffered, retrying until ``timeout_s``; count what could not be sent."""
        deadline = time.monotonic() + timeout_s
        while not self.flush_once() and time.monotonic() < deadline:
            time.sleep(min(0.05, max(0.0, self._retry_at - time.monotonic())))
        if self._buf:
            n = len(self._buf)
            log.error("bus %s unreachable at shutdown: %s entries dropped", self.config.stream, n)
            self.counts.dropped_unreachable += n
            self._on_event("unreachable", n)
            self._buf.clear()
        return self.counts

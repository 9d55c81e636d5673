"""The inference worker loop: read windows, run the model, write verdicts, ack; on any bus.

One step (:meth:`Worker.run_once`) takes one batch, claimed from a stalled consumer (XAUTOCLAIM) or new
(XREADGROUP), triages it (bad entries go to the dead-letter stream), runs the model once, writes the
verdicts and dead letters, and only then acks (at least once: a crash between writing and acking repeats
verdicts, which the alerter deduplicates by window id). Between batches it polls for a new model,
recreates a missing consumer group and refreshes its gauges.

Failures, after rq's worker (``work()``, ``handle_job_failure``): a bad entry is logged with its id,
dead-lettered, acked, and the loop goes on; an unreachable bus means capped exponential backoff, with the
batch in hand kept until it can be written and acked; anything unexpected propagates, so the process exits
non-zero and its supervisor restarts it (its pending entries are claimed by another worker).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import redis

from tapwatch.bus.stats import StatsProbe
from tapwatch.bus.streams import Bus, BusUnavailable, Entry, GroupMissing
from tapwatch.features.errors import ModelCardError
from tapwatch.features.schema import Verdict
from tapwatch.inference.batch import Dead, Origin, dead_letter, decide, triage
from tapwatch.inference.config import WorkerConfig
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import Model
from tapwatch.inference.reload import ModelReloader

log = logging.getLogger(__name__)

# The verdict stream is trimmed at most this often: XTRIM ~ is cheap, but one per batch is a round trip.
TRIM_INTERVAL_S = 1.0


@dataclass
class _InHand:
    """The results of one batch, until they are written and its entries acked (in one step)."""

    verdicts: list[Verdict] = field(default_factory=list)
    dead: list[Dead] = field(default_factory=list)
    ack_ids: list[str] = field(default_factory=list)


class Worker:
    """Consume windows from a bus and publish verdicts; the same loop for Redis and the in-memory bus.

    Parameters
    ----------
    bus
        A :class:`~tapwatch.bus.streams.Bus` (``RedisBus`` in the service, ``MemoryBus`` embedded).
    model
        The checked model that serves verdicts until a reload swaps it.
    config
        Streams, group, batch size, block time, claiming and backoff (:class:`WorkerConfig`).
    metrics
        Where events are counted.
    reloader
        Watches the model files and loads replacements; None: no hot reload.
    stats
        Pending/lag probe for the gauges (Redis only); None: gauges stay ``nan``.

    Example
    -------
    >>> import tempfile
    >>> from prometheus_client import CollectorRegistry
    >>> from tapwatch.bus.streams import MemoryBus
    >>> from tests.support.tiny_model import sample_window, write_tiny_model
    >>> from tapwatch.inference.model import load_model
    >>> with tempfile.TemporaryDirectory() as d:
    ...     model = load_model(write_tiny_model(d, window_length=4).onnx_path)
    >>> bus = MemoryBus()
    >>> ids = bus.add_many("tapwatch:windows", [sample_window(4).encode()])
    >>> worker = Worker(bus, model, WorkerConfig(block_ms=10), InferenceMetrics(CollectorRegistry()))
    >>> worker.run_once(), bus.length("tapwatch:verdicts")
    (1, 1)
    """

    def __init__(
        self,
        bus: Bus,
        model: Model,
        config: WorkerConfig,
        metrics: InferenceMetrics,
        reloader: ModelReloader | None = None,
        stats: StatsProbe | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.metrics = metrics
        self.reloader = reloader
        self.stats = stats
        self.consumer = config.consumer_name()
        self._origin = Origin(config.stream, config.group, self.consumer)
        self._model = model
        self._in_hand: _InHand | None = None
        self._started = False
        self._connected = True
        self._backoff = config.backoff_initial_s
        self._delay = 0.0
        self._reload_requested = False
        self._next_claim = self._next_stats = self._next_trim = 0.0
        self._lag = math.nan
        metrics.model_loaded(model.card.name, model.card.version, model.card.class_names)

    @property
    def model(self) -> Model:
        return self._model

    @property
    def connected(self) -> bool:
        """False while the bus is unreachable (``/readyz`` reports it)."""
        return self._connected

    @property
    def delay(self) -> float:
        """Seconds to wait before the next step (the backoff while the bus is down, else 0)."""
        return self._delay

    def ready(self) -> dict[str, bool]:
        """Readiness checks for ``/readyz`` (with ``ready_max_lag`` set, also the group's lag)."""
        checks = {"model_loaded": True, "bus_reachable": self._connected}
        if self.config.ready_max_lag:
            # NaN (lag unknown) compares false: not held against the worker.
            checks["lag_within_limit"] = not self._lag > self.config.ready_max_lag
        return checks

    def request_reload(self) -> None:
        """Reload the model before the next batch (safe to call from a signal handler: it sets a flag)."""
        self._reload_requested = True

    def run(self, stop: threading.Event) -> None:
        """Step until ``stop`` is set, then write and ack the batch in hand (:meth:`drain`)."""
        log.info("worker %s: group %s on %s, model %s %s", self.consumer, self.config.group, self.config.stream,
                 self._model.card.name, self._model.card.version)  # fmt: skip
        while not stop.is_set():
            self.run_once()
            if self._delay:
                stop.wait(self._delay)  # no busy loop while the bus is down; a stop request ends the wait
        self.drain(self.config.drain_timeout_s)
        log.info("worker %s: stopped", self.consumer)

    def run_once(self) -> int:
        """One step: finish what is in hand, housekeeping, one batch. Returns the number of entries taken."""
        try:
            if self._in_hand is not None:
                self._flush()
            self._start()
            self._maybe_reload()
            self._maybe_stats()
            entries = self._take()
            if entries:
                self._process(entries)
                self._flush()
            self._up()
            return len(entries)
        except BusUnavailable as err:
            self._down(err)
            return 0

    def drain(self, timeout_s: float) -> bool:
        """Write and ack the batch in hand, retrying with backoff up to ``timeout_s``; True when done."""
        deadline = time.monotonic() + timeout_s
        while self._in_hand is not None:
            try:
                self._flush()
                self._up()
            except BusUnavailable as err:
                self._down(err)
                if time.monotonic() + self._delay > deadline:
                    log.error("worker %s: bus unreachable at stop; %s entries stay pending for another worker",
                              self.consumer, len(self._in_hand.ack_ids))  # fmt: skip
                    return False
                time.sleep(self._delay)
        return True

    def _start(self) -> None:
        if not self._started:
            if self.bus.ensure_group(self.config.stream, self.config.group):
                log.info("worker %s: created group %s on %s", self.consumer, self.config.group, self.config.stream)
            self._started = True

    def _take(self) -> list[Entry]:
        c = self.config
        try:
            claimed = self._claim()
            if claimed:
                return claimed
            return self.bus.read_group(c.stream, c.group, self.consumer, c.batch_size, c.block_ms)
        except GroupMissing as err:
            self._recreate(str(err))
        except redis.ResponseError as err:
            # Redis >= 7.0 ends a XREADGROUP blocked on a key that FLUSHALL or DEL removed with this error;
            # RedisBus maps only NOGROUP to GroupMissing.
            if "UNBLOCKED" not in str(err):
                raise
            self._recreate(str(err))
        return []

    def _claim(self) -> list[Entry]:
        now = time.monotonic()
        if now < self._next_claim:
            return []
        c = self.config
        claimed = self.bus.claim_stale(c.stream, c.group, self.consumer, c.claim_idle_ms, c.batch_size)
        # A full batch means more may be waiting: look again at the next step rather than after the interval.
        self._next_claim = now if len(claimed) >= c.batch_size else now + c.claim_interval_s
        if claimed:
            self.metrics.claimed.inc(len(claimed))
            log.info("worker %s: claimed %s entries idle over %s ms, first %s",
                     self.consumer, len(claimed), c.claim_idle_ms, claimed[0][0])  # fmt: skip
        return claimed

    def _recreate(self, why: str) -> None:
        self.bus.ensure_group(self.config.stream, self.config.group)
        self.metrics.group_recreations.inc()
        log.warning("worker %s: group %s on %s was missing (%s); recreated, reading from the stream's start",
                    self.consumer, self.config.group, self.config.stream, why)  # fmt: skip

    def _process(self, entries: list[Entry]) -> None:
        self.metrics.windows.inc(len(entries))
        accepted, dead, batch = triage(entries, self._model)
        verdicts: list[Verdict] = []
        if batch is not None:
            started = time.perf_counter()
            probs = self._model.predict(batch)
            self.metrics.latency.observe(time.perf_counter() - started)
            self.metrics.batches.inc()
            self.metrics.batch_size.observe(len(accepted))
            verdicts, unusable = decide(self._model, accepted, probs, int(time.time() * 1000))
            dead += unusable
        self._in_hand = _InHand(verdicts, dead, [eid for eid, _ in entries])

    def _flush(self) -> None:
        """Write verdicts and dead letters and ack the batch, in one round trip on Redis (a pipeline). After a
        failure the whole step is retried: verdicts may repeat (the alerter deduplicates by window id), acks
        never come before the writes."""
        box, c = self._in_hand, self.config
        assert box is not None
        now_ms = int(time.time() * 1000)
        writes = [(c.verdicts_stream, [v.encode() for v in box.verdicts]),
                  (c.dead_stream, [dead_letter(d, self._origin, now_ms) for d in box.dead])]  # fmt: skip
        self.bus.write_and_ack(writes, c.stream, c.group, box.ack_ids)
        self._in_hand = None
        if box.verdicts:
            self._count_verdicts(box.verdicts)
        if box.dead:
            self._count_dead(box.dead)
            self.bus.trim(c.dead_stream, c.dead_maxlen)
        self._maybe_trim()

    def _count_verdicts(self, verdicts: list[Verdict]) -> None:
        now_ms = time.time() * 1000
        for cls, n in Counter(v.predicted for v in verdicts).items():
            self.metrics.verdicts.labels(**{"class": cls}).inc(n)
        observe = self.metrics.expiry_to_verdict.observe
        for v in verdicts:
            observe(max(0.0, (now_ms - v.flow.expired_at_ms) / 1000))
        self.metrics.over_threshold.inc(sum(v.over_threshold for v in verdicts))

    def _count_dead(self, dead: list[Dead]) -> None:
        for d in dead:
            self.metrics.dead.labels(reason=d.reason.value).inc()
            log.warning("worker %s: dead-lettered %s from %s to %s (%s): %s", self.consumer, d.entry_id,
                        self.config.stream, self.config.dead_stream, d.reason.value, d.detail)  # fmt: skip

    def _maybe_trim(self) -> None:
        now = time.monotonic()
        if now >= self._next_trim:
            self._next_trim = now + TRIM_INTERVAL_S
            trimmed = self.bus.trim(self.config.verdicts_stream, self.config.verdicts_maxlen)
            if trimmed:
                self.metrics.trimmed_verdicts.inc(trimmed)

    def _maybe_stats(self) -> None:
        now = time.monotonic()
        if self.stats is None or now < self._next_stats:
            return
        self._next_stats = now + self.config.stats_interval_s
        found = self.stats(self.config.stream, self.config.group)
        if found is not None:
            self.metrics.pending.set(found.pending)
            self.metrics.lag.set(found.lag)
            self._lag = found.lag

    def _maybe_reload(self) -> None:
        forced, self._reload_requested = self._reload_requested, False
        if self.reloader is None:
            if forced:
                log.warning("worker %s: reload requested, but the model was not loaded from files", self.consumer)
            return
        if not forced and not self.reloader.changed():
            return
        old = self._model.card
        try:
            new = self.reloader.load()
        except ModelCardError as err:
            self.metrics.reloads.labels(result="failed").inc()
            log.warning("worker %s: model reload refused, keeping %s %s: %s", self.consumer, old.name, old.version, err)
            return
        if new.same_as(self._model) and not forced:
            return
        self._model = new
        self.metrics.reloads.labels(result="ok").inc()
        self.metrics.model_loaded(new.card.name, new.card.version, new.card.class_names)
        log.warning("worker %s: model %s %s replaced by %s %s (sha256 %s…)", self.consumer, old.name, old.version,
                    new.card.name, new.card.version, new.sha256[:12])  # fmt: skip
        if new.card.feature_set_id != old.feature_set_id:
            log.warning("worker %s: the feature set changed to %s; windows built for %s will be dead-lettered",
                        self.consumer, new.card.feature_set_id, old.feature_set_id)  # fmt: skip

    def _down(self, err: BusUnavailable) -> None:
        if self._connected:
            log.warning("worker %s: bus unreachable, backing off up to %.1f s: %s",
                        self.consumer, self.config.backoff_max_s, err)  # fmt: skip
            self._connected = False
            self.metrics.bus_connected.set(0)
            self._backoff = self.config.backoff_initial_s
        else:
            self._backoff = min(self._backoff * 2, self.config.backoff_max_s)
        self._delay = self._backoff

    def _up(self) -> None:
        if not self._connected:
            log.warning("worker %s: bus reachable again", self.consumer)
            self._connected = True
            self.metrics.bus_connected.set(1)
        self._delay = 0.0

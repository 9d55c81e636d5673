"""The inference worker: read windows, run the model, write verdicts, ack; on any bus.

The loop is the one every stage runs (:class:`~tapwatch.bus.consumer.Consumer`: claims of stale entries,
reads, backoff, a lost group, drain at stop); the worker is its handler. Each batch, claimed from a stalled
consumer (XAUTOCLAIM) or new (XREADGROUP), is triaged (bad entries go to the dead-letter stream), run through
the model once, and its verdicts and dead letters are written and its entries acked in one step (at least once:
a crash between writing and acking repeats verdicts, which the alerter deduplicates by window id). Between
batches it polls for a new model and refreshes its gauges.

Failures, after rq's worker (``work()``, ``handle_job_failure``): a bad entry is logged with its id,
dead-lettered, acked, and the loop goes on; an unreachable bus means capped exponential backoff, with the
results of the batch in hand kept until they can be written and acked (the model does not run twice); anything
unexpected propagates, so the process exits non-zero and its supervisor restarts it (its pending entries are
claimed by another worker).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from tapwatch.bus.consumer import Consumer
from tapwatch.bus.stats import StatsProbe
from tapwatch.bus.streams import Bus, BusUnavailable, Entry
from tapwatch.features.errors import ConfigError, ModelCardError
from tapwatch.features.schema import Verdict
from tapwatch.inference.batch import Dead, Origin, dead_letter, decide, triage
from tapwatch.inference.config import WorkerConfig
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import Model
from tapwatch.inference.profiled import ProfileReloader, ServedProfile, model_id
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
    """Consume windows from a bus and publish verdicts: the consumer loop's handler, on Redis and in memory.

    ``run(stop)`` is the loop's :meth:`~tapwatch.bus.consumer.Consumer.run`: it steps until ``stop`` is set,
    then writes and acks the batch in hand (:meth:`drain`). :meth:`tend`, :meth:`handle` and :meth:`finish`
    are the worker's part of each step, the ``on_*`` methods its metrics and log lines for the loop's events.

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
        profile: ServedProfile | None = None,
        profile_reloader: ProfileReloader | None = None,
    ) -> None:
        self.bus = bus
        self.config = config
        self.metrics = metrics
        self.reloader = reloader
        self.stats = stats
        loop = config.consumer_config()
        self.consumer = loop.consumer
        self._origin = Origin(config.stream, config.group, self.consumer)
        self._model = model
        self._in_hand: _InHand | None = None
        self._reload_requested = False
        self._next_stats = self._next_trim = self._next_shift = 0.0
        self._lag = math.nan
        self._loop = Consumer(bus, loop, self, self)
        metrics.model_loaded(model.card.name, model.card.version, model.card.class_names)
        self.profile = profile
        self.profile_reloader = profile_reloader
        if profile is not None:
            self._profile_loaded(profile)

    @property
    def model(self) -> Model:
        return self._model

    @property
    def connected(self) -> bool:
        """False while the bus is unreachable (``/readyz`` reports it)."""
        return self._loop.connected

    @property
    def delay(self) -> float:
        """Seconds to wait before the next step (the backoff while the bus is down, else 0)."""
        return self._loop.delay

    def ready(self) -> dict[str, bool]:
        """Readiness checks for ``/readyz`` (with ``ready_max_lag`` set, also the group's lag)."""
        checks = {"model_loaded": True, "bus_reachable": self._loop.connected}
        if self.config.ready_max_lag:
            # NaN (lag unknown) compares false: not held against the worker.
            checks["lag_within_limit"] = not self._lag > self.config.ready_max_lag
        return checks

    def request_reload(self) -> None:
        """Reload the model before the next batch (safe to call from a signal handler: it sets a flag)."""
        self._reload_requested = True

    def run(self, stop: threading.Event) -> None:
        """Run the consumer loop (:class:`~tapwatch.bus.consumer.Consumer`) until ``stop`` is set, then drain."""
        self._loop.run(stop)

    def run_once(self) -> int:
        """One step of the loop: housekeeping, one batch (the batch in hand first). Returns the number of entries
        taken; 0 while the bus is unreachable (then :attr:`delay` is the backoff)."""
        return self._loop.run_once()

    def drain(self, timeout_s: float) -> bool:
        """Write and ack the batch in hand, retrying with backoff up to ``timeout_s``; True when done."""
        return self._loop.drain(timeout_s)

    # -- the loop's handler ----------------------------------------------------------------------------------

    def tend(self) -> None:
        """Between batches: reload a changed model, refresh the pending and lag gauges."""
        self._maybe_reload()
        self._maybe_stats()

    def handle(self, entries: list[Entry]) -> None:
        """Run the model once over the batch, then write verdicts and dead letters and ack, in one round trip.
        Handed the same batch again after the bus failed, it writes the results it holds instead."""
        box = self._in_hand
        if box is None or box.ack_ids != [eid for eid, _ in entries]:
            self._process(entries)
        self._flush()

    def finish(self) -> int:
        """Nothing is set aside: every batch is written and acked whole."""
        return 0

    # -- the loop's events -----------------------------------------------------------------------------------

    def on_claim(self, entries: list[Entry]) -> None:
        self.metrics.claimed.inc(len(entries))
        log.info("worker %s: claimed %s entries idle over %s ms, first %s",
                 self.consumer, len(entries), self.config.claim_idle_ms, entries[0][0])  # fmt: skip

    def on_group(self, missing: str | None) -> None:
        c = self.config
        if missing is None:
            log.info("worker %s: created group %s on %s", self.consumer, c.group, c.stream)
            return
        self.metrics.group_recreations.inc()
        log.warning("worker %s: group %s on %s was missing (%s); recreated, reading from the stream's start",
                    self.consumer, c.group, c.stream, missing)  # fmt: skip

    def on_bus(self, down: BusUnavailable | None) -> None:
        if down is not None:
            log.warning("worker %s: bus unreachable, backing off up to %.1f s: %s",
                        self.consumer, self.config.backoff_max_s, down)  # fmt: skip
            self.metrics.bus_connected.set(0)
        else:
            log.warning("worker %s: bus reachable again", self.consumer)
            self.metrics.bus_connected.set(1)

    def on_abandon(self, entries: int) -> None:
        log.error("worker %s: bus unreachable at stop; %s entries stay pending for another worker",
                  self.consumer, entries)  # fmt: skip

    # -- one batch -------------------------------------------------------------------------------------------

    def _process(self, entries: list[Entry]) -> None:
        self.metrics.windows.inc(len(entries))
        accepted, dead, batch = triage(entries, self._model, self.config.max_entry_bytes)
        verdicts: list[Verdict] = []
        if batch is not None:
            started = time.perf_counter()
            probs = self._model.predict(batch)
            self.metrics.latency.observe(time.perf_counter() - started)
            self.metrics.batches.inc()
            self.metrics.batch_size.observe(len(accepted))
            novelty = self.profile.novelty(batch, [a.window.valid_rows for a in accepted]) if self.profile else None
            if novelty is not None:
                self._count_novelty(novelty)
            verdicts, unusable = decide(self._model, accepted, probs, int(time.time() * 1000), novelty)
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

    def _count_novelty(self, novelty: list[float]) -> None:
        assert self.profile is not None
        m = self.metrics
        m.novelty_scored.inc(len(novelty))
        m.novel.inc(sum(r >= 1.0 for r in novelty))
        if self.profile.novel_share is not None:
            m.novel_share.set(self.profile.novel_share)
        now = time.monotonic()
        if now >= self._next_shift:  # 82 labelled gauges: refreshed once a second, not per batch
            self._next_shift = now + 1.0
            for name, z in self.profile.shifts().items():
                m.feature_shift.labels(feature=name).set(z)

    def _profile_loaded(self, p: ServedProfile) -> None:
        c = p.profile.card
        self.metrics.profile_loaded(str(p.path), f"{c.model.name} {c.model.version}", c.flows, c.created)
        if p.scorer is None:
            self.metrics.novel_share.set(float("nan"))

    def _maybe_reload_profile(self, forced: bool) -> None:
        r = self.profile_reloader
        if r is None or not (forced or r.changed()):
            return
        try:
            new = r.load(self._model)
        except ConfigError as err:
            self.metrics.profile_reloads.labels(result="failed").inc()
            log.warning("worker %s: site profile reload refused, keeping the one in use: %s", self.consumer, err)
            return
        self.profile = new
        self.metrics.profile_reloads.labels(result="ok").inc()
        self._profile_loaded(new)
        log.warning("worker %s: site profile %s reloaded (learned on %d flows)", self.consumer, new.path,
                    new.profile.card.flows)  # fmt: skip

    def _maybe_reload(self) -> None:
        self._maybe_reload_profile(self._reload_requested)
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
        if self.profile is not None:
            try:
                self.profile.profile.check_model(*model_id(new))
            except ValueError as err:  # the windows' scaling may differ: novelty would mean nothing
                log.warning("worker %s: site profile %s set aside: %s", self.consumer, self.profile.path, err)
                self.profile = None
                self.metrics.profile_info.info({"path": "", "model": "", "flows": "0", "created": ""})
                self.metrics.novel_share.set(float("nan"))
        self.metrics.model_loaded(new.card.name, new.card.version, new.card.class_names)
        log.warning("worker %s: model %s %s replaced by %s %s (sha256 %s…)", self.consumer, old.name, old.version,
                    new.card.name, new.card.version, new.sha256[:12])  # fmt: skip
        if new.card.feature_set_id != old.feature_set_id:
            log.warning("worker %s: the feature set changed to %s; windows built for %s will be dead-lettered",
                        self.consumer, new.card.feature_set_id, old.feature_set_id)  # fmt: skip

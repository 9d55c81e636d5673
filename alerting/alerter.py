"""The alerter: verdicts over threshold → suppression → explanation → EVE alert → sinks → XACK.

It reads ``tapwatch:verdicts`` in consumer group ``alerters`` through the :class:`~tapwatch.bus.streams.Bus`
protocol only, so the same class runs on Redis (``tapwatch alerter``) and on the in-memory bus (the embedded
``detect``/``run`` modes). The loop is the one every stage runs (:class:`~tapwatch.bus.consumer.Consumer`: claims
of stale verdicts, reads, backoff, a lost group, drain at stop); the alerter is its handler.

Delivery is at least once, so a verdict may come twice (a worker or an alerter crashed before its XACK). The
alerter emits at most one alert per window id: just before the sinks write, it sets
``tapwatch:alerted:<window_id>`` with SET NX EX; a verdict whose key exists is acked without an alert, and the
key lives in Redis, so the guard survives an alerter restart. The key is set before the sinks write: a crash
in between loses that one alert rather than writing it twice. The Redis stream sink, when it is on this bus, is
written with the key in one atomic step (a script: one round trip per alert, not two), so it never loses or
repeats one.

Suppression and thresholds run before the explanation, so suppressed alerts spend no explanation budget (the
outcome is the one of explaining first). An entry is acked only once its alert is with the sinks; a sink that
fails is counted and does not hold the others up.

Explanations never hold up other alerts. The alerts of a batch that get no explanation (budget, queue, no
tensor, ...) or whose explanation is already done are written at once; an alert whose explanation is still
running is set aside, unacked, and written when it is done or at its deadline, whichever is first, while the
loop reads on (its reads block at most :data:`EXPLAIN_POLL_MS` while anything is set aside, instead of
``block_ms``). So within a batch, explained alerts come after the others.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tapwatch.alerting.alert import ExplanationStatus, alerted_class, from_verdict
from tapwatch.alerting.budget import ExplainQueue, Ticket
from tapwatch.alerting.errors import InvalidAlert
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.settings import AlerterSettings
from tapwatch.alerting.signatures import Signature, signature_for
from tapwatch.alerting.sinks import RedisStreamSink, SinkSet
from tapwatch.alerting.suppress import Suppressor
from tapwatch.bus.consumer import Consumer
from tapwatch.bus.entries import DeadReason, oversized
from tapwatch.bus.streams import Bus, BusUnavailable, Entry
from tapwatch.features.card import ModelCard
from tapwatch.features.errors import ModelCardError, SchemaError
from tapwatch.features.schema import Verdict

if TYPE_CHECKING:  # the reloader pulls in ONNX Runtime; only the service builds one
    from tapwatch.alerting.reload import CardReloader

log = logging.getLogger(__name__)

ALERTED_KEY = "tapwatch:alerted:{}"
EXPLAIN_POLL_MS = 5
"""Longest read block while an alert waits for its explanation (how late a finished one may be picked up)."""


@dataclass(frozen=True)
class AlertPolicy:
    """What the alerter does to an alert besides writing it.

    Parameters
    ----------
    suppressor
        Suppression, thresholds and whitelisted networks; None suppresses nothing.
    explainer
        The explanation queue; None sends every alert with ``explanation_status`` ``disabled``.
    """

    suppressor: Suppressor | None = None
    explainer: ExplainQueue | None = None


@dataclass
class _Pending:
    entry_id: str
    verdict: Verdict
    signature: Signature
    ticket: Ticket


class Alerter:
    """Turn verdicts into alerts on any bus: the consumer loop's handler.

    ``run(stop)`` is the loop's :meth:`~tapwatch.bus.consumer.Consumer.run`: it steps until ``stop`` is set, then
    finishes the batch in hand and writes the alerts set aside (by their deadlines; one attempt if the bus is
    down). :meth:`tend`, :meth:`handle` and :meth:`finish` are the alerter's part of each step, the ``on_*``
    methods its metrics and log lines for the loop's events.

    Parameters
    ----------
    bus
        Where the verdicts are (and the dedup keys and the dead-letter stream).
    card
        The model card, for its benign class, T and the explainer's model identity; None works without.
    settings
        Stream, group, consumer, read sizes (the loop's part: :meth:`AlerterSettings.consumer_config`), dedup TTL,
        signature family.
    sinks
        Where alerts go.
    metrics
        Counters on an injected registry.
    policy
        Suppression and explanation (:class:`AlertPolicy`); by default neither.
    reloader
        Polls the model files and hands over a new card and explainer (:class:`CardReloader`); None: none.

    Example
    -------
    >>> from prometheus_client import CollectorRegistry
    >>> from tapwatch.bus.streams import MemoryBus
    >>> a = Alerter(MemoryBus(), None, AlerterSettings(block_ms=1), SinkSet([]), AlerterMetrics(CollectorRegistry()))
    >>> a.run_once()
    0
    """

    def __init__(
        self,
        bus: Bus,
        card: ModelCard | None,
        settings: AlerterSettings,
        sinks: SinkSet,
        metrics: AlerterMetrics,
        policy: AlertPolicy | None = None,
        reloader: CardReloader | None = None,
    ) -> None:
        self.bus = bus
        self.card = card
        self.settings = settings
        self.sinks = sinks
        self.metrics = metrics
        self.suppressor = policy.suppressor if policy else None
        self.explainer = policy.explainer if policy else None
        self.reloader = reloader
        self._next_length = 0.0
        self._waiting: list[_Pending] = []
        # The Redis stream sink on this very bus is written together with the dedup key (one round trip).
        self._fused = next((k for k in sinks.sinks if isinstance(k, RedisStreamSink) and k.bus is bus), None)
        self._loop = Consumer(bus, settings.consumer_config(), self, self)

    # -- the loop ------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run the consumer loop (:class:`~tapwatch.bus.consumer.Consumer`) until ``stop`` is set; the batch in hand
        and the alerts set aside are finished first."""
        self._loop.run(stop)

    def run_once(self) -> int:
        """One step of the loop: claim stale entries (now and then), read one batch, handle it; return the entries
        handled. An unreachable bus raises BusUnavailable; the batch in hand is handled again at the next step."""
        return self._loop.step()

    @property
    def bus_ok(self) -> bool:
        """False while the bus is unreachable (as of the loop's last step)."""
        return self._loop.connected

    def close(self) -> None:
        """Write the alerts set aside (each waits at most until its deadline), stop the explainer and close every
        sink (the webhook delivers what it holds first)."""
        try:
            self._finish_waiting(wait=True)
        except BusUnavailable as err:
            log.error("alerter %s: bus unreachable at close (%s); %s set-aside alerts stay pending",
                      self.settings.alerter_consumer, err, len(self._waiting))  # fmt: skip
        if self.explainer is not None:
            self.explainer.close()
        self.sinks.close()

    def ready(self) -> dict[str, bool]:
        """``/readyz`` checks."""
        return {
            "bus_reachable": self.bus_ok,
            "explainer_ready": self.explainer is not None or self.settings.explain is not True,
        }

    @property
    def waiting(self) -> int:
        """Alerts set aside until their explanation is done or their deadline passes (entries not acked yet)."""
        return len(self._waiting)

    # -- the loop's handler ----------------------------------------------------------------------------------------

    def tend(self) -> int | None:
        """Between batches: reload a changed card, write the set-aside alerts that are due, refresh the stream length
        gauge. While alerts are set aside, the next read blocks at most :data:`EXPLAIN_POLL_MS`."""
        self._maybe_reload()
        self._finish_waiting()
        self._observe_length()
        return EXPLAIN_POLL_MS if self._waiting else None

    def finish(self) -> int:
        """At stop: write every alert set aside (each waits at most until its deadline); return the entries acked."""
        return self._finish_waiting(wait=True)

    def handle(self, entries: list[Entry]) -> None:
        """Turn a batch into alerts and ack it; alerts whose explanation is running are set aside, unacked. Handed
        the same batch again after the bus failed, it starts over: the dedup keys make that safe."""
        pending = [p for p in (self._prepare(eid, fields) for eid, fields in entries) if p is not None]
        now = time.monotonic()
        ready: list[_Pending] = []
        later: list[_Pending] = []
        for p in pending:
            (later if p.ticket.waiting(now) else ready).append(p)
        self._deliver_all(ready)
        held = {p.entry_id for p in later}
        self.bus.ack(self.settings.verdicts_stream, self.settings.alerter_group,
                     [eid for eid, _ in entries if eid not in held])  # fmt: skip
        self._waiting += later

    def _finish_waiting(self, wait: bool = False) -> int:
        """Write the set-aside alerts whose explanation is done or whose deadline passed (with ``wait``: all of
        them, each waiting at most until its deadline), then ack their entries; return how many."""
        if not self._waiting:
            return 0
        now = time.monotonic()
        due = list(self._waiting) if wait else [p for p in self._waiting if not p.ticket.waiting(now)]
        if not due:
            return 0
        self._deliver_all(due)
        self.bus.ack(self.settings.verdicts_stream, self.settings.alerter_group, [p.entry_id for p in due])
        done = {id(p) for p in due}
        self._waiting = [p for p in self._waiting if id(p) not in done]
        return len(due)

    def _prepare(self, entry_id: str, fields: Mapping[str, Any]) -> _Pending | None:
        verdict = self._decode(entry_id, fields)
        if verdict is None:
            return None
        if not verdict.over_threshold:
            self.metrics.verdicts.labels(outcome="below").inc()
            return None
        self.metrics.verdicts.labels(outcome="over").inc()
        benign = self.card.benign_class if self.card is not None and self.card.name == verdict.model else None
        sig = signature_for(verdict.model, alerted_class(verdict, benign), self.settings.signature_family)
        if self.suppressor is not None:
            f = verdict.flow
            reason = self.suppressor.check(sig.gid, sig.sid, f.src_ip, f.dst_ip, f.last_seen_ms)
            if reason is not None:
                self.metrics.suppressed.labels(reason=reason.value).inc()
                log.debug("window %s (sid %s) %s", verdict.window_id, sig.sid, reason.value)
                return None
        return _Pending(entry_id, verdict, sig, self._submit(verdict))

    def _submit(self, verdict: Verdict) -> Ticket:
        if self.explainer is None:
            return Ticket(ExplanationStatus.DISABLED)
        if verdict.tensor is None:
            return Ticket(ExplanationStatus.NO_TENSOR)
        card = self.card
        if card is not None and (card.name, card.version, card.feature_set_id) != (
            verdict.model,
            verdict.model_version,
            verdict.feature_set_id,
        ):
            return Ticket(ExplanationStatus.MODEL_MISMATCH)
        return self.explainer.submit(verdict.tensor)

    def _deliver_all(self, pending: list[_Pending]) -> None:
        for p in pending:
            self._deliver(p)

    def _deliver(self, p: _Pending) -> None:
        """Guard, build and write one alert. With the Redis stream sink on the same bus, the dedup key and the
        stream entry are written in one atomic round trip (:meth:`Bus.set_once_and_add`), then the other sinks."""
        v = p.verdict
        key = ALERTED_KEY.format(v.window_id)
        fused = self._fused
        if fused is None and not self.bus.set_once(key, self.settings.dedup_ttl_s):
            self._duplicate(p)
            return
        explanation, status = self.explainer.result(p.ticket) if self.explainer else (None, p.ticket.status)
        status = status or ExplanationStatus.DISABLED
        try:
            alert = from_verdict(v, p.signature, explanation, status, self.card.window_length if self.card else None)
        except InvalidAlert as err:  # e.g. a model that emits logits, not probabilities
            self._dead_letter(p.entry_id, "invalid_alert", str(err))
            return
        line = alert.to_json()
        if fused is not None:
            if not self.bus.set_once_and_add(key, self.settings.dedup_ttl_s, fused.stream,
                                             fused.fields(alert, line), fused.maxlen):  # fmt: skip
                self._duplicate(p)
                return
            self.sinks.health_of(fused).ok()
        if status is not ExplanationStatus.OK:
            self.metrics.explain_skipped.labels(reason=status.value).inc()
        if status is ExplanationStatus.ERROR:
            log.warning("window %s: explanation failed; alert %s sent without one", v.window_id, alert.id)
        held = self.sinks.emit(alert, line, skip=fused) + (fused is not None)
        self.metrics.alerts.labels(**{"class": alert.class_name, "severity": str(int(alert.severity))}).inc()
        log.info("alert %s window %s sid %s %s -> %s sinks", alert.id, v.window_id, p.signature.sid,
                 alert.class_name, held)  # fmt: skip

    def _duplicate(self, p: _Pending) -> None:
        if p.ticket.future is not None:
            p.ticket.future.cancel()
        self.metrics.duplicates.inc()
        log.info("window %s already alerted (entry %s re-delivered); acked without an alert", p.verdict.window_id,
                 p.entry_id)  # fmt: skip

    def _decode(self, entry_id: str, fields: Mapping[str, Any]) -> Verdict | None:
        """A verdict, or None after dead-lettering a hostile entry: one over ``max_entry_bytes`` before anything of
        it is parsed, then one the schema refuses (truncated, wrong type or version, out of range)."""
        limit = self.settings.max_entry_bytes
        size = oversized(fields, limit)
        if size is not None:
            reason, detail = DeadReason.TOO_LARGE.value, f"{size} bytes, over max_entry_bytes {limit}"
        else:
            try:
                return Verdict.decode(fields)
            except SchemaError as err:
                reason, detail = err.reason, err.detail
            except (ValueError, TypeError, KeyError, UnicodeDecodeError, OverflowError) as err:
                reason, detail = DeadReason.MALFORMED.value, f"{type(err).__name__}: {err}"
        self._dead_letter(entry_id, reason, detail)
        return None

    def _dead_letter(self, entry_id: str, reason: str, detail: str) -> None:
        """Log with the entry id, copy to the dead-letter stream with the reason, count; the batch ack acks it."""
        s = self.settings
        log.warning("entry %s of %s rejected (%s): %s; dead-lettered", entry_id, s.verdicts_stream, reason,
                    detail[:300])  # fmt: skip
        fields = {"stage": "alerter", "stream": s.verdicts_stream, "id": entry_id, "reason": reason,
                  "detail": detail[:1000]}  # fmt: skip
        self.bus.add_many(s.dead_stream, [fields])
        self.metrics.dead.labels(reason=reason, stream=s.verdicts_stream).inc()

    # -- bookkeeping ---------------------------------------------------------------------------------------------

    def _maybe_reload(self) -> None:
        """Swap in a changed card and its explainer; a refused model is logged, counted and not used."""
        if self.reloader is None:
            return
        old = self.card
        try:
            new = self.reloader.poll(old)
        except ModelCardError as err:
            self.metrics.reloads.labels(result="failed").inc()
            log.warning("alerter %s: model reload refused, keeping card %s %s: %s", self.settings.alerter_consumer,
                        old.name if old else "-", old.version if old else "-", err)  # fmt: skip
            return
        if new is None:
            return
        self.card = new.card
        if self.explainer is not None and new.explainer is not None:
            self.explainer.explainer = new.explainer
        self.metrics.reloads.labels(result="ok").inc()
        log.warning("alerter %s: card %s %s replaced by %s %s", self.settings.alerter_consumer,
                    old.name if old else "-", old.version if old else "-", new.card.name, new.card.version)  # fmt: skip

    def _observe_length(self) -> None:
        if time.monotonic() >= self._next_length:
            self._next_length = time.monotonic() + 5.0
            self.metrics.stream_length.set(self.bus.length(self.settings.verdicts_stream))

    # -- the loop's events -----------------------------------------------------------------------------------------

    def on_claim(self, entries: list[Entry]) -> None:
        log.info("alerter %s: claimed %s verdicts idle over %s ms, first %s", self.settings.alerter_consumer,
                 len(entries), self.settings.claim_idle_ms, entries[0][0])  # fmt: skip

    def on_group(self, missing: str | None) -> None:
        s = self.settings
        if missing is None:
            log.info("alerter %s: created group %s on %s", s.alerter_consumer, s.alerter_group, s.verdicts_stream)
            return
        self.metrics.group_recreated.inc()
        log.warning("alerter %s: %s; recreated group %s on %s (verdicts added while it was gone are read from "
                    "the start of the stream)", s.alerter_consumer, missing, s.alerter_group,
                    s.verdicts_stream)  # fmt: skip

    def on_bus(self, down: BusUnavailable | None) -> None:
        if down is not None:
            log.warning("alerter %s: bus unreachable (%s); backing off", self.settings.alerter_consumer, down)
        else:
            log.warning("alerter %s: bus reachable again", self.settings.alerter_consumer)
        self.metrics.bus_up.set(0 if down is not None else 1)

    def on_abandon(self, entries: int) -> None:
        log.error("alerter %s: bus unreachable at stop; %s verdicts in hand and %s set-aside alerts stay pending for "
                  "another alerter", self.settings.alerter_consumer, entries, len(self._waiting))  # fmt: skip

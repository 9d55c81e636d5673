"""The episode alerter: verdicts and aggregate buckets → evidence → episodes → alert lines → sinks.

Two consumer loops in group ``alerters``, one on ``tapwatch:verdicts`` (the window view, through
:func:`~tapwatch.alerting.evidence.from_verdict`) and one on ``tapwatch:aggregates`` (the volume view, through
:class:`~tapwatch.alerting.volume.VolumeRules`), feed one :class:`~tapwatch.alerting.episodes.EpisodeTracker`.
Its store is Redis for the service (two alerters open one episode per key; a restarted one continues the open
ones) and memory for ``detect``/``run``. Each line the tracker returns is explained once per episode
(:mod:`tapwatch.alerting.narrate`), written to the sinks, and the entries are acked after. Delivery is at least
once: a verdict delivered twice after a crash counts twice as evidence (a count a little high, never a second
episode: the store's transaction decides who opens). A line is made by the store's transaction and kept in its
outbox until the sinks have it, so an alerter killed in between loses no line: another one (or itself, restarted)
writes it once it has been there ``claim_idle_ms`` (:meth:`EpisodeAlerter.tick`), under the same ``alert_id``. The
Redis stream sink on this bus is written with the line's dedup key in one atomic step, after the other sinks: the
stream has each line exactly once; a file may repeat one (same ``alert_id``) when the alerter died between them.
Malformed entries are dead-lettered with the reason, counted by reason and stream, and logged with their id; an
entry over ``max_entry_bytes`` is dead-lettered before it is parsed.

Per-window verdicts stay on the verdicts stream for analysis; with ``verdicts_file`` each one is also written as
a JSON line (``detect --verdicts FILE``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, TextIO

from tapwatch.alerting.alert import Contribution, eve_timestamp
from tapwatch.alerting.allowlist import AllowList
from tapwatch.alerting.budget import BudgetConfig, ExplainQueue, Ticket
from tapwatch.alerting.episode_alert import EpisodeAlert, family_signature
from tapwatch.alerting.episodes import EpisodeLine, EpisodeTracker, LineState
from tapwatch.alerting.evidence import Evidence, ProfileGate, family_of_verdict, from_verdict
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.narrate import (
    Explain,
    facts_explanation,
    fallback_explanation,
    summary_of,
    window_explanation,
)
from tapwatch.alerting.settings import AlerterSettings
from tapwatch.alerting.sinks import RedisStreamSink, SinkSet
from tapwatch.alerting.suppress import Suppressor
from tapwatch.alerting.volume import VolumeRules
from tapwatch.bus.consumer import Consumer
from tapwatch.bus.entries import DeadReason, oversized
from tapwatch.bus.state import State
from tapwatch.bus.streams import Bus, BusUnavailable, Entry
from tapwatch.features.aggregates import AggregateRecord
from tapwatch.features.card import ModelCard
from tapwatch.features.errors import ConfigError, SchemaError
from tapwatch.features.families import Family
from tapwatch.features.schema import FlowMeta, Verdict
from tapwatch.inference.profiled import ProfileReloader

log = logging.getLogger(__name__)

TICK_S = 1.0
"""Seconds between two looks for quiet episodes."""
LINE_KEY = "tapwatch:episode-line:{}"
"""The dedup key of an episode line on the alert stream (set with the entry, in one atomic step)."""
RECOVER_MIN_MS = 2_000
"""Lines younger than this are never taken for a dead alerter's, whatever ``claim_idle_ms`` says."""


@dataclass(frozen=True)
class EpisodePolicy:
    """What turns evidence into lines besides the tracker: rules, explainer, suppression, words."""

    rules: VolumeRules | None = None
    explain: Explain | None = None
    suppressor: Suppressor | None = None
    allow: AllowList | None = None
    feature_medians: Mapping[str, float] | None = None
    gate: ProfileGate | None = None
    """The site profile's bars on window-view evidence."""


@dataclass
class ProfileSwap:
    """The alerter's hot reload of its site profile: the file's watcher, the model it must belong to, and whether
    the profile's baseline is in use (no ``--baseline``)."""

    reloader: ProfileReloader
    model: tuple[str, str, str | None]
    baseline: bool


@dataclass(frozen=True)
class _Explainer:
    """An :data:`Explain` function as the explanation queue's explainer."""

    fn: Explain

    def explain(self, window: Any) -> tuple[Contribution, ...]:
        return self.fn(window)


class _Events:
    """The consumer loop's events for one stream: log lines and metrics."""

    def __init__(self, owner: EpisodeAlerter, stream: str) -> None:
        self.owner, self.stream = owner, stream

    def on_claim(self, entries: list[Entry]) -> None:
        log.info("alerter: claimed %s entries of %s, first %s", len(entries), self.stream, entries[0][0])

    def on_group(self, missing: str | None) -> None:
        if missing is not None:
            self.owner.metrics.group_recreated.inc()
            log.warning("alerter: %s; recreated the group on %s", missing, self.stream)

    def on_bus(self, down: BusUnavailable | None) -> None:
        self.owner.metrics.bus_up.set(0 if down is not None else 1)
        log.warning("alerter: bus %s (%s)", "unreachable" if down else "reachable again", self.stream)

    def on_abandon(self, entries: int) -> None:
        log.error("alerter: bus unreachable at stop; %s entries of %s stay pending", entries, self.stream)


class _Handler:
    """The batch handler of one stream: decode each entry into evidence, track it, write lines, ack."""

    def __init__(self, owner: EpisodeAlerter, stream: str, decode: Any) -> None:
        self.owner, self.stream, self.decode = owner, stream, decode

    def tend(self) -> int | None:
        self.owner.tick()
        return None

    def handle(self, entries: list[Entry]) -> None:
        self.owner.take(self.stream, entries, self.decode)
        self.owner.bus.ack(self.stream, self.owner.settings.alerter_group, [eid for eid, _ in entries])

    def finish(self) -> int:
        return 0


class EpisodeAlerter:
    """Verdicts and aggregates in, episode lines out (see the module docstring).

    Parameters
    ----------
    bus, settings, sinks, metrics
        As for the per-window :class:`~tapwatch.alerting.alerter.Alerter`.
    tracker
        The episode tracker over its store.
    card
        The model card (its benign class; None: class names decide).
    policy
        Rules, explainer, suppression, allow-list, benign medians.
    """

    def __init__(self, bus: Bus, settings: AlerterSettings, sinks: SinkSet, metrics: AlerterMetrics,
                 tracker: EpisodeTracker, card: ModelCard | None, policy: EpisodePolicy) -> None:  # fmt: skip
        self.bus, self.settings, self.sinks, self.metrics = bus, settings, sinks, metrics
        self.tracker, self.card, self.policy = tracker, card, policy
        self.tracker.gate = self._gate
        self._emit_lock = threading.Lock()
        self._verdicts_out: TextIO | None = open(settings.verdicts_file, "a") if settings.verdicts_file else None  # noqa: SIM115
        s = settings
        self.verdict_loop = Consumer(bus, s.consumer_config(), _Handler(self, s.verdicts_stream, self._verdict),
                                     _Events(self, s.verdicts_stream))  # fmt: skip
        self.aggregate_loop = Consumer(bus, s.aggregates_config(),
                                       _Handler(self, s.aggregates_stream, self._aggregate),
                                       _Events(self, s.aggregates_stream))  # fmt: skip
        self.lines_written = 0
        self._next_tick = 0.0
        self._next_recovery = 0.0
        self._recovering = threading.Lock()
        self._fused = next((k for k in sinks.sinks if isinstance(k, RedisStreamSink) and k.bus is bus), None)
        self._lime: ExplainQueue | None = None
        if policy.explain is not None and not s.episode_explain_in_line:
            budget = BudgetConfig(s.explain_per_second, s.explain_queue, s.explain_deadline_ms, s.explain_cpu_share)
            self._lime = ExplainQueue(_Explainer(policy.explain), budget, metrics)
        self._explaining: dict[str, tuple[str, Ticket]] = {}
        """LIME in progress, by episode id: the episode's key and the queue's ticket."""
        self._lime_lock = threading.Lock()
        self.profile_swap: ProfileSwap | None = None

    # -- loops ------------------------------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Both loops until ``stop``: the aggregates' in a thread of its own, the verdicts' in this one."""
        side = threading.Thread(target=self.aggregate_loop.run, args=(stop,), name="tapwatch-alerter-aggregates",
                                daemon=True)  # fmt: skip
        side.start()
        try:
            self.verdict_loop.run(stop)
        finally:
            stop.set()
            side.join(30)

    def ready(self) -> dict[str, bool]:
        return {"bus_reachable": self.verdict_loop.connected and self.aggregate_loop.connected}

    def tick(self) -> None:
        """Close the episodes gone quiet; count what is still tracked. Both loops call it at every step: once a
        second is enough (a quiet period is minutes), and spares Redis a scan of the episodes per batch."""
        self._collect()
        now = time.monotonic()
        if now < self._next_tick:
            return
        self._next_tick = now + TICK_S
        self._maybe_swap_profile()
        for line in self.tracker.tick():
            self._write(line, None)
        self.metrics.open_episodes.set(len(self.tracker.store.keys()))
        if now >= self._next_recovery and self._recovering.acquire(blocking=False):
            try:
                self._next_recovery = now + self.settings.claim_interval_s
                self._recover()
            finally:
                self._recovering.release()

    def _recover(self) -> None:
        """Write the lines an alerter made and died before writing (in the outbox for ``claim_idle_ms``)."""
        for line in self.tracker.unwritten(max(self.settings.claim_idle_ms, RECOVER_MIN_MS) / 1000):
            log.warning("episode %s: line %s (%s) was made but not written (its alerter died); writing it now",
                        line.episode.get("id"), line.id, line.state.value)  # fmt: skip
            self.metrics.lines_recovered.inc()
            self._write(line, None)

    def _maybe_swap_profile(self) -> None:
        """A changed profile file that passes every check replaces the gate (and, when the profile's baseline is in
        use, the volume rules and window bars); a refused one is counted and logged, and the old one kept."""
        swap = self.profile_swap
        if swap is None or not swap.reloader.changed():
            return
        try:
            profile = swap.reloader.read(swap.model)
        except ConfigError as err:
            self.metrics.profile_reloads.labels(result="failed").inc()
            log.warning("alerter: site profile reload refused, keeping the one in use: %s", err)
            return
        update: dict[str, Any] = {"gate": ProfileGate.of(profile)}
        if swap.baseline:
            update["rules"] = VolumeRules(profile.baseline)
            bars = tuple(sorted(profile.baseline.window_open.get(swap.model[0], {}).items()))
            self.tracker.config = replace(self.tracker.config, open_by_family=bars)
        self.policy = replace(self.policy, **update)
        self.metrics.profile_reloads.labels(result="ok").inc()
        log.warning("alerter: site profile %s reloaded (learned on %d flows)", swap.reloader.path, profile.card.flows)

    def close(self, end_of_input: bool = False) -> None:
        """Close every episode when the input ended (a pcap), then the sinks and the verdicts file."""
        try:
            self._collect(wait=True)  # the last lines carry what LIME found
            for line in self.tracker.close_all() if end_of_input else self.tracker.tick():
                self._write(line, None)
        finally:
            if self._lime is not None:
                self._lime.close()
            if self._verdicts_out is not None:
                self._verdicts_out.close()
                self._verdicts_out = None
            self.sinks.close()

    # -- entries --------------------------------------------------------------------------------------------------

    def take(self, stream: str, entries: list[Entry], decode: Any) -> None:
        """Decode a batch of entries into evidence and track it all in one change of the store (one Redis
        transaction per batch); then write the lines it caused, and take them out of the outbox together."""
        evidence: list[Evidence] = []
        for entry_id, fields in entries:
            evidence += self._evidence(stream, entry_id, fields, decode)
        for ev in evidence:
            self.metrics.evidence.labels(view=ev.view.value, family=ev.family.value).inc()
        if not evidence:
            return
        written: list[EpisodeLine] = []
        try:
            for ev, lines in zip(evidence, self.tracker.observe_many(evidence), strict=True):
                for line in lines:
                    self._write(line, ev, settle=False)
                    written.append(line)
        finally:
            if written:
                self.tracker.written(written)

    def _evidence(self, stream: str, entry_id: str, fields: Mapping[str, Any], decode: Any) -> list[Evidence]:
        """One entry's evidence; a hostile entry (too large, truncated, of the wrong type or version, out of range)
        is dead-lettered, never raised: the size is checked before anything is parsed."""
        size = oversized(fields, self.settings.max_entry_bytes)
        if size is not None:
            self._dead_letter(stream, entry_id, DeadReason.TOO_LARGE.value,
                              f"{size} bytes, over max_entry_bytes {self.settings.max_entry_bytes}")  # fmt: skip
            return []
        try:
            return list(decode(fields))
        except SchemaError as err:
            self._dead_letter(stream, entry_id, err.reason, err.detail)
        except (ValueError, TypeError, KeyError, UnicodeDecodeError, OverflowError) as err:
            self._dead_letter(stream, entry_id, DeadReason.MALFORMED.value, f"{type(err).__name__}: {err}")
        return []

    def _verdict(self, fields: Mapping[str, Any]) -> list[Evidence]:
        verdict = Verdict.decode(fields)
        benign = self.card.benign_class if self.card is not None and self.card.name == verdict.model else None
        self.metrics.verdicts.labels(outcome="over" if verdict.over_threshold else "below").inc()
        if self._verdicts_out is not None:
            self._record_verdict(verdict, benign)
        ev = from_verdict(verdict, benign, self.policy.gate)
        return [ev] if ev is not None else []

    def _aggregate(self, fields: Mapping[str, Any]) -> list[Evidence]:
        agg = AggregateRecord.decode(fields)
        self.metrics.aggregates.labels(view=agg.view.value).inc()
        return self.policy.rules.judge(agg) if self.policy.rules is not None else []

    def _record_verdict(self, v: Verdict, benign: str | None) -> None:
        found = family_of_verdict(v, benign, self.policy.gate)
        f = v.flow
        row = {"timestamp": eve_timestamp(f.last_seen_ms), "window_id": v.window_id, "key": v.key,
               "flow_id": f.flow_id, "community_id": f.community_id, "src_ip": f.src_ip, "src_port": f.src_port,
               "dest_ip": f.dst_ip, "dest_port": f.dst_port, "proto": f.protocol, "model": v.model,
               "predicted": v.predicted, "score": round(v.score, 6), "threshold": round(v.threshold, 6),
               "family": found[0].value if found else Family.BENIGN.value, "evidence": found is not None,
               "valid_rows": v.valid_rows}  # fmt: skip
        if v.novelty is not None:
            row["novelty"] = round(v.novelty, 4)
        assert self._verdicts_out is not None
        self._verdicts_out.write(json.dumps(row, separators=(",", ":")) + "\n")

    # -- lines ----------------------------------------------------------------------------------------------------

    def _gate(self, s: State) -> str | None:
        """The allow-list, then ``threshold.config`` on the family's signature, for a newly opened episode."""
        rep = FlowMeta.from_json(s["rep"])
        allow = self.policy.allow
        peers = [s["entity"], *s["sources"], *s["targets"]][:8]
        reason: str | None = None
        if allow is not None and (
            any(allow.allows_host(p) for p in peers) or allow.allows_port(rep.dst_port, rep.protocol)
        ):
            reason = "whitelist"
        elif self.policy.suppressor is not None:
            sig = family_signature(Family(s["family"]))
            found = self.policy.suppressor.check(sig.gid, sig.sid, rep.src_ip, rep.dst_ip, s["last_ms"])
            reason = found.value if found is not None else None
        if reason is not None:
            self.metrics.episodes_suppressed.labels(reason=reason).inc()
            log.info("episode %s (%s) suppressed: %s", s["id"], s["key"], reason)
        return reason

    def _explained(self, line: EpisodeLine, ev: Evidence | None) -> tuple[tuple[Contribution, ...], str]:
        """The line's explanation and summary: the episode's saved ones, else made now and saved (once per episode).
        The volume view's counts are at hand; LIME on the window is run in line (``episode_explain_in_line``) or
        asked of the background queue, the line then going out with the score's explanation and LIME's result
        saved for the episode's next lines (:meth:`_collect`); one the budget skipped is asked again at the next
        line that has a window."""
        e = line.episode
        lime_wanted = (self._lime is not None and e.get("explained_by") == "score" and ev is not None
                       and ev.tensor is not None and e.get("rep_view") != "volume"
                       and e["id"] not in self._explaining)  # fmt: skip
        if e.get("explanation") is not None and e.get("summary") and not lime_wanted:
            saved = tuple(Contribution(str(c[0]), float(c[1]), float(c[2])) for c in e["explanation"])
            return saved, str(e["summary"])
        tensor = ev.tensor if ev is not None else None
        if e.get("rep_view") == "volume" and e.get("facts"):
            expl, by = facts_explanation(e["facts"]), "facts"
        elif self._lime is not None:
            expl, by = fallback_explanation(e), "score"
            if tensor is not None:
                self._ask_lime(e, tensor)
        else:
            started = time.perf_counter()
            expl = window_explanation(tensor, self.policy.explain)
            if expl:  # LIME ran, in line: the line waited for it
                self.metrics.explain_latency.observe(time.perf_counter() - started)
            expl, by = (expl, "lime") if expl else (fallback_explanation(e), "score")
        summary = summary_of(e, expl, self._bucket_s(), dict(self.policy.feature_medians or {}))
        made = {"explanation": [[c.feature, c.value, c.weight] for c in expl], "summary": summary, "explained_by": by}

        def values(s: State) -> dict[str, Any] | None:
            # the score's words never replace what LIME saved since this line's snapshot was taken
            return None if by == "score" and s.get("explained_by") == "lime" else made

        self.tracker.save(e["key"], e["id"], values)
        return expl, summary

    def _bucket_s(self) -> float:
        return self.policy.rules.baseline.bucket_s if self.policy.rules is not None else 10.0

    def _ask_lime(self, e: State, tensor: Any) -> None:
        """Queue LIME on the episode's window, unless one is in progress for it; the budget may refuse (counted)."""
        assert self._lime is not None
        with self._lime_lock:
            if e["id"] in self._explaining:
                return
            ticket = self._lime.submit(tensor)
            if ticket.status is None:
                self._explaining[e["id"]] = (e["key"], ticket)
        if ticket.status is not None:
            self.metrics.explain_skipped.labels(reason=ticket.status.value).inc()

    def _collect(self, wait: bool = False) -> None:
        """Save the LIME explanations that are done (``wait``: every one asked, each until its deadline) on their
        episodes, with the summary in words made from them: the episode's next line carries them. An episode the
        volume view's counts took over meanwhile keeps those."""
        if self._lime is None or not self._explaining:
            return
        now = time.monotonic()
        with self._lime_lock:
            due = [(eid, kt) for eid, kt in self._explaining.items() if wait or not kt[1].waiting(now)]
            for eid, _ in due:
                del self._explaining[eid]
        medians = dict(self.policy.feature_medians or {})
        for eid, (key, ticket) in due:
            found, status = self._lime.result(ticket)
            if found is None:
                self.metrics.explain_skipped.labels(reason=status.value).inc()
                continue

            def values(s: State, expl: tuple[Contribution, ...] = found) -> dict[str, Any] | None:
                if s.get("rep_view") == "volume":
                    return None
                return {"explanation": [[c.feature, c.value, c.weight] for c in expl], "explained_by": "lime",
                        "summary": summary_of(s, expl, self._bucket_s(), medians)}  # fmt: skip

            self.tracker.save(key, eid, values)

    def _write(self, line: EpisodeLine, ev: Evidence | None, settle: bool = True) -> None:
        """Explain ``line`` (once per episode), write it to the sinks, and (``settle``) take it out of the outbox;
        a caller writing several lines settles them together."""
        expl, summary = self._explained(line, ev)
        alert = EpisodeAlert(line, expl, summary, line.id) if line.id else EpisodeAlert(line, expl, summary)
        text = alert.to_json()
        fused = self._fused if line.id else None
        with self._emit_lock:
            held = self.sinks.emit(alert, text, skip=fused)
            # Redis unreachable here raises (BusUnavailable): the loop backs off, and the line, still in the
            # outbox, is written once Redis is back (by _recover), rather than lost from the stream.
            if fused is not None:
                key = LINE_KEY.format(line.id)
                if self.bus.set_once_and_add(key, self.settings.dedup_ttl_s, fused.stream, fused.fields(alert, text),
                                             fused.maxlen):  # fmt: skip
                    held += 1
                    self.sinks.health_of(fused).ok()
                else:
                    log.info("episode line %s was on %s already", line.id, fused.stream)
            if settle:
                self.tracker.written([line])
            self.lines_written += 1
        self.metrics.episode_lines.labels(family=alert.family.value, state=line.state.value).inc()
        self.metrics.alerts.labels(**{"class": alert.family.value, "severity": str(int(alert.severity))}).inc()
        log.info("episode %s %s %s %s -> %s sinks", line.episode["id"], line.state.value, line.episode["key"],
                 line.episode["flows"], held)  # fmt: skip
        if line.state is LineState.CLOSE:
            log.info("episode %s closed after %s lines", line.episode["id"], len(line.episode["lines"]))

    def _dead_letter(self, stream: str, entry_id: str, reason: str, detail: str) -> None:
        log.warning("entry %s of %s rejected (%s): %s; dead-lettered", entry_id, stream, reason, detail[:300])
        fields = {"stage": "alerter", "stream": stream, "id": entry_id, "reason": reason, "detail": detail[:1000]}
        self.bus.add_many(self.settings.dead_stream, [fields])
        self.metrics.dead.labels(reason=reason, stream=stream).inc()

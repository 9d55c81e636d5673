"""Episodes: evidence about one host and one family, accumulated until it is worth a person's time.

An episode is keyed by (family, role, host): the victim of a flood, the source of anything else
(:class:`~tapwatch.alerting.evidence.Evidence`). Its life:

* **pending**: window evidence collects until ``open_windows`` pieces fell within ``open_within_s`` (one odd
  window opens nothing) and, about a flood's victim, until ``open_concurrent`` of those flows were open at one
  moment (a flood is many connections at once: one client's requests one after another deny nobody service);
  volume evidence has already crossed a learned threshold over a bucket of many flows,
  and opens at once, except a piece that may not open alone (``Evidence.alone``: many connections to one
  service), which opens only once window evidence of the same episode fell within ``open_within_s`` of it.
* **open**: the episode's first line (``state: open``). Further evidence grows it; an ``update`` line goes out
  when it grew and the update gap passed: ``update_every_s`` first, doubling up to ``update_max_s``, and never
  more than ``max_lines_5min`` lines (the close line included) in any five minutes.
* **closed**: no new evidence for ``quiet_s`` on the evidence clock (the newest packet time seen, advanced by the
  wall clock while no evidence comes): the last line (``state: close``); the next evidence of that key opens a new
  episode. Quiet is measured from when evidence last *arrived* on that clock, not from its own packet time: the
  sensor's meters run in parallel, and a busy one hands over its flows minutes behind the others.

An episode that the allow-list or ``threshold.config`` suppresses is tracked as ``suppressed``: it emits nothing
and is not re-counted until it closes. The state is a JSON object in an
:class:`~tapwatch.bus.state.StateStore`; every change is one atomic
:meth:`~tapwatch.bus.state.StateStore.apply`, so two alerters emit each line once. Each line is put in the store's
outbox by the change that makes it, under its id (``<episode id>:<n>``, the n-th line of the episode), and taken
out once written (:meth:`EpisodeTracker.written`); a line an alerter died before writing is found there
(:meth:`EpisodeTracker.unwritten`) and written by another, or by itself restarted, under the same id.

>>> from tapwatch.bus.state import MemoryStateStore
>>> from tapwatch.alerting.evidence import Evidence, ViewKind
>>> from tapwatch.features.families import Family
>>> from tapwatch.features.schema import ExpiryReason, FlowMeta
>>> meta = FlowMeta(7, "1:x", "10.0.0.9", 40000, "10.0.0.2", 22, 6, 1000, 2000, 4, 300, ExpiryReason.TCP_FIN, 0, "s")
>>> t = EpisodeTracker(MemoryStateStore(), EpisodeConfig(open_windows=2))
>>> ev = Evidence(Family.BRUTEFORCE, ViewKind.WINDOW, "10.0.0.9", 2000, 0.9, meta, "SSH-Patator")
>>> [line.state.value for line in t.observe(ev)], [line.state.value for line in t.observe(ev)]
([], ['open'])
>>> [line.state.value for line in t.close_all()]
['close']
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from tapwatch.alerting.evidence import Evidence
from tapwatch.bus.state import State, StateStore

log = logging.getLogger(__name__)

FIVE_MIN_MS = 300_000
CLOSE_BATCH = 256
"""Episodes closed per transaction by :meth:`EpisodeTracker.tick`."""


class LineState(str, Enum):
    """``episode.state`` of an alert line."""

    OPEN = "open"
    UPDATE = "update"
    CLOSE = "close"


@dataclass(frozen=True)
class EpisodeConfig:
    """When episodes open, update and close (``docs/alerts.md``; settings ``TAPWATCH_EPISODE_*``)."""

    quiet_s: float = 120.0
    open_windows: int = 8
    open_within_s: float = 60.0
    open_min_score: float = 0.0
    open_concurrent: int = 6
    """Window-view evidence about a flood's victim opens only once this many of its flows were open at one moment."""
    update_every_s: float = 60.0
    update_max_s: float = 3600.0
    max_lines_5min: int = 10
    cap: int = 32
    """Addresses, ports and classes kept by name per episode, with their counts."""
    distinct_cap: int = 1024
    """Distinct addresses and ports remembered per episode to count them (beyond it the counts are lower bounds)."""
    open_by_family: tuple[tuple[str, int], ...] = ()
    """Per-family window-view bars (the site baseline's), used where higher than ``open_windows``."""

    def windows_to_open(self, family: str) -> int:
        return max([self.open_windows, *(n for f, n in self.open_by_family if f == family)])


@dataclass(frozen=True)
class EpisodeLine:
    """One alert line to write: the episode as it stands, and why the line goes out."""

    state: LineState
    episode: State
    id: str = ""
    """``<episode id>:<n>``: the n-th line of the episode (its ``alert_id``, the same when written again)."""


Gate = Callable[[State], str | None]
"""Suppression of a newly opened episode: the reason (``whitelist``, ``suppress``, ``threshold``) or None."""


def _outbox(lines: Iterable[EpisodeLine]) -> dict[str, str]:
    """What the store keeps of each line until it is written: the line, and when it was made (wall clock)."""
    at = int(time.time() * 1000)
    return {line.id: json.dumps({"state": line.state.value, "episode": line.episode, "at_ms": at},
                                separators=(",", ":")) for line in lines}  # fmt: skip


def _bump(counts: dict[str, int], name: str, n: int, cap: int) -> None:
    """Count ``n`` for ``name``, keeping at most ``cap`` names (a new name beyond that replaces the smallest)."""
    if name in counts or len(counts) < cap:
        counts[name] = counts.get(name, 0) + n
        return
    smallest = min(counts, key=lambda k: counts[k])
    if counts[smallest] <= n:
        del counts[smallest]
        counts[name] = n


def _new_state(ev: Evidence) -> State:
    return {
        "id": str(uuid.uuid4()), "key": ev.episode_key, "family": ev.family.value, "role": ev.role,
        "entity": ev.entity, "status": "pending", "first_ms": ev.at_ms, "last_ms": ev.at_ms, "flows": 0,
        "evidence": 0, "hits": [], "max_score": 0.0, "classes": {}, "sources": {}, "targets": {}, "ports": {},
        "n_sources": 0, "n_targets": 0, "n_ports": 0, "views": [], "rep": None, "rep_score": -1.0,
        "model": "", "model_version": "", "facts": [], "lines": [], "next_update_ms": 0, "gap_ms": 0,
        "grown": False, "explanation": None, "summary": None, "opened_ms": None, "seen_sources": [],
        "seen_targets": [], "seen_ports": [], "weak": [], "spans": [],
    }  # fmt: skip


def _copy(s: State) -> State:
    """A copy whose lists and dicts are new: the state nests only one level of containers of scalars (``facts`` is
    replaced, never changed in place), so this is all ``copy.deepcopy`` would do, at a fraction of its cost on the
    per-evidence path."""
    return {k: (v.copy() if isinstance(v, list | dict) else v) for k, v in s.items()}


def _see(s: State, field: str, names: tuple[str, ...], cap: int) -> int:
    """Remember up to ``cap`` distinct names of ``field``; return how many are known."""
    seen = s["seen_" + field]
    for name in names:
        if len(seen) < cap and name not in seen:
            seen.append(name)
    return len(seen)


def _absorb(s: State, ev: Evidence, cap: int, distinct_cap: int = 1024) -> None:
    """Add one piece of evidence to a state (pure bookkeeping: counts, names, the representative flow)."""
    s["first_ms"] = min(s["first_ms"], ev.at_ms)  # the first evidence, not the first packet of a long flow
    s["last_ms"] = max(s["last_ms"], ev.at_ms)
    by_view = s.setdefault("view_flows", {})
    by_view[ev.view.value] = by_view.get(ev.view.value, 0) + ev.flows
    s["flows"] = max(by_view.values())  # both views count the same flows: the larger count, not the sum
    s["evidence"] += 1
    s["max_score"] = max(s["max_score"], round(ev.score, 6))
    _bump(s["classes"], ev.detail, 1, cap)
    for field, names, n in (("sources", ev.sources, ev.n_sources), ("targets", ev.targets, ev.n_targets)):
        for name in names:
            _bump(s[field], name, max(1, ev.flows // max(1, len(names))), cap)
        s["n_" + field] = max(s["n_" + field], _see(s, field, names, distinct_cap), n)
    for port in ev.ports:
        _bump(s["ports"], str(port), 1, cap)
    s["n_ports"] = max(s["n_ports"], _see(s, "ports", tuple(str(p) for p in ev.ports), distinct_cap), ev.n_ports)
    if ev.view.value not in s["views"]:
        s["views"].append(ev.view.value)
    if _outranks(ev, s):
        if ev.view.value == "volume" and s.get("rep_view") == "window":
            # the rule's counts take over from the model's window: explained again, from those counts
            s.pop("explanation", None)
            s.pop("summary", None)
            s.pop("explained_by", None)
        s["rep"], s["rep_score"] = ev.flow.to_json(), ev.score
        s["rep_view"], s["rep_detail"] = ev.view.value, ev.detail
        s["model"], s["model_version"] = ev.model, ev.model_version
        if ev.facts:
            s["facts"] = [[f.name, f.value, f.median, f.weight, f.text] for f in ev.facts]
    s["grown"] = True


def _corroborated(s: State, within: float) -> bool:
    """Whether a volume piece that may not open alone (``Evidence.alone``) has window evidence of the same
    episode within ``within`` ms of it: two views agree."""
    return any(abs(w - h) <= within for w in s.get("weak", ()) for h in s["hits"])


def most_concurrent(spans: Iterable[Sequence[int]]) -> int:
    """The most of ``spans`` ((first, last) packet ms) open at one moment; touching spans overlap.

    >>> most_concurrent([(0, 10), (5, 20), (10, 12), (30, 40)])
    3
    """
    edges = sorted(e for a, b in spans for e in ((a, 0), (b, 1)))  # at one time, starts before ends
    best = now = 0
    for _, end in edges:
        now += -1 if end else 1
        best = max(best, now)
    return best


def _outranks(ev: Evidence, s: State) -> bool:
    """Whether ``ev`` names the episode's flow instead of its current representative: the volume view's evidence
    (counts an analyst can check: 900 ports in 10 s, 8 calls every 5 s) before the model's windows, then the
    strongest score (ties: the newest)."""
    mine, theirs = ev.view.value == "volume", s.get("rep_view") == "volume"
    return mine > theirs or (mine == theirs and ev.score >= s["rep_score"])


class EpisodeTracker:
    """Turn evidence into episode lines over an :class:`StateStore`.

    Parameters
    ----------
    store
        Where the states live (in memory, or Redis for the service).
    config
        When episodes open, update and close.
    gate
        Suppression of newly opened episodes (allow-list, ``threshold.config``); None suppresses nothing. It has
        side effects (``threshold.config`` counts, a metric), so a transaction the store retries reuses its first
        answer instead of asking again.
    wall
        The wall clock (seconds), which advances the evidence clock while no evidence comes.
    """

    def __init__(
        self, store: StateStore, config: EpisodeConfig | None = None, gate: Gate | None = None,
        wall: Callable[[], float] = time.monotonic,
    ) -> None:  # fmt: skip
        self.store = store
        self.config = config or EpisodeConfig()
        self.gate = gate
        self.wall = wall
        self._clock_ms = 0
        self._clock_wall = wall()

    def now_ms(self) -> int:
        """The evidence clock: the newest evidence time, plus the wall time since it came."""
        return self._clock_ms + int((self.wall() - self._clock_wall) * 1000)

    def _advance(self, at_ms: int) -> None:
        if at_ms > self._clock_ms:
            self._clock_ms, self._clock_wall = at_ms, self.wall()

    def observe(self, ev: Evidence) -> list[EpisodeLine]:
        """Add one piece of evidence; return the lines it causes (a close of a quiet episode, an open, an update)."""
        return self.observe_many([ev])[0]

    def observe_many(self, evs: Sequence[Evidence]) -> list[list[EpisodeLine]]:
        """:meth:`observe` for each piece in order, in one change of the store (one transaction for a batch of
        evidence); the lines each piece causes."""
        changes = []
        for ev in evs:
            self._advance(ev.at_ms)
            changes.append((ev.episode_key, self._change(ev, self.now_ms())))
        return self.store.apply_many(changes, _outbox)

    def _change(self, ev: Evidence, now: int) -> Callable[[State | None], tuple[State | None, list[EpisodeLine]]]:
        asked: list[str | None] = []  # the gate's answer, once per evidence however often the store retries

        def gate_once(s: State) -> str | None:
            if not asked:
                asked.append(self.gate(s) if self.gate is not None else None)
            return asked[0]

        return lambda s: self._step(s, ev, now, gate_once)

    def _step(self, s: State | None, ev: Evidence, now: int, gate: Gate) -> tuple[State | None, list[EpisodeLine]]:
        c = self.config
        lines: list[EpisodeLine] = []
        if s is not None and now - s["touched_ms"] >= c.quiet_s * 1000:
            lines += self._closing(s)
            s = None
        s = _new_state(ev) if s is None else _copy(s)  # the stored state stays as it was until written
        _absorb(s, ev, c.cap, c.distinct_cap)
        s["touched_ms"] = max(now, s.get("touched_ms", 0))
        if s["status"] == "pending":
            need, within = c.windows_to_open(s["family"]), c.open_within_s * 1000
            if ev.view.value == "window":
                s["hits"] = [h for h in s["hits"] if ev.at_ms - h <= within] + [ev.at_ms]
                s["hits"] = s["hits"][-need:]
                ready = ev.score >= c.open_min_score and (len(s["hits"]) >= need or _corroborated(s, within))
                if s["role"] == "victim" and c.open_concurrent > 1:
                    spans = [sp for sp in s.get("spans", []) if ev.at_ms - sp[1] <= within]
                    s["spans"] = [*spans[-(4 * c.open_concurrent) :], [ev.flow.first_seen_ms, ev.at_ms]]
                    ready = ready and most_concurrent(s["spans"]) >= c.open_concurrent
            elif ev.alone:
                ready = True
            else:
                s["weak"] = [*[h for h in s.get("weak", []) if ev.at_ms - h <= within][-7:], ev.at_ms]
                ready = _corroborated(s, within)
            if ready:
                lines += self._opening(s, now, gate)
        elif s["status"] == "open" and s["grown"] and now >= s["next_update_ms"] and self._room(s, now, 2):
            lines.append(self._line(s, LineState.UPDATE, now))
        return s, lines

    def _opening(self, s: State, now: int, gate: Gate) -> list[EpisodeLine]:
        reason = gate(s)
        s["opened_ms"] = now
        if reason is not None:
            s["status"] = "suppressed"
            s["suppressed"] = reason
            return []
        s["status"] = "open"
        s["gap_ms"] = int(self.config.update_every_s * 1000)
        return [self._line(s, LineState.OPEN, now)]

    def _room(self, s: State, now: int, keep: int) -> bool:
        """True when a line fits in the five-minute budget with ``keep - 1`` lines left over (for the close)."""
        recent = [t for t in s["lines"] if now - t < FIVE_MIN_MS]
        return len(recent) + keep <= self.config.max_lines_5min

    def _line(self, s: State, state: LineState, now: int) -> EpisodeLine:
        s["lines"] = [t for t in s["lines"] if now - t < FIVE_MIN_MS] + [now]
        s["grown"] = False
        if state is LineState.UPDATE:
            s["gap_ms"] = min(int(s["gap_ms"] * 2), int(self.config.update_max_s * 1000))
        s["next_update_ms"] = now + s["gap_ms"]
        s["n_lines"] = s.get("n_lines", 0) + 1
        # a snapshot: later evidence must not change a line
        return EpisodeLine(state, _copy(s), f"{s['id']}:{s['n_lines']}")

    def _closing(self, s: State) -> list[EpisodeLine]:
        if s["status"] != "open":
            return []  # never opened, or suppressed (counted when it opened): nothing was said, nothing to close
        n = s.get("n_lines", 0) + 1
        return [EpisodeLine(LineState.CLOSE, {**_copy(s), "lines": [*s["lines"], s["last_ms"]], "n_lines": n},
                            f"{s['id']}:{n}")]  # fmt: skip

    def written(self, lines: list[EpisodeLine]) -> None:
        """The sinks have ``lines``: out of the outbox."""
        self.store.settle([line.id for line in lines if line.id])

    def unwritten(self, older_than_s: float) -> list[EpisodeLine]:
        """Lines in the outbox for longer than ``older_than_s`` of wall time: their alerter died before writing
        them (one alive writes a line within a second or two of making it)."""
        now_ms = int(time.time() * 1000)
        out = []
        for line_id, text in sorted(self.store.unsettled().items()):
            entry = json.loads(text)
            if now_ms - int(entry["at_ms"]) >= older_than_s * 1000:
                out.append(EpisodeLine(LineState(entry["state"]), entry["episode"], line_id))
        return out

    def tick(self) -> list[EpisodeLine]:
        """Close every episode that got no evidence for ``quiet_s`` of the evidence clock; drop pending ones."""
        now = self.now_ms()
        quiet = self.config.quiet_s * 1000
        keys = self.store.keys()
        # a plain read of them all first: a transaction only for the episodes that are due
        due = [k for k, seen in zip(keys, self.store.get_many(keys), strict=True)
               if seen is not None and now - seen["touched_ms"] >= quiet]  # fmt: skip
        return self._close(due, lambda st: now - st["touched_ms"] >= quiet)

    def close_all(self) -> list[EpisodeLine]:
        """Close every episode (the end of a pcap: nothing more will come)."""
        return self._close(self.store.keys(), lambda st: True)

    def _close(self, keys: list[str], due: Callable[[State], bool]) -> list[EpisodeLine]:
        """Close the episodes of ``keys`` that are still ``due`` when their transaction reads them, a few hundred
        keys per transaction."""
        lines: list[EpisodeLine] = []
        for i in range(0, len(keys), CLOSE_BATCH):
            changes = [(k, lambda s: self._close_if(s, due)) for k in keys[i : i + CLOSE_BATCH]]
            for found in self.store.apply_many(changes, _outbox):
                lines += found
        return lines

    def _close_if(self, s: State | None, due: Callable[[State], bool]) -> tuple[State | None, list[EpisodeLine]]:
        if s is None or not due(s):
            return s, []
        return None, self._closing(s)

    def save(self, key: str, episode_id: str, values: dict[str, Any] | Callable[[State], dict[str, Any] | None]
             ) -> None:  # fmt: skip
        """Store computed values (explanation, summary) on the episode ``episode_id`` if it is still that one;
        ``values`` may be a function of the stored state (None: store nothing)."""

        def put(s: State | None) -> tuple[State | None, None]:
            if s is None or s["id"] != episode_id:
                return s, None
            found = values(s) if callable(values) else values
            return ({**s, **found} if found is not None else s), None

        self.store.apply(key, put)

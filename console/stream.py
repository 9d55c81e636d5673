"""The alerter's stream into the console: a consumer group of its own on ``tapwatch:alerts`` (``serve --redis``).

The bus's one consumer loop reads; this handler stores each entry's EVE line (:func:`~tapwatch.console.ingest.ingest`)
and acks the batch once the database committed it (at least once: a line delivered again is recognised by its alert
id and stored once). A database that fails leaves the batch unacked; the loop hands it again.

An entry that is no episode line is dead-lettered on ``tapwatch:dead`` with the reason, counted in
``tapwatch_console_dead_lettered_total{reason,stream}`` and ``tapwatch_console_alert_lines_total{outcome="refused"}``,
logged with its id, and acked: it never blocks the stream nor stops the reader. Checked before the line is stored,
in this order: the entry's size (over ``max_entry_bytes`` it is refused before anything of it is parsed:
``too_large``), its version (field ``v``; none is version 1: ``version``), the EVE line's JSON (``truncated``,
``non_finite`` for NaN or Infinity, ``json``), the types and ranges of what the console stores (``dtype``,
``value``), then what :func:`~tapwatch.console.ingest.parse` refuses (``not_alert``, ``not_episode``, ``fields``).
Fields this version does not know are ignored, in the entry and in the line.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.bus.consumer import Consumer, ConsumerConfig
from tapwatch.bus.entries import MAX_ENTRY_BYTES, DeadReason, oversized
from tapwatch.bus.streams import ALERTS_STREAM, DEAD_STREAM, Bus, Entry
from tapwatch.console.ingest import LineError, ingest
from tapwatch.features.errors import SchemaError
from tapwatch.features.fieldcheck import check_value, load_json
from tapwatch.features.schema import ALERT_ENTRY_VERSION

log = logging.getLogger(__name__)
GROUP = "console"

_INT32 = 2**31 - 1
_ID = (str, 1, 64)
_SHORT = (str, 0, 256)
# What ingest() stores, by where it is in the line: (type, lowest, highest), for text its length. A field that is
# absent is left to ingest's own checks; one that is there must fit its column.
_LINE_CHECKS: dict[str, dict[str, tuple[type, float, float]]] = {
    "": {"timestamp": (str, 1, 64), "host": _SHORT, "src_ip": _SHORT, "dest_ip": _SHORT},
    "alert": {"signature_id": (int, 0, _INT32), "severity": (int, 0, 255), "signature": (str, 0, 1024)},
    "episode": {"id": _ID, "first_seen": (str, 1, 64), "last_seen": (str, 1, 64), "flows": (int, 0, _INT32),
                "max_score": (float, 0, 1), "host": _SHORT, "key": _SHORT, "state": _SHORT},
    "ml": {"alert_id": _ID, "score": (float, 0, 1), "family": _SHORT, "summary": (str, 0, 65_536)},
}  # fmt: skip


class ConsoleMetrics:
    """The console's counters (on an injected registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter("tapwatch_console_alert_lines", "Alert lines read from the alert stream, by outcome.",
                             ["outcome"], registry=registry)  # fmt: skip
        for outcome in ("stored", "refused"):
            self.lines.labels(outcome)
        self.dead = Counter("tapwatch_console_dead_lettered", "Alert stream entries sent to tapwatch:dead (too large, "
                            "truncated, wrong type or version, no episode line), by reason and stream.",
                            ["reason", "stream"], registry=registry)  # fmt: skip


def checked_line(fields: dict[str, Any], limit: int) -> dict[str, Any]:
    """The entry's EVE line as a dict whose stored fields have their types and ranges; :class:`LineError` with the
    reason otherwise (the size is checked first, before anything is parsed)."""
    size = oversized(fields, limit)
    if size is not None:
        raise LineError(DeadReason.TOO_LARGE.value, f"{size} bytes, over max_entry_bytes {limit}")
    version = fields.get("v")
    if version is not None and version not in (str(ALERT_ENTRY_VERSION), str(ALERT_ENTRY_VERSION).encode()):
        raise LineError(DeadReason.VERSION.value, f"unknown alert entry version {version[:40]!r}")
    raw = fields.get("eve")
    if raw is None:
        raise LineError("no_eve", "the entry has no eve field")
    try:
        line = load_json(raw, "alert", "eve")
        if isinstance(line, dict):
            _check_types(line)
    except SchemaError as err:
        reason = "json" if err.reason == DeadReason.MALFORMED.value else err.reason
        raise LineError(reason, err.detail) from err
    return line if isinstance(line, dict) else {"event_type": None}  # parse() refuses it as not_alert


def _check_types(line: dict[str, Any]) -> None:
    for part, checks in _LINE_CHECKS.items():
        where = line if not part else line.get(part)
        if where is None:
            continue  # absent: parse() refuses what it needs
        if not isinstance(where, dict):
            raise SchemaError("alert", DeadReason.DTYPE.value, f"{part} is {type(where).__name__}, not an object")
        for name, check in checks.items():
            if name in where:
                check_value("alert", f"{part + '.' if part else ''}{name}", where[name], *check)


class AlertStreamHandler:
    """Store a batch of alert-stream entries, then ack it (a :class:`~tapwatch.bus.consumer.BatchHandler`).

    ``max_entry_bytes``: the largest entry parsed (field names and values); an episode line weighs about 1.5 KB.
    """

    def __init__(self, bus: Bus, factory: sessionmaker[Session], metrics: ConsoleMetrics,
                 stream: str = ALERTS_STREAM, max_entry_bytes: int = MAX_ENTRY_BYTES) -> None:  # fmt: skip
        self.bus = bus
        self.factory = factory
        self.metrics = metrics
        self.stream = stream
        self.max_entry_bytes = max_entry_bytes

    def tend(self) -> int | None:
        return None

    def handle(self, entries: list[Entry]) -> None:
        refused: list[tuple[str, str, str]] = []
        with self.factory() as db:
            for entry_id, fields in entries:
                try:
                    line = checked_line(fields, self.max_entry_bytes)
                    with db.begin_nested():  # one bad line rolls back alone
                        ingest(db, line)
                except LineError as err:
                    refused.append((entry_id, err.reason, str(err)))
                except (ValueError, TypeError, KeyError, OverflowError) as err:  # data ingest() could not take
                    refused.append((entry_id, DeadReason.VALUE.value, f"{type(err).__name__}: {err}"))
            db.commit()
        for entry_id, reason, detail in refused:
            log.warning("entry %s of %s rejected (%s): %s; dead-lettered", entry_id, self.stream, reason, detail[:300])
            self.bus.add_many(DEAD_STREAM, [{"stage": "console", "stream": self.stream, "entry": entry_id,
                                             "reason": reason, "group": GROUP, "detail": detail[:1000]}])  # fmt: skip
            self.metrics.dead.labels(reason=reason, stream=self.stream).inc()
        self.bus.ack(self.stream, GROUP, [eid for eid, _ in entries])
        self.metrics.lines.labels("refused").inc(len(refused))
        self.metrics.lines.labels("stored").inc(len(entries) - len(refused))

    def finish(self) -> int:
        return 0


def start_reader(bus: Bus, factory: sessionmaker[Session], metrics: ConsoleMetrics, consumer: str,
                 stop: threading.Event, max_entry_bytes: int = MAX_ENTRY_BYTES,
                 claim_idle_ms: int = 60_000) -> threading.Thread:  # fmt: skip
    """Run the consumer loop on the alert stream in a daemon thread until ``stop`` is set. Lines pending longer
    than ``claim_idle_ms`` in another console (one that died before its ack) are taken over."""
    config = ConsumerConfig(ALERTS_STREAM, GROUP, consumer, batch_size=128, block_ms=1000, claim_idle_ms=claim_idle_ms)
    loop = Consumer(bus, config,
                    AlertStreamHandler(bus, factory, metrics, max_entry_bytes=max_entry_bytes))  # fmt: skip
    thread = threading.Thread(target=loop.run, args=(stop,), name="tapwatch-console-alerts", daemon=True)
    thread.start()
    return thread

"""The alerter's stream into the console: a consumer group of its own on ``tapwatch:alerts`` (``serve --redis``).

The bus's one consumer loop reads; this handler stores each entry's EVE line (:func:`~tapwatch.console.ingest.ingest`)
and acks the batch once the database committed it (at least once: a line delivered again is recognised by its alert
id and stored once). An entry that is no episode line is dead-lettered on ``tapwatch:dead`` with the reason, counted
in ``tapwatch_console_alert_lines_total{outcome="refused"}``, logged with its id, and acked: it never blocks the
stream. A database that fails leaves the batch unacked; the loop hands it again.
"""

from __future__ import annotations

import logging
import threading

from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.bus.consumer import Consumer, ConsumerConfig
from tapwatch.bus.streams import ALERTS_STREAM, DEAD_STREAM, Bus, Entry
from tapwatch.console.ingest import LineError, ingest

log = logging.getLogger(__name__)
GROUP = "console"


class ConsoleMetrics:
    """The console's counters (on an injected registry)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lines = Counter("tapwatch_console_alert_lines", "Alert lines read from the alert stream, by outcome.",
                             ["outcome"], registry=registry)  # fmt: skip
        for outcome in ("stored", "refused"):
            self.lines.labels(outcome)


class AlertStreamHandler:
    """Store a batch of alert-stream entries, then ack it (a :class:`~tapwatch.bus.consumer.BatchHandler`)."""

    def __init__(self, bus: Bus, factory: sessionmaker[Session], metrics: ConsoleMetrics,
                 stream: str = ALERTS_STREAM) -> None:  # fmt: skip
        self.bus = bus
        self.factory = factory
        self.metrics = metrics
        self.stream = stream

    def tend(self) -> int | None:
        return None

    def handle(self, entries: list[Entry]) -> None:
        refused: list[tuple[str, str]] = []
        with self.factory() as db:
            for entry_id, fields in entries:
                raw = fields.get("eve")
                try:
                    if raw is None:
                        raise LineError("no_eve", "the entry has no eve field")
                    with db.begin_nested():  # one bad line rolls back alone
                        ingest(db, raw)
                except LineError as err:
                    refused.append((entry_id, err.reason))
                    log.warning("alert stream entry %s refused: %s", entry_id, err)
            db.commit()
        for entry_id, reason in refused:
            self.bus.add_many(DEAD_STREAM, [{"stream": self.stream, "entry": entry_id, "reason": reason,
                                             "group": GROUP}])  # fmt: skip
        self.bus.ack(self.stream, GROUP, [eid for eid, _ in entries])
        self.metrics.lines.labels("refused").inc(len(refused))
        self.metrics.lines.labels("stored").inc(len(entries) - len(refused))

    def finish(self) -> int:
        return 0


def start_reader(bus: Bus, factory: sessionmaker[Session], metrics: ConsoleMetrics, consumer: str,
                 stop: threading.Event) -> threading.Thread:  # fmt: skip
    """Run the consumer loop on the alert stream in a daemon thread until ``stop`` is set."""
    loop = Consumer(bus, ConsumerConfig(ALERTS_STREAM, GROUP, consumer, batch_size=128, block_ms=1000),
                    AlertStreamHandler(bus, factory, metrics))  # fmt: skip
    thread = threading.Thread(target=loop.run, args=(stop,), name="tapwatch-console-alerts", daemon=True)
    thread.start()
    return thread

"""Where alerts go: several sinks at once, none able to block or break the others.

A :class:`Sink` takes one EVE JSON line and either holds it when :meth:`Sink.write` returns (written to the
file or the stream, handed to the kernel, or queued for a background sender) or raises. :class:`SinkSet` fans
an alert out to every sink, counts each failure by sink kind and logs once per state change (failing,
recovered), never once per alert. Network sinks are in :mod:`tapwatch.alerting.netsinks`.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Protocol

from tapwatch.alerting.alert import AlertLine
from tapwatch.alerting.errors import SinkError
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.bus.streams import ALERTS_STREAM, Bus
from tapwatch.features.schema import ALERT_ENTRY_VERSION

log = logging.getLogger(__name__)


class Sink(Protocol):
    """One destination of alerts.

    ``kind`` is one of :data:`~tapwatch.alerting.metrics.SINK_KINDS`. A sink that delivers in the background may
    also define ``bind_health(health)`` to report delivery failures after :meth:`write` returned.
    """

    kind: str

    def write(self, alert: AlertLine, line: str) -> None:
        """Hold the alert (``line`` is its EVE JSON, no newline) or raise."""
        ...

    def close(self) -> None: ...


class SinkHealth:
    """The state of one sink: failures counted, a log line only when the state changes.

    Parameters
    ----------
    kind
        The sink's kind (metric label).
    metrics
        Where failures and the up/down gauge go; None counts nothing.
    """

    def __init__(self, kind: str, metrics: AlerterMetrics | None) -> None:
        self.kind = kind
        self.metrics = metrics
        self.healthy = True
        self.failures = 0
        self._lock = threading.Lock()  # a background sender and the alerter loop both report
        if metrics is not None:
            metrics.sink_up.labels(sink=kind).set(1)

    def failed(self, err: BaseException, alert_id: str, n: int = 1) -> None:
        """Count ``n`` alerts this sink failed to take; log only if it was healthy until now."""
        with self._lock:
            was_healthy, self.healthy = self.healthy, False
            self.failures += n
        if self.metrics is not None:
            self.metrics.sink_failures.labels(sink=self.kind).inc(n)
            self.metrics.sink_up.labels(sink=self.kind).set(0)
        if was_healthy:
            log.warning(
                "alert sink %s is failing (alert %s): %s; further failures are counted, not logged",
                self.kind,
                alert_id,
                err,
            )
        else:
            log.debug("alert sink %s still failing (alert %s): %s", self.kind, alert_id, err)

    def ok(self) -> None:
        with self._lock:
            was_healthy, self.healthy = self.healthy, True
        if not was_healthy:
            log.warning("alert sink %s recovered after %s failures", self.kind, self.failures)
            if self.metrics is not None:
                self.metrics.sink_up.labels(sink=self.kind).set(1)


class SinkSet:
    """Fan each alert out to every sink; one sink's failure never stops the others.

    Example
    -------
    >>> import io
    >>> out = io.StringIO()
    >>> sinks = SinkSet([StdoutSink(out)])
    >>> sinks.health[0].healthy
    True
    """

    def __init__(self, sinks: Sequence[Sink], metrics: AlerterMetrics | None = None) -> None:
        self.sinks = list(sinks)
        self.health = [SinkHealth(s.kind, metrics) for s in self.sinks]
        # A sink that delivers in the background reports its own successes; a write that only queued
        # the alert says nothing about whether the receiver is up.
        self._reports_itself = []
        for sink, health in zip(self.sinks, self.health, strict=True):
            bind = getattr(sink, "bind_health", None)
            if bind is not None:
                bind(health)
            self._reports_itself.append(bind is not None)

    def health_of(self, sink: Sink) -> SinkHealth:
        """The health record of one of this set's sinks."""
        return self.health[next(i for i, s in enumerate(self.sinks) if s is sink)]

    def emit(self, alert: AlertLine, line: str | None = None, skip: Sink | None = None) -> int:
        """Write to every sink but ``skip`` (one the caller already wrote); return how many hold the alert."""
        line = alert.to_json() if line is None else line
        held = 0
        for sink, health, itself in zip(self.sinks, self.health, self._reports_itself, strict=True):
            if sink is skip:
                continue
            try:
                sink.write(alert, line)
            except Exception as err:  # any sink failure is counted and contained, whatever its type
                health.failed(err, alert.id)
                continue
            if not itself:
                health.ok()
            held += 1
        return held

    def close(self) -> None:
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:  # closing one sink must not leave the others open
                log.warning("closing alert sink %s failed", sink.kind, exc_info=True)


class StdoutSink:
    """EVE lines on standard output (or any text stream)."""

    kind = "stdout"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    def write(self, alert: AlertLine, line: str) -> None:
        out = self.stream or sys.stdout
        out.write(line + "\n")
        out.flush()

    def close(self) -> None:
        (self.stream or sys.stdout).flush()


class FileSink:
    """A JSON-lines file rotated by size: ``alerts.jsonl`` → ``alerts.jsonl.1`` … ``.keep``.

    Parameters
    ----------
    path
        The live file; appended to if it exists.
    max_bytes
        Rotate before a line would take the file past this size.
    keep
        Rotated files kept; 0 truncates instead.
    fsync
        fsync after every line (the alert survives a power cut, at a cost per alert).
    """

    kind = "file"

    def __init__(self, path: str | Path, max_bytes: int = 100 * 2**20, keep: int = 5, fsync: bool = False) -> None:
        if max_bytes < 1024 or keep < 0:
            raise ValueError(f"file sink: max_bytes must be >= 1024 and keep >= 0 ({max_bytes}, {keep})")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.keep = keep
        self.fsync = fsync
        self.rotations = 0
        self._fh: IO[bytes] | None = None
        self._size = 0

    def _open(self) -> IO[bytes]:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("ab")
            self._size = self._fh.tell()
        return self._fh

    def write(self, alert: AlertLine, line: str) -> None:
        data = (line + "\n").encode()
        try:
            fh = self._open()
            if self._size > 0 and self._size + len(data) > self.max_bytes:
                self._rotate()
                fh = self._open()
            fh.write(data)
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        except OSError as err:
            self._reset()  # reopen on the next alert (the disk may have been full, or the file moved)
            raise SinkError(self.kind, f"{self.path}: {err}") from err
        self._size += len(data)

    def _rotate(self) -> None:
        self._reset()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            Path(f"{self.path}.{self.keep}").unlink(missing_ok=True)
            for i in range(self.keep - 1, 0, -1):
                older = Path(f"{self.path}.{i}")
                if older.exists():
                    older.rename(f"{self.path}.{i + 1}")
            self.path.rename(f"{self.path}.1")
        self.rotations += 1
        log.info("rotated alert file %s (rotation %s, keeping %s)", self.path, self.rotations, self.keep)

    def _reset(self) -> None:
        if self._fh is not None:
            try:
                self._fh.close()
            except OSError:
                log.debug("closing %s failed", self.path, exc_info=True)
        self._fh, self._size = None, 0

    def close(self) -> None:
        self._reset()


class RedisStreamSink:
    """Alerts on the stream ``tapwatch:alerts`` (field ``eve``), bounded by ``XTRIM MAXLEN ~``.

    Parameters
    ----------
    bus
        The bus (Redis in production; the in-memory bus in the embedded mode).
    maxlen
        Approximate bound of the stream.
    trim_every
        Trim once per this many alerts: one round trip per alert for the XADD, not two.
    """

    kind = "redis"

    def __init__(self, bus: Bus, stream: str = ALERTS_STREAM, maxlen: int = 100_000, trim_every: int = 64) -> None:
        self.bus = bus
        self.stream = stream
        self.maxlen = maxlen
        self.trim_every = max(1, trim_every)
        self._since_trim = 0

    @staticmethod
    def fields(alert: AlertLine, line: str) -> dict[str, str | bytes]:
        """The stream entry of one alert (the alerter also writes it together with the alert's dedup key)."""
        return {
            "v": str(ALERT_ENTRY_VERSION),
            "eve": line,
            "signature_id": str(alert.signature.sid),
            "severity": str(int(alert.severity)),
            "window_id": alert.window_id,
        }

    def write(self, alert: AlertLine, line: str) -> None:
        self.bus.add_many(self.stream, [self.fields(alert, line)])
        self._since_trim += 1
        if self._since_trim >= self.trim_every:
            self._since_trim = 0
            self.bus.trim(self.stream, self.maxlen)

    def close(self) -> None:
        return None

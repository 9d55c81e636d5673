"""Network sinks: syslog (RFC 5424 over UDP, or TCP with RFC 6587 octet counting) and an HTTP webhook.

Neither can stall the alerter: syslog over TCP connects with a short timeout and, after a failure, fails fast
until its reconnect backoff has passed; the webhook only puts the alert on a bounded queue that a background
thread drains with retries and backoff.
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from enum import Enum

from tapwatch.alerting.alert import AlertLine
from tapwatch.alerting.errors import SinkError
from tapwatch.alerting.signatures import Severity
from tapwatch.alerting.sinks import SinkHealth

log = logging.getLogger(__name__)

FACILITIES = {
    "kern": 0,
    "user": 1,
    "daemon": 3,
    "auth": 4,
    "security": 13,
    "local0": 16,
    "local1": 17,
    "local2": 18,
    "local3": 19,
    "local4": 20,
    "local5": 21,
    "local6": 22,
    "local7": 23,
}
SYSLOG_SEVERITY = {Severity.HIGH: 2, Severity.MEDIUM: 4, Severity.LOW: 5}
"""Alert severity → syslog severity: 1 → critical (2), 2 → warning (4), 3 → notice (5)."""


class Transport(str, Enum):
    UDP = "udp"
    TCP = "tcp"


def parse_hostport(text: str, option: str) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``; raise ValueError naming the option.

    >>> parse_hostport("127.0.0.1:514", "syslog_udp"), parse_hostport("[::1]:6514", "syslog_tcp")
    (('127.0.0.1', 514), ('::1', 6514))
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{option}: expected HOST:PORT, not {text!r}")
    return host.strip("[]"), int(port)


def rfc5424(alert: AlertLine, line: str, facility: int, hostname: str, app: str = "tapwatch") -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID - MSG``, the EVE JSON as MSG."""
    pri = facility * 8 + SYSLOG_SEVERITY[alert.severity]
    ts = datetime.fromtimestamp(alert.flow.last_seen_ms / 1000, tz=UTC).isoformat(timespec="milliseconds")
    host = (hostname or "-").replace(" ", "_")[:255]
    return f"<{pri}>1 {ts.replace('+00:00', 'Z')} {host} {app} {os.getpid()} alert - {line}".encode()


class SyslogSink:
    """RFC 5424 syslog over UDP (one datagram per alert) or TCP (octet-counting framing, RFC 6587).

    Parameters
    ----------
    host, port
        The receiver.
    transport
        :class:`Transport`.
    facility
        Syslog facility number (``local0`` = 16 by default).
    hostname
        HOSTNAME field: the sensor name when set, else this machine's name.
    timeout_s
        Connect and send timeout for TCP; short, so a dead receiver costs at most this once per backoff.
    """

    def __init__(
        self,
        host: str,
        port: int,
        transport: Transport,
        facility: int = 16,
        hostname: str | None = None,
        timeout_s: float = 1.0,
    ) -> None:
        self.kind = f"syslog_{transport.value}"
        self.addr = (host, port)
        self.transport = transport
        self.facility = facility
        self.hostname = hostname or socket.gethostname()
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._retry_at = 0.0
        self._backoff = 0.0

    def _connect(self) -> socket.socket:
        if self._sock is not None:
            return self._sock
        now = time.monotonic()
        if now < self._retry_at:
            raise SinkError(
                self.kind, f"{self.addr[0]}:{self.addr[1]} down, next attempt in {self._retry_at - now:.1f} s"
            )
        kind = socket.SOCK_DGRAM if self.transport is Transport.UDP else socket.SOCK_STREAM
        family = socket.getaddrinfo(self.addr[0], self.addr[1], type=kind)[0][0]
        sock = socket.socket(family, kind)
        sock.settimeout(self.timeout_s)
        try:
            sock.connect(self.addr)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        return sock

    def write(self, alert: AlertLine, line: str) -> None:
        msg = rfc5424(alert, line, self.facility, self.hostname)
        try:
            sock = self._connect()
            if self.transport is Transport.UDP:
                sock.send(msg)
            else:
                sock.sendall(f"{len(msg)} ".encode() + msg)
        except SinkError:
            raise
        except OSError as err:
            self.close()
            self._backoff = min(max(self._backoff * 2, 0.5), 30.0)
            self._retry_at = time.monotonic() + self._backoff
            raise SinkError(self.kind, f"{self.addr[0]}:{self.addr[1]}: {err}") from err
        self._backoff = 0.0

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WebhookSink:
    """POST each alert's EVE JSON to a URL from a background thread, with retries and capped backoff.

    Parameters
    ----------
    url
        ``http://`` or ``https://`` endpoint; any 2xx is success.
    queue_size
        Alerts waiting for delivery. 1000 EVE objects are about 1-2 MB, and at a few alerts per second they
        cover minutes of receiver downtime; beyond that an alert is dropped and counted, never blocking.
    retries
        Further attempts after a failed one (connection errors, timeouts, 408, 429, 5xx; other 4xx are final).
    backoff_s
        First retry delay, doubled per attempt up to ``max_backoff_s``.
    timeout_s
        Per-request timeout.
    """

    kind = "webhook"

    def __init__(
        self,
        url: str,
        queue_size: int = 1000,
        retries: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 2.0,
        max_backoff_s: float = 10.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"expected an http:// or https:// URL, not {url!r}")
        self.url = url
        self.retries = retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.delivered = 0
        # Direct connections only: an http_proxy in the environment must not reroute alerts.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        self.health: SinkHealth | None = None
        self._queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tapwatch-webhook", daemon=True)
        self._thread.start()

    def bind_health(self, health: SinkHealth) -> None:
        self.health = health

    def write(self, alert: AlertLine, line: str) -> None:
        try:
            self._queue.put_nowait((alert.id, line.encode()))
        except queue.Full as err:
            raise SinkError(self.kind, f"queue full ({self._queue.maxsize} alerts waiting); alert dropped") from err

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                alert_id, body = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            try:
                self._deliver(body)
            except (SinkError, OSError) as err:
                if self.health is not None:
                    self.health.failed(err, alert_id)
            else:
                self.delivered += 1
                if self.health is not None:
                    self.health.ok()
            finally:
                self._queue.task_done()

    def _deliver(self, body: bytes) -> None:
        delay = self.backoff_s
        for attempt in range(self.retries + 1):
            try:
                self._post(body)
                return
            except SinkError as err:
                if not err.retry or attempt == self.retries:
                    raise
                log.debug("webhook attempt %s failed: %s; retry in %.2f s", attempt + 1, err, delay)
            if self._stop.wait(delay):
                raise SinkError(self.kind, "shut down during the retry backoff")
            delay = min(delay * 2, self.max_backoff_s)

    def _post(self, body: bytes) -> None:
        req = urllib.request.Request(
            self.url,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "User-Agent": "tapwatch-alerter"},
        )
        try:
            with self._opener.open(req, timeout=self.timeout_s) as resp:
                resp.read()
        except urllib.error.HTTPError as err:
            retry = err.code in (408, 429) or err.code >= 500
            raise SinkError(self.kind, f"HTTP {err.code} from {self.url}", retry=retry) from err
        except (urllib.error.URLError, OSError) as err:
            raise SinkError(self.kind, f"{self.url}: {getattr(err, 'reason', err)}") from err

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until the queue is delivered (or given up); True if it emptied in time."""
        deadline = time.monotonic() + timeout_s
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued for up to ``timeout_s``, then stop (what is left is counted as failed)."""
        if self._stop.is_set():
            return
        self.flush(timeout_s)
        self._stop.set()
        self._thread.join(timeout=1.0)
        left = self._queue.qsize()
        if left and self.health is not None:
            self.health.failed(SinkError(self.kind, f"{left} alerts undelivered at shutdown"), "-", n=left)

"""``/metrics``, ``/livez`` and ``/readyz`` over HTTP, for every tapwatch process.

``/readyz`` answers 200 when every readiness check passes and 503 otherwise, with the failing checks
named in a JSON body. The server runs in a daemon thread and is bound to 127.0.0.1 unless configured.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from tapwatch.features.errors import ConfigError

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], dict[str, bool]]


class HealthServer:
    """Serve metrics and health on ``host:port`` (port 0 picks a free port; see :attr:`port`).

    Example
    -------
    >>> s = HealthServer(CollectorRegistry(), lambda: {"ok": True}, port=0).start()
    >>> s.port > 0
    True
    >>> s.stop()
    """

    def __init__(self, registry: CollectorRegistry, ready: ReadyCheck, host: str = "127.0.0.1", port: int = 0):
        self.registry = registry
        self.ready = ready
        self.host = host
        self.requested_port = port
        self._server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.server_address[1])

    def start(self) -> HealthServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    self._send(200, generate_latest(outer.registry), CONTENT_TYPE_LATEST)
                elif path == "/livez":
                    self._send(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    checks = outer.ready()
                    code = 200 if all(checks.values()) else 503
                    self._send(code, json.dumps(checks).encode() + b"\n", "application/json")
                else:
                    self._send(404, b"not found\n", "text/plain")

            def _send(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug("http %s", format % args)

        try:
            self._server = ThreadingHTTPServer((self.host, self.requested_port), Handler)
        except OSError as err:  # in use, or an address this host does not have: the user's setting, said so
            raise ConfigError(
                "metrics address", f"cannot listen on {self.host}:{self.requested_port} for /metrics: {err.strerror}"
            ) from err
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="tapwatch-http", daemon=True).start()
        if self.requested_port == 0:  # a port the system picked: said whatever the log level, or nobody knows it
            log.warning("serving /metrics /livez /readyz on http://%s:%s (a free port)", self.host, self.port)
        else:
            log.info("serving /metrics /livez /readyz on http://%s:%s", self.host, self.port)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

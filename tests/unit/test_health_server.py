"""The /metrics, /livez and /readyz server every service runs: a port it cannot take is the user's setting, said on
one line (``tapwatch: error: metrics address: ...``, exit 2), never an internal error."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.features.errors import ConfigError
from tapwatch.features.health import HealthServer


def test_a_port_in_use_is_a_clear_setting_error() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(
            ConfigError, match=f"cannot listen on 127.0.0.1:{port} for /metrics: Address already in use"
        ):
            HealthServer(CollectorRegistry(), lambda: {"ok": True}, "127.0.0.1", port).start()
    finally:
        taken.close()


def test_a_free_port_serves_readiness() -> None:
    server = HealthServer(CollectorRegistry(), lambda: {"ok": True}, "127.0.0.1", 0).start()
    try:
        body = urllib.request.urlopen(f"http://127.0.0.1:{server.port}/readyz", timeout=5).read()
        assert body == b'{"ok": true}\n'
    finally:
        server.stop()

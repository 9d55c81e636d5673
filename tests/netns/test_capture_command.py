"""``tapwatch capture -i lo`` as a person runs it: readiness, quiet-link flows, /metrics, SIGTERM flush."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.env import free_port, need


@pytest.fixture
def udp_echo() -> Iterator[int]:
    port = free_port(socket.SOCK_DGRAM)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(2048)
            except TimeoutError:
                continue
            sock.sendto(data.upper(), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join()
    sock.close()


def exchange(port: int, payload: bytes) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
        c.settimeout(2)
        c.sendto(payload, ("127.0.0.1", port))
        assert c.recv(2048) == payload.upper()


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip


def wait_for(check, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)
    raise AssertionError("condition not met in time")


def test_live_capture_on_loopback_serves_health_emits_quiet_flows_and_flushes_on_sigterm(udp_echo: int) -> None:
    need(os.geteuid() == 0, "live capture needs CAP_NET_RAW (run as root)")
    mport = free_port()
    cmd = [sys.executable, "-m", "tapwatch.app", "capture", "-i", "lo", "--bpf", f"udp and port {udp_echo}",
           "--idle-timeout", "2", "--metrics-port", str(mport), "--sensor", "lo-test"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: urllib.request.urlopen(f"http://127.0.0.1:{mport}/readyz", timeout=2).status == 200)
        assert urllib.request.urlopen(f"http://127.0.0.1:{mport}/livez", timeout=2).status == 200
        time.sleep(1.0)  # let libpcap's handle settle before the traffic
        for i in range(3):  # three UDP flows (distinct client ports), request and answer each
            exchange(udp_echo, b"hello %d" % i)
        # the link goes quiet: the flows must still come out after the idle timeout, before any stop
        wait_for(lambda: scrape(mport)[("tapwatch_capture_flows_total", (("reason", "idle"),))] == 3)
        m = scrape(mport)
        assert m[("tapwatch_features_windows_total", ())] == 3
        assert m[("tapwatch_capture_packets_total", ())] == 6
        exchange(udp_echo, b"last one")  # still open at shutdown: flushed by SIGTERM
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "4 windows produced, 4 sent, 0 dropped" in err, err

"""``tapwatch run`` live on loopback (a BPF filter on a port of our own): health, alerts while running, and the
flush on SIGTERM. Live capture needs root (CAP_NET_RAW)."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.cli import per_class, summary_of, tapwatch
from tests.support.e2e import e2e_model_spec, read_jsonl, scrape, wait_for
from tests.support.env import free_port
from tests.support.tiny_model import write_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path_factory.mktemp("model"), e2e_model_spec()).paths


class Server:
    """A TCP server on loopback that accepts, reads a little, answers and closes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(64)
                conn.sendall(b"ok\n")

    def hit(self, n: int) -> None:
        for _ in range(n):
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
                c.sendall(b"hello\n")
                c.recv(16)

    def close(self) -> None:
        self.sock.close()


@pytest.mark.timeout(90)
def test_run_on_loopback_serves_health_and_flushes_on_sigterm(model: tuple[Path, Path], tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture needs root (CAP_NET_RAW)")
    server, port, out = Server(), free_port(), tmp_path / "alerts.jsonl"
    out.write_text('{"earlier": "run appends, never truncates"}\n')  # issue 10: an operator's log is kept
    # Three windows open an episode here (the default, 8, is for real traffic): this test is about scoring live
    # and flushing at the stop, with a dozen flows.
    proc = tapwatch("run", "--interface", "lo", "--bpf", f"tcp port {server.port}", "--model", str(model[0]), "-o",
                    str(out), "--metrics-port", str(port), "--termination-linger", "0.2", "--no-explain",
                    env={"TAPWATCH_EPISODE_OPEN_WINDOWS": "3"})  # fmt: skip

    def ready() -> bool:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            return bool(urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2).status == 200)
        except OSError:
            return False

    try:
        wait_for(ready, 40, "/readyz")
        time.sleep(1.0)  # the meter's packet socket is open a moment after the capture thread starts
        server.hit(8)
        wait_for(lambda: len(read_jsonl(out)) >= 2, 20, "an alert while running")  # scored live, not at stop
        before = scrape(port)
        server.hit(4)  # flows still open or lingering at the stop: the flush must score them
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        server.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    s = summary_of(err)
    assert int(s["windows"]) == 12 and s["dropped"] == "0"
    assert int(s["verdicts"].split(":")[0]) == 12
    earlier, *alerts = read_jsonl(out)
    assert earlier == {"earlier": "run appends, never truncates"}
    assert alerts and {a["dest_port"] for a in alerts} == {server.port}
    assert len(alerts) == sum(per_class(s["alerts"]).values())
    # Episodes: the first line went out live, as the episode opened; the shutdown closes it (state in memory).
    assert alerts[0]["episode"]["state"] == "open" and alerts[-1]["episode"]["state"] == "close"
    assert len({a["episode"]["id"] for a in alerts}) == 1 and alerts[-1]["episode"]["flows"] >= 3
    assert before[("tapwatch_capture_packets_total", ())] > 0
    assert before[("tapwatch_capture_read_packets_total", ())] > 0  # counted live from the meter (issue 10)
    # Scored live, before the stop: the class of those first windows depends on their timing on a shared machine.
    assert sum(v for (name, _), v in before.items() if name == "tapwatch_inference_verdicts_total") >= 1


@pytest.mark.timeout(120)
def test_learn_captures_live_for_the_minutes_asked_and_writes_a_live_profile(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("live capture needs root (CAP_NET_RAW)")
    server, out = Server(), tmp_path / "site.profile.json"
    stop = threading.Event()

    def traffic() -> None:
        time.sleep(1.5)  # the capture's packet socket opens a moment after the command starts
        while not stop.is_set():
            server.hit(1)
            time.sleep(0.05)

    threading.Thread(target=traffic, daemon=True).start()
    started = time.monotonic()
    try:
        proc = tapwatch("learn", "--interface", "lo", "--bpf", f"tcp port {server.port}", "--minutes", "0.15",
                        "--no-novelty", "--trust-input", "--termination-linger", "0.2", "-o", str(out))  # fmt: skip
        _, err = proc.communicate(timeout=100)
    finally:
        stop.set()
        server.close()
    assert proc.returncode == 0, err
    took = time.monotonic() - started
    card = json.loads(out.read_text())["card"]
    assert card["data"][0]["kind"] == "live" and card["data"][0]["path"] == "lo (0.15 min)"
    assert card["flows"] > 20 and card["windows"] > 20 and 0 < card["span_s"] <= 12  # 9 s asked, a flush after
    assert card["poisoning"]["checked"] is False and took >= 9
    assert f"wrote {out}: {card['flows']} benign flows" in err

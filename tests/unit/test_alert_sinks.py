"""Alert sinks against real loopback receivers (UDP and TCP syslog, HTTP); the Redis stream sink on a real Redis:
tests/redis/test_alert_sinks_redis.py."""

from __future__ import annotations

import io
import json
import re
import socket
import socketserver
import threading
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.alert import Alert
from tapwatch.alerting.errors import SinkError
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.netsinks import SyslogSink, Transport, WebhookSink
from tapwatch.alerting.sinks import FileSink, RedisStreamSink, SinkSet, StdoutSink
from tapwatch.bus.streams import ALERTS_STREAM, MemoryBus
from tests.support.alerting import WebhookServer, emit, make_alert, read_jsonl
from tests.support.env import free_port

SYSLOG_RE = re.compile(rb"^<(\d+)>1 (\S+) (\S+) tapwatch (\d+) alert - (\{.*\})$")


def failures(m: AlerterMetrics, sink: str) -> float:
    return m.registry.get_sample_value("tapwatch_alerting_sink_failures_total", {"sink": sink}) or 0.0


def test_stdout_sink_writes_one_json_line() -> None:
    out = io.StringIO()
    emit(StdoutSink(out), make_alert())
    assert json.loads(out.getvalue())["event_type"] == "alert" and out.getvalue().count("\n") == 1


def test_file_sink_rotates_by_size_and_keeps_n(tmp_path: Path) -> None:
    path = tmp_path / "out" / "alerts.jsonl"
    sink = FileSink(path, max_bytes=4096, keep=2)
    line_len = len(make_alert().to_json()) + 1
    n = 40
    for i in range(n):
        emit(sink, make_alert(i))
    sink.close()
    assert path.exists() and Path(f"{path}.1").exists() and Path(f"{path}.2").exists()
    assert not Path(f"{path}.3").exists()
    for p in (path, Path(f"{path}.1"), Path(f"{path}.2")):
        assert p.stat().st_size <= 4096
    kept = [a["flow_id"] for a in read_jsonl(Path(f"{path}.2"), Path(f"{path}.1"), path)]
    assert kept == [1000 + i for i in range(n - len(kept), n)]  # the newest alerts, in order, none torn
    assert sink.rotations >= (n * line_len) // 4096 - 1


def test_file_sink_appends_to_an_existing_file_and_keep_0_truncates(tmp_path: Path) -> None:
    path = tmp_path / "alerts.jsonl"
    for _ in range(2):
        sink = FileSink(path, max_bytes=1_000_000)
        emit(sink, make_alert())
        sink.close()
    assert len(list(read_jsonl(path))) == 2
    sink = FileSink(path, max_bytes=1024, keep=0)
    for i in range(5):
        emit(sink, make_alert(i))
    sink.close()
    assert not Path(f"{path}.1").exists() and 1 <= len(list(read_jsonl(path))) < 5


def udp_receiver() -> tuple[socket.socket, int]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(5)
    return sock, sock.getsockname()[1]


def test_syslog_udp_rfc5424() -> None:
    sock, port = udp_receiver()
    sink = SyslogSink("127.0.0.1", port, Transport.UDP, facility=16, hostname="tap 1")
    a = make_alert(cls="Botnet")
    emit(sink, a)
    data, _ = sock.recvfrom(65535)
    sink.close()
    sock.close()
    m = SYSLOG_RE.match(data)
    assert m is not None, data
    assert int(m.group(1)) == 16 * 8 + 2  # local0, severity 1 -> critical
    assert m.group(2) == b"2023-11-14T22:13:20.000Z" and m.group(3) == b"tap_1"
    assert json.loads(m.group(5))["ml"]["alert_id"] == a.id


class _Frames(socketserver.BaseRequestHandler):
    frames: list[bytes]

    def handle(self) -> None:
        buf = b""
        while chunk := self.request.recv(65536):
            buf += chunk
            while b" " in buf:
                size, rest = buf.split(b" ", 1)
                if len(rest) < int(size):
                    break
                self.frames.append(rest[: int(size)])
                buf = rest[int(size) :]


def test_syslog_tcp_octet_counting() -> None:
    frames: list[bytes] = []
    handler = type("H", (_Frames,), {"frames": frames})
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sink = SyslogSink("127.0.0.1", server.server_address[1], Transport.TCP)
    alerts = [make_alert(i, cls) for i, cls in enumerate(["PortScan", "DDoS", "Web Attack - XSS"])]
    for a in alerts:
        emit(sink, a)
    deadline = time.monotonic() + 5
    while len(frames) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    sink.close()
    server.shutdown()
    server.server_close()
    assert [int(SYSLOG_RE.match(f).group(1)) for f in frames] == [16 * 8 + 5, 16 * 8 + 4, 16 * 8 + 2]  # type: ignore[union-attr]
    assert [json.loads(SYSLOG_RE.match(f).group(5))["ml"]["alert_id"] for f in frames] == [a.id for a in alerts]  # type: ignore[union-attr]


def test_syslog_tcp_down_fails_fast_during_backoff() -> None:
    sink = SyslogSink("127.0.0.1", free_port(), Transport.TCP, timeout_s=1.0)
    with pytest.raises(SinkError):
        emit(sink, make_alert())
    start = time.monotonic()
    for _ in range(20):
        with pytest.raises(SinkError, match="next attempt"):
            emit(sink, make_alert())
    assert time.monotonic() - start < 0.1


def test_webhook_posts_json_and_retries_5xx() -> None:
    with WebhookServer(fail_first=2, status=503) as server:
        sink = WebhookSink(server.url, retries=3, backoff_s=0.01)
        sinks = SinkSet([sink])
        a = make_alert()
        assert sinks.emit(a) == 1
        assert sink.flush(5)
        sink.close()
    assert server.requests == 3 and [b["ml"]["alert_id"] for b in server.bodies] == [a.id]
    assert sinks.health[0].failures == 0


def test_webhook_4xx_is_final_and_counted() -> None:
    m = AlerterMetrics(CollectorRegistry())
    with WebhookServer(fail_first=100, status=400) as server:
        sink = WebhookSink(server.url, retries=3, backoff_s=0.01)
        sinks = SinkSet([sink], m)
        for i in range(3):
            sinks.emit(make_alert(i))
        sink.flush(5)
        sink.close()
    assert server.requests == 3 and failures(m, "webhook") == 3
    assert m.registry.get_sample_value("tapwatch_alerting_sink_up", {"sink": "webhook"}) == 0


def test_failing_webhook_does_not_block_the_file_sink(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    m = AlerterMetrics(CollectorRegistry())
    path = tmp_path / "alerts.jsonl"
    with WebhookServer(fail_first=10_000, status=500, delay_s=0.2) as server:
        hook = WebhookSink(server.url, queue_size=5, retries=2, backoff_s=0.05, timeout_s=1.0)
        sinks = SinkSet([hook, FileSink(path)], m)
        start = time.monotonic()
        for i in range(50):
            sinks.emit(make_alert(i))
        elapsed = time.monotonic() - start
        hook.close(timeout_s=0.2)
        sinks.close()
    assert elapsed < 1.0
    assert len(list(read_jsonl(path))) == 50
    assert failures(m, "webhook") >= 40 and failures(m, "file") == 0
    failing_logs = [r for r in caplog.records if "is failing" in r.getMessage()]
    assert len(failing_logs) == 1  # logged once per state change, not per alert


def test_a_raising_sink_is_contained_and_recovery_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    class Flaky:
        kind = "stdout"
        fail = True

        def write(self, alert: Alert, line: str) -> None:
            if self.fail:
                raise RuntimeError("boom")

        def close(self) -> None:
            return None

    m = AlerterMetrics(CollectorRegistry())
    flaky, bus = Flaky(), MemoryBus()
    sinks = SinkSet([flaky, RedisStreamSink(bus)], m)
    assert [sinks.emit(make_alert(i)) for i in range(3)] == [1, 1, 1]
    flaky.fail = False
    assert sinks.emit(make_alert(4)) == 2
    assert bus.length(ALERTS_STREAM) == 4 and failures(m, "stdout") == 3
    msgs = [r.getMessage() for r in caplog.records if "alert sink stdout" in r.getMessage()]
    assert len(msgs) == 2 and "is failing" in msgs[0] and "recovered after 3 failures" in msgs[1]

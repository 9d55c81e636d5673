"""The sensor end to end: real pcaps → flow records → windows → bus (memory and a real Redis)."""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tapwatch.bus.publish import PublisherConfig
from tapwatch.bus.streams import WINDOWS_STREAM, Bus, MemoryBus, RedisBus
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.service import CaptureSettings, build_pipeline
from tapwatch.features.card import identity_card
from tapwatch.features.contract import feature_set_id
from tapwatch.features.health import HealthServer
from tapwatch.features.schema import FlowRecord, WindowEntry

PCAPS = ["zeek/dhcp/dhcp_flood.pcap", "zeek/krb/kinit.pcap", "zeek/http/methods.pcap", "zeek/ftp/bruteforce.pcap"]


def source(shared: Path, metrics: CaptureMetrics) -> PcapSource:
    return PcapSource([str(shared / "pcaps" / p) for p in PCAPS], CaptureConfig(sensor="t"), metrics)


def make_bus(kind: str, request: pytest.FixtureRequest) -> Bus:
    return MemoryBus() if kind == "memory" else RedisBus(request.getfixturevalue("redis_server").url)


@pytest.mark.parametrize("kind", ["memory", "redis"])
def test_every_flow_becomes_one_window_on_the_stream(kind: str, shared: Path, request: pytest.FixtureRequest) -> None:
    bus = make_bus(kind, request)
    metrics = CaptureMetrics(CollectorRegistry())
    pipe = build_pipeline(CaptureSettings(), bus, identity_card(10), metrics)
    records: list[FlowRecord] = []

    def tee() -> Iterator[FlowRecord]:
        for r in source(shared, metrics):
            records.append(r)
            yield r

    pipe.feed(tee())
    counts = pipe.publisher.close()
    assert len(records) > 300
    assert counts.produced == counts.sent == len(records) == bus.length(WINDOWS_STREAM)
    bus.ensure_group(WINDOWS_STREAM, "check")
    entries = bus.read_group(WINDOWS_STREAM, "check", "c", count=10_000, block_ms=100)
    decoded = [WindowEntry.decode(f) for _, f in entries]
    assert [w.flow.flow_id for w in decoded] == [r.meta.flow_id for r in records]
    assert all(w.feature_set_id == feature_set_id(10) and w.tensor.shape == (10, 82) for w in decoded)
    # stride 1, per source host: the k-th flow of a host sees min(k, T) valid rows
    seen: dict[str, int] = {}
    for w in decoded:
        seen[w.key] = seen.get(w.key, 0) + 1
        assert w.key == w.flow.src_ip and w.valid_rows == min(seen[w.key], 10)


def _restart_midway(records: Iterator[FlowRecord], at: int, action: object) -> Iterator[FlowRecord]:
    for i, r in enumerate(records):
        if i == at:
            action()  # type: ignore[operator]
        yield r


@pytest.mark.parametrize(("buffer_limit", "keep_data"), [(100_000, True), (25, True), (100_000, False)])
def test_redis_restart_mid_capture_counts_add_up(
    buffer_limit: int, keep_data: bool, shared: Path, redis_server, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    bus = RedisBus(redis_server.url, timeout_s=0.5)
    metrics = CaptureMetrics(CollectorRegistry())
    settings = CaptureSettings(buffer_limit=buffer_limit)
    pipe = build_pipeline(settings, bus, identity_card(10), metrics)
    pipe.publisher.config = PublisherConfig(stream=WINDOWS_STREAM, batch=8, buffer_limit=buffer_limit)
    records = iter(source(shared, metrics))
    # Redis goes away after 100 windows and comes back (same port, AOF on) 150 windows later.
    stopped = _restart_midway(records, 100, redis_server.stop)
    pipe.feed(_restart_midway(stopped, 150, lambda: redis_server.restart(keep_data=keep_data)))
    counts = pipe.publisher.close(timeout_s=20)
    dropped = counts.dropped_buffer_full + counts.dropped_unreachable + counts.trimmed
    assert counts.sent + dropped == counts.produced > 300
    if buffer_limit == 25:
        assert counts.dropped_buffer_full > 0
    value = metrics.registry.get_sample_value
    assert value("tapwatch_bus_sent_windows_total") == counts.sent
    assert value("tapwatch_bus_dropped_windows_total", {"reason": "buffer_full"}) == counts.dropped_buffer_full
    stream_len = bus.length(WINDOWS_STREAM)
    if keep_data:
        assert stream_len == counts.sent  # AOF with appendfsync always: nothing sent was lost
    else:
        assert stream_len < counts.sent  # what was sent before the restart is gone with the data
    messages = [r.getMessage() for r in caplog.records]
    assert sum("unreachable" in m for m in messages) == 1, messages  # logged once per state change
    assert sum("reachable again" in m for m in messages) == 1, messages


def test_metrics_endpoint_reports_the_counted_events(shared: Path) -> None:
    registry = CollectorRegistry()
    metrics = CaptureMetrics(registry)
    pipe = build_pipeline(CaptureSettings(), MemoryBus(), identity_card(10), metrics)
    records: list[FlowRecord] = []

    def tee() -> Iterator[FlowRecord]:
        for r in source(shared, metrics):
            records.append(r)
            yield r

    pipe.feed(tee())
    pipe.publisher.close()
    server = HealthServer(registry, lambda: {"capture_running": False}, port=0).start()
    try:
        base = f"http://127.0.0.1:{server.port}"
        text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert urllib.request.urlopen(base + "/livez", timeout=5).status == 200
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(base + "/readyz", timeout=5)
        assert not_ready.value.code == 503
    finally:
        server.stop()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(text) for s in fam.samples}  # fmt: skip
    flows = sum(v for (n, _), v in samples.items() if n == "tapwatch_capture_flows_total")
    single = samples[("tapwatch_capture_single_packet_flows_total", ())]
    assert flows == len(records) + single
    assert samples[("tapwatch_features_windows_total", ())] == len(records)
    assert samples[("tapwatch_bus_sent_windows_total", ())] == len(records)
    assert samples[("tapwatch_capture_packets_total", ())] >= sum(r.meta.packets for r in records) + single
    assert samples[("tapwatch_capture_bytes_total", ())] >= sum(r.meta.bytes for r in records)
    assert ("tapwatch_build_info", (("version", "0.1.0"),)) in samples

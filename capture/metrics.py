"""Prometheus metrics of the sensor (capture, windows, bus), on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Info

from tapwatch.features.aggregates import View
from tapwatch.features.schema import ExpiryReason

BUILD_VERSION = "0.1.0"


class CaptureMetrics:
    """Counters named ``tapwatch_<stage>_<name>_<unit>``; labels come from closed sets only.

    Parameters
    ----------
    registry
        Where to register; the CLI passes the global registry, tests a fresh one.

    Example
    -------
    >>> m = CaptureMetrics(CollectorRegistry())
    >>> m.packets.inc(3)
    >>> m.registry.get_sample_value("tapwatch_capture_packets_total")
    3.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.packets = Counter(
            "tapwatch_capture_packets", "Packets in closed flows (IPv4 and IPv6, one-packet flows included).",
            registry=registry,
        )  # fmt: skip
        self.read_packets = Counter(
            "tapwatch_capture_read_packets",
            "Packets read, IP or not: pcap records, or what the live meter took after --bpf (refreshed each second).",
            registry=registry,
        )
        self.bytes = Counter("tapwatch_capture_bytes", "Link-layer bytes in closed flows.", registry=registry)
        self.flows = Counter("tapwatch_capture_flows", "Flows closed, by expiry reason.", ["reason"], registry=registry)
        for expiry in ExpiryReason:
            self.flows.labels(reason=expiry.value)
        self.single_packet = Counter(
            "tapwatch_capture_single_packet_flows",
            "One-packet flows closed; counted in the aggregates, never windowed unless --single-packet-flows "
            "(CICFlowMeter writes no flow with fewer than 2 packets).",
            registry=registry,
        )
        self.kernel_drops = Counter(
            "tapwatch_capture_kernel_drops", "Packets the kernel dropped (live capture).", registry=registry
        )
        self.windows = Counter("tapwatch_features_windows", "Windows produced.", registry=registry)
        self.evicted_keys = Counter(
            "tapwatch_features_evicted_keys", "Window keys evicted by the live-key cap (LRU).", registry=registry
        )
        self.live_keys = Gauge("tapwatch_features_live_keys", "Window keys held.", registry=registry)
        self._aggregate_metrics(registry)
        self.bus_sent = Counter("tapwatch_bus_sent_windows", "Windows written to the bus.", registry=registry)
        self.bus_dropped = Counter(
            "tapwatch_bus_dropped_windows",
            "Windows dropped before reaching the bus, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in ("buffer_full", "trimmed"):
            self.bus_dropped.labels(reason=reason)
        self.bus_buffered = Gauge(
            "tapwatch_bus_buffered_windows", "Windows waiting for the bus (Redis unreachable).", registry=registry
        )
        self.bus_connected = Gauge("tapwatch_bus_connected", "1 while the bus is reachable.", registry=registry)
        self.build = Info("tapwatch_build", "tapwatch build.", registry=registry)
        self.build.info({"version": BUILD_VERSION})

    def _aggregate_metrics(self, registry: CollectorRegistry) -> None:
        """The destination/volume view's (see :mod:`tapwatch.capture.aggregates`)."""
        self.aggregates = Counter(
            "tapwatch_capture_aggregates", "Aggregate records (finished buckets) published, by view.", ["view"],
            registry=registry,
        )  # fmt: skip
        for view in View:
            self.aggregates.labels(view=view.value)
        self.aggregate_evicted_keys = Counter(
            "tapwatch_capture_aggregate_evicted_keys",
            "Hosts whose open aggregate buckets were dropped by the key cap (a spoofed-source flood).",
            registry=registry,
        )
        self.aggregate_keys = Gauge(
            "tapwatch_capture_aggregate_keys", "Hosts holding open aggregate buckets, both views.", registry=registry
        )
        self.bus_dropped_aggregates = Counter(
            "tapwatch_bus_dropped_aggregates",
            "Aggregate records dropped before reaching the bus, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in ("buffer_full", "trimmed"):
            self.bus_dropped_aggregates.labels(reason=reason)

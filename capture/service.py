"""``tapwatch capture``: packets → flow records → per-host windows → ``tapwatch:windows``, and every flow
(one-packet flows included) → per-source and per-victim buckets → ``tapwatch:aggregates``.

With ``--redis`` windows go to Redis (pipelined XADD, bounded by XTRIM); without it they go to the
in-memory bus (the embedded mode's). Metrics and health are served while it runs. With pcap input every
flow is flushed at the end of the files and the command exits 0 (2 if a file was truncated or corrupt,
after processing its readable part); live capture runs until SIGINT or SIGTERM, then flushes.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

import click
from prometheus_client import REGISTRY, CollectorRegistry
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tapwatch.bus.publish import Hook, Publisher, PublisherConfig, PublisherCounts
from tapwatch.bus.streams import WINDOWS_STREAM, Bus, MemoryBus
from tapwatch.capture.aggregates import Aggregator, AggregatorConfig
from tapwatch.capture.meter import CaptureConfig, LiveSource, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.options import capture_config, timeout_options
from tapwatch.features.aggregates import AGGREGATES_STREAM, AggregateRecord
from tapwatch.features.card import ModelCard, identity_card, load_card
from tapwatch.features.cli import run_guarded
from tapwatch.features.errors import BadInputError, ModelCardError
from tapwatch.features.health import HealthServer
from tapwatch.features.schema import FlowRecord
from tapwatch.features.window import Windower, WindowKey

log = logging.getLogger(__name__)


class CaptureSettings(BaseSettings):
    """Settings of ``tapwatch capture`` (environment variables ``TAPWATCH_<NAME>``; options win)."""

    model_config = SettingsConfigDict(env_prefix="TAPWATCH_", extra="ignore")
    redis_url: str | None = Field(None, description="Redis URL; None uses the in-memory bus.")
    stream: str = Field(WINDOWS_STREAM, description="Stream that receives window entries.")
    stream_maxlen: int = Field(100_000, ge=100, description="Approximate bound of the stream (XTRIM ~).")
    buffer_limit: int = Field(20_000, ge=1, description="Windows buffered while Redis is unreachable.")
    card: str | None = Field(None, description="Model card JSON giving T, scaler, feature set; None: identity, T=10.")
    window_key: WindowKey | None = Field(None, description="Window key; None uses the card's (src_ip).")
    max_keys: int = Field(100_000, ge=1, description="Cap on window keys held (LRU eviction, counted).")
    metrics_host: str = Field("127.0.0.1", description="Address of /metrics, /livez, /readyz.")
    metrics_port: int = Field(9640, ge=0, le=65535, description="Port of /metrics, /livez, /readyz; 0 picks one.")
    aggregates: bool = Field(True, description="Count every flow into per-source and per-victim buckets and "
                             "publish each finished bucket (the destination/volume view).")  # fmt: skip
    aggregate_bucket_s: float = Field(
        10.0, ge=1, le=600, description="Aggregate bucket length, seconds of packet time."
    )
    aggregate_max_keys: int = Field(50_000, ge=1, description="Hosts per view with open aggregate buckets (LRU "
                                    "eviction of the least recently updated, counted).")  # fmt: skip
    aggregates_stream: str = Field(AGGREGATES_STREAM, description="Stream that receives aggregate records.")
    aggregates_maxlen: int = Field(100_000, ge=100, description="Approximate bound of the aggregates stream (XTRIM ~).")


@dataclass
class Pipeline:
    """The sensor's stages after capture, wired once.

    Every record feeds the aggregator (when there is one), whose finished buckets go to their own stream;
    windows are built only from flows of two packets or more, as CICFlowMeter cut the training data, unless
    ``single_packet_windows`` (the user's ``--single-packet-flows``). Read the source with
    :meth:`source_config` so that it yields one-packet flows for the aggregates.
    """

    windower: Windower
    publisher: Publisher
    metrics: CaptureMetrics
    aggregator: Aggregator | None = None
    aggregate_publisher: Publisher | None = None
    single_packet_windows: bool = False

    def source_config(self, config: CaptureConfig) -> CaptureConfig:
        """The config to read the source with: the user's choice of one-packet flows goes to the windows (and
        the sensor name to the aggregates); with aggregates on, the source yields every flow."""
        self.single_packet_windows = config.emit_single_packet_flows
        if self.aggregator is None:
            return config
        self.aggregator.sensor = config.sensor
        return replace(config, emit_single_packet_flows=True)

    def feed(self, source: Iterable[FlowRecord]) -> None:
        """Aggregate and window every record; at the end, publish every open aggregate bucket."""
        aggregator = self.aggregator
        for record in source:
            if aggregator is not None:
                self._publish_aggregates(aggregator.add(record))
            if record.meta.packets >= 2 or self.single_packet_windows:
                entry = self.windower.add(record)
                self.metrics.windows.inc()
                self.publisher.publish(entry.encode())
        if aggregator is not None:
            self._publish_aggregates(aggregator.flush())
        self.metrics.live_keys.set(len(self.windower))

    def _publish_aggregates(self, records: list[AggregateRecord]) -> None:
        publisher = self.aggregate_publisher
        if self.aggregator is None or publisher is None:
            return
        self.metrics.aggregate_keys.set(len(self.aggregator))
        if not records:
            return
        for rec in records:
            self.metrics.aggregates.labels(view=rec.view.value).inc()
            publisher.publish(rec.encode())
        # Buckets finish in bursts, once per bucket length: send the burst now rather than leave a partial
        # batch waiting a whole bucket for the next one.
        publisher.flush_once()

    def close(self, timeout_s: float = 10.0) -> PublisherCounts:
        """Close the window publisher, then the aggregates one; return the window publisher's counts."""
        deadline = time.monotonic() + timeout_s
        counts = self.publisher.close(timeout_s)
        if self.aggregate_publisher is not None:
            agg = self.aggregate_publisher.close(max(1.0, deadline - time.monotonic()))
            log.info("aggregates: %s", agg)
        return counts


def _window_events(metrics: CaptureMetrics) -> Hook:
    def on_event(kind: str, n: int) -> None:
        if kind == "sent":
            metrics.bus_sent.inc(n)
        elif kind in ("buffer_full", "unreachable", "trimmed"):
            metrics.bus_dropped.labels(reason=kind).inc(n)
        elif kind == "buffered":
            metrics.bus_buffered.set(n)
        elif kind == "connected":
            metrics.bus_connected.set(n)

    return on_event


def _aggregate_events(metrics: CaptureMetrics) -> Hook:
    """Only the losses: the window publisher already reports the bus's state, and the records published are
    counted by view as they are handed over."""

    def on_event(kind: str, n: int) -> None:
        if kind in ("buffer_full", "unreachable", "trimmed"):
            metrics.bus_dropped_aggregates.labels(reason=kind).inc(n)

    return on_event


def build_pipeline(
    settings: CaptureSettings, bus: Bus, card: ModelCard, metrics: CaptureMetrics, single_packet_windows: bool = False
) -> Pipeline:
    """The sensor's stages on ``bus``: windows to ``settings.stream``, aggregates to ``settings.aggregates_stream``."""
    metrics.bus_connected.set(1)
    windower = Windower(card, settings.window_key, settings.max_keys, on_evict=metrics.evicted_keys.inc)
    cfg = PublisherConfig(stream=settings.stream, maxlen=settings.stream_maxlen, buffer_limit=settings.buffer_limit)
    pipe = Pipeline(windower, Publisher(bus, cfg, _window_events(metrics)), metrics)
    pipe.single_packet_windows = single_packet_windows
    if settings.aggregates:
        agg_config = AggregatorConfig(bucket_s=settings.aggregate_bucket_s, max_keys=settings.aggregate_max_keys)
        pipe.aggregator = Aggregator(agg_config, CaptureConfig().sensor, metrics.aggregate_evicted_keys.inc)
        agg_cfg = PublisherConfig(
            settings.aggregates_stream, settings.aggregates_maxlen, buffer_limit=settings.buffer_limit
        )
        pipe.aggregate_publisher = Publisher(bus, agg_cfg, _aggregate_events(metrics))
    return pipe


def load_model_card(path: str | None) -> ModelCard:
    if path is None:
        return identity_card(10)
    try:
        return load_card(path)
    except ModelCardError as err:
        raise BadInputError(path, str(err)) from err


def run_capture(
    settings: CaptureSettings,
    config: CaptureConfig,
    interface: str | None,
    pcaps: list[str],
    registry: CollectorRegistry,
) -> tuple[int, PublisherCounts]:
    """Run the sensor until the pcaps end or a stop signal; return (exit code, publisher counts)."""
    metrics = CaptureMetrics(registry)
    card = load_model_card(settings.card)
    if settings.redis_url:
        from tapwatch.bus.redisbus import RedisBus  # only a sensor on Redis imports redis-py

        bus: Bus = RedisBus(settings.redis_url)
    else:
        bus = MemoryBus()
    pipe = build_pipeline(settings, bus, card, metrics)
    config = pipe.source_config(config)
    source: Any = LiveSource(interface, config, metrics) if interface else PcapSource(pcaps, config, metrics)
    if interface:  # live: send each window at once; a quiet link would leave a partial batch waiting
        pipe.publisher.config = replace(pipe.publisher.config, batch=1)
    running = {"capture": True}

    def ready() -> dict[str, bool]:
        return {"capture_running": running["capture"], "bus_reachable": pipe.publisher.connected}

    http = HealthServer(registry, ready, settings.metrics_host, settings.metrics_port).start()
    code = 0
    try:
        if isinstance(source, LiveSource):
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, lambda *_: source.stop())
            pipe.feed(source.records())
        else:
            pipe.feed(source)
            for problem in source.problems:
                click.echo(f"tapwatch: error: {problem.line('its readable part was processed')}", err=True)
                code = 2
    finally:
        running["capture"] = False
        counts = pipe.close()
        http.stop()
    log.info("capture done: %s", counts)
    return code, counts


@click.command("capture")
@click.option("-i", "--interface", help="Capture live on this interface (needs CAP_NET_RAW).")
@click.option("-r", "--pcap", "pcaps", multiple=True, type=click.Path(path_type=str),
              help="Read this pcap/pcapng file (repeat for several, read as one capture).")  # fmt: skip
@click.option("--redis", "redis_url", envvar="TAPWATCH_REDIS_URL",
              help="Redis URL, e.g. redis://:PASSWORD@host:6379/0 [default: in-memory bus].")  # fmt: skip
@click.option("--card", envvar="TAPWATCH_CARD", help="Model card JSON (T, scaler, feature set).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, help="Port of /metrics (0: any).")
@click.option("--metrics-host", default=None, help="Address of /metrics [default: 127.0.0.1].")
@timeout_options
def capture_command(interface: str | None, pcaps: tuple[str, ...], **kw: Any) -> None:
    """Capture flows, build per-host windows and put them on the windows stream.

    Examples: tapwatch capture -r capture/samples/sample.pcap --redis redis://localhost:6379/0 ;
    sudo tapwatch capture -i IFACE --redis redis://:PASSWORD@HOST:6379/0
    """
    if bool(interface) == bool(pcaps):
        raise click.UsageError("give exactly one of --interface or --pcap")

    def body() -> int:
        overrides = {
            k: kw.pop(k) for k in ("redis_url", "card", "metrics_port", "metrics_host") if kw.get(k) is not None
        }
        settings = CaptureSettings(**overrides)
        if settings.redis_url is None:
            log.info("no --redis: windows go to the in-memory bus")
        code, counts = run_capture(settings, capture_config(**kw), interface, list(pcaps), REGISTRY)
        dropped = counts.dropped_buffer_full + counts.dropped_unreachable + counts.trimmed
        click.echo(
            f"tapwatch capture: {counts.produced} windows produced, {counts.sent} sent, "
            f"{dropped} dropped ({counts.trimmed} trimmed)",
            err=True,
        )
        return code

    run_guarded(body)

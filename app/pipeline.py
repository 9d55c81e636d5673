"""The embedded pipeline: the sensor's windows, the inference :class:`Worker` and the :class:`Alerter` in one
process, over one in-memory bus, with one ONNX Runtime session for verdicts and explanations.

Threads: the caller's thread reads flow records and publishes windows (the sensor's :class:`Pipeline`); one
thread runs the worker loop and one the alerter loop (plus the alerter's explanation thread). The bus is a
:class:`~tapwatch.bus.bounded.BoundedMemoryBus`: a stage that outruns the next one waits instead of
dropping, so every window gets a verdict unless it is dead-lettered, and both are counted.

Shutdown, in pipeline order: the sensor flushes its open flows and its publisher, then the pipeline waits
until every window is acknowledged by the worker, stops the worker, waits until every verdict is
acknowledged by the alerter, stops the alerter and closes its sinks. A stage that fails wakes every stage
waiting on it (:class:`~tapwatch.bus.bounded.StageFailed`) rather than leaving it blocked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from prometheus_client import CollectorRegistry

from tapwatch.alerting.alerter import Alerter
from tapwatch.alerting.episode_alerter import EpisodeAlerter
from tapwatch.alerting.explain import onnx_score_fn
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.service import build_alerter, build_episode_alerter, standing_clock
from tapwatch.alerting.settings import AlertMode
from tapwatch.app.settings import EmbeddedConfig, sensor_settings
from tapwatch.app.summary import Summary
from tapwatch.bus.bounded import BoundedMemoryBus, StageFailed
from tapwatch.bus.state import MemoryStateStore
from tapwatch.bus.streams import VERDICTS_STREAM, WINDOWS_STREAM
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.service import Pipeline, build_pipeline
from tapwatch.features.aggregates import AGGREGATES_STREAM
from tapwatch.features.errors import ConfigError
from tapwatch.features.schema import FlowRecord
from tapwatch.inference.config import WorkerConfig
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import Model
from tapwatch.inference.service import worker_profile
from tapwatch.inference.worker import Worker

log = logging.getLogger(__name__)

# How long a stage loop may wait for new entries: it bounds how soon a stage notices a stop request. The
# memory bus wakes a waiting reader as soon as an entry arrives, so it adds no latency.
STAGE_BLOCK_MS = 100


class StageThread:
    """Run ``loop(stop)`` in a daemon thread; an exception is kept and reported to the bus.

    Parameters
    ----------
    name
        The stage (thread name and log lines).
    loop
        ``Worker.run`` or ``Alerter.run``: runs until its ``stop`` event is set.
    bus
        Told of a failure, so that no stage stays blocked on a dead one.
    """

    def __init__(self, name: str, loop: Callable[[threading.Event], None], bus: BoundedMemoryBus) -> None:
        self.name = name
        self.loop = loop
        self.bus = bus
        self.stop = threading.Event()
        self.error: StageFailed | None = None
        self.thread = threading.Thread(target=self._run, name=f"tapwatch-{name}", daemon=True)

    def _run(self) -> None:
        try:
            self.loop(self.stop)
        except BaseException as err:  # any failure must reach the other stages, which would wait forever
            log.error("embedded %s failed", self.name, exc_info=True)
            self.error = StageFailed(self.name, err)
            self.bus.fail(self.error)

    def start(self) -> StageThread:
        self.thread.start()
        return self

    def finish(self, timeout_s: float = 30.0) -> None:
        self.stop.set()
        self.bus.wake()  # a loop blocked in a read sees the stop now, not at the end of its block time
        self.thread.join(timeout_s)
        if self.thread.is_alive():
            log.error("embedded %s did not stop within %s s", self.name, timeout_s)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()


class Embedded:
    """Sensor windows → worker → alerter in one process.

    Parameters
    ----------
    model
        The checked model: its card drives the window builder (T, scaler, feature set), its session serves
        the verdicts and the explanations.
    config
        Settings of the three stages.
    registry
        One registry for the sensor's, the worker's and the alerter's metrics.
    offline
        The input is a capture file (``detect``): episodes run on packet time alone (see
        :func:`~tapwatch.alerting.service.build_episode_alerter`).

    Example
    -------
    >>> import tempfile
    >>> from tapwatch.alerting.settings import AlerterSettings
    >>> from tapwatch.app.settings import EmbeddedSettings
    >>> from tapwatch.capture.service import CaptureSettings
    >>> from tapwatch.inference.model import load_model
    >>> from tests.support.tiny_model import write_tiny_model
    >>> with tempfile.TemporaryDirectory() as d:
    ...     model = load_model(write_tiny_model(d, window_length=4).onnx_path)
    >>> config = EmbeddedConfig(EmbeddedSettings(), AlerterSettings(explain=False), CaptureSettings())
    >>> summary = Embedded(model, config, CollectorRegistry()).process([])
    >>> summary.windows, summary.balanced
    (0, True)
    """

    def __init__(
        self,
        model: Model,
        config: EmbeddedConfig,
        registry: CollectorRegistry,
        offline: bool = False,
        capture_metrics: CaptureMetrics | None = None,
    ) -> None:
        s = config.settings
        if config.capture.stream_maxlen < s.backlog + s.batch_size:
            # The sensor's publisher trims the stream to stream_maxlen: it must never cut into the backlog.
            raise ConfigError("stream_maxlen", f"must be >= backlog + batch_size ({s.backlog + s.batch_size})")
        self.model = model
        self.registry = registry
        capture = sensor_settings(config)
        if capture.aggregates_maxlen < s.backlog:
            raise ConfigError("aggregates_maxlen", f"must be >= backlog ({s.backlog})")
        # The episode alerter reads the aggregates (a few per 10 s bucket and host, far fewer than windows): the
        # same bound as the windows'. Per-window alerts read none, so the sensor makes none (a bound nobody
        # drains would stop the sensor).
        bounds = {WINDOWS_STREAM: s.backlog, VERDICTS_STREAM: s.backlog}
        self.bus = BoundedMemoryBus({**bounds, AGGREGATES_STREAM: s.backlog} if capture.aggregates else bounds)
        sensor_metrics = capture_metrics or CaptureMetrics(registry)
        self.pipeline: Pipeline = build_pipeline(capture, self.bus, model.card, sensor_metrics)
        worker_config = WorkerConfig(batch_size=s.batch_size, block_ms=STAGE_BLOCK_MS, consumer="embedded")
        profile_file = Path(config.alerter.profile) if config.alerter.profile else None
        # fixed for the run, as the model is
        profile, _ = worker_profile(profile_file, model, s.threads_for(offline), 0.0)
        self.worker = Worker(self.bus, model, worker_config, InferenceMetrics(registry), profile=profile)
        alerter_settings = config.alerter.model_copy(
            update={"redis_url": None, "redis_sink": False, "block_ms": STAGE_BLOCK_MS, "alerter_consumer": "embedded",
                    "episode_explain_in_line": offline}  # a pcap's lines are read afterwards: each explained
        )  # fmt: skip
        score = onnx_score_fn(model.session, model.card)  # the worker's session: the model is loaded once
        metrics = AlerterMetrics(registry)
        self.alerter: Alerter | EpisodeAlerter
        if alerter_settings.alert_mode is AlertMode.EPISODES:
            # offline (a pcap): episodes on packet time alone, the same however fast the machine reads it
            clock = standing_clock if offline else time.monotonic
            self.alerter = build_episode_alerter(alerter_settings, self.bus, metrics, model.card, score,
                                                 MemoryStateStore(), clock, model.onnx_path)  # fmt: skip
        else:
            self.alerter = build_alerter(alerter_settings, self.bus, metrics, model.card, score)
        self.stages = [
            StageThread("worker", self.worker.run, self.bus),
            StageThread("alerter", self.alerter.run, self.bus),
        ]
        self.capturing = threading.Event()
        self.started_at = time.monotonic()

    def ready(self) -> dict[str, bool]:
        """``/readyz`` checks of the whole pipeline."""
        checks = {"capture_running": self.capturing.is_set(), "stages_running": all(s.alive for s in self.stages)}
        return {**checks, **self.worker.ready(), **self.alerter.ready()}

    def process(self, records: Iterable[FlowRecord]) -> Summary:
        """Feed every record through the pipeline, then drain every stage; return the counts."""
        self.started_at = time.monotonic()
        for stage in self.stages:
            stage.start()
        self.capturing.set()
        try:
            self.pipeline.feed(records)
        finally:
            self.capturing.clear()
            self._shutdown()
        return self.summary()

    def _shutdown(self) -> None:
        """Drain in pipeline order (see the module docstring); a failed stage stops the others."""
        worker = self.stages[0]
        try:
            self.pipeline.close()
            self.bus.wait_drained(WINDOWS_STREAM)
            worker.finish()
            self.bus.wait_drained(VERDICTS_STREAM)
            if AGGREGATES_STREAM in self.bus.bounds:
                self.bus.wait_drained(AGGREGATES_STREAM)
        finally:
            for stage in self.stages:
                stage.finish()
            if isinstance(self.alerter, EpisodeAlerter):
                self.alerter.close(end_of_input=True)  # the episodes live in this process: close them all
            else:
                self.alerter.close()
        for stage in self.stages:
            if stage.error is not None:
                raise stage.error

    def summary(self) -> Summary:
        return Summary.from_registry(self.registry, self.model.card, time.monotonic() - self.started_at)

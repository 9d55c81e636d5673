"""``tapwatch worker`` as a service: settings → model, Redis bus, metrics, health, signals → the loop.

Signals (after rq's ``request_stop``/``request_force_stop``): the first SIGTERM or SIGINT lets the worker
finish, write and ack the batch in hand, then the process exits 0; a second one exits at once (its
unacked entries stay pending and another worker claims them). SIGHUP reloads the model before the next
batch.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import FrameType

from prometheus_client import CollectorRegistry, Info

from tapwatch.bus.stats import RedisGroupStats
from tapwatch.bus.streams import RedisBus
from tapwatch.features.errors import BadInputError
from tapwatch.features.health import HealthServer
from tapwatch.features.profile import profile_to_use
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import Model, ModelRejected
from tapwatch.inference.profiled import ProfileReloader, ServedProfile, serve_profile
from tapwatch.inference.reload import ModelReloader
from tapwatch.inference.settings import WorkerSettings
from tapwatch.inference.worker import Worker

log = logging.getLogger(__name__)

# Redis holds a XREADGROUP for up to block_ms; the socket must wait that long plus a round trip.
SOCKET_MARGIN_S = 2.0


@dataclass
class WorkerService:
    """A worker wired to Redis with its health server (not started)."""

    worker: Worker
    http: HealthServer


def _build_version() -> str:
    try:
        return version("tapwatch")
    except PackageNotFoundError:
        return "unknown"


def worker_profile(
    path: Path | None, model: Model, threads: int, poll_s: float
) -> tuple[ServedProfile | None, ProfileReloader | None]:
    """``--profile``, else the model's default profile beside it when there is one, and its reloader.

    A refused profile at start-up is a one-line error (the service does not start on a profile it cannot use).
    """
    where = profile_to_use(path, model.onnx_path)
    if where is None:
        return None, None
    served = serve_profile(where, model, threads)
    log.info("site profile %s (learned on %d flows; novelty %s)", where, served.profile.card.flows,
             "on" if served.scorer else "off")  # fmt: skip
    return served, ProfileReloader(where, poll_s)


def build_service(settings: WorkerSettings, registry: CollectorRegistry) -> WorkerService:
    """Load and check the model, connect the bus lazily, register metrics; raise BadInputError on a bad model."""
    if settings.model is None:
        raise BadInputError("setting model (--model or TAPWATCH_MODEL)", "no ONNX model given")
    metrics = InferenceMetrics(registry)
    Info("tapwatch_build", "tapwatch build.", registry=registry).info({"version": _build_version()})
    reloader = ModelReloader(settings.model, settings.card, settings.threads, settings.reload_poll_s)
    try:
        model = reloader.load()
    except ModelRejected as err:
        raise BadInputError(str(err.onnx_path), f"model refused: {err.problem}") from err
    profile, profile_reloader = worker_profile(settings.profile, model, settings.threads, settings.reload_poll_s)
    bus = RedisBus(settings.redis_url, timeout_s=settings.block_ms / 1000 + SOCKET_MARGIN_S)
    worker = Worker(bus, model, settings.to_config(), metrics, reloader, RedisGroupStats(bus), profile,
                    profile_reloader)  # fmt: skip
    http = HealthServer(registry, worker.ready, settings.metrics_host, settings.metrics_port)
    return WorkerService(worker, http)


def install_signals(stop: threading.Event, worker: Worker) -> None:
    """SIGTERM/SIGINT: drain then exit, twice: exit now. SIGHUP: reload the model."""

    def on_stop(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("worker %s: second %s, exiting now; unacked entries stay pending", worker.consumer, name)
            os._exit(128 + signum)
        log.warning("worker %s: %s, finishing the batch in hand (send it again to exit now)", worker.consumer, name)
        stop.set()

    def on_hup(signum: int, frame: FrameType | None) -> None:
        worker.request_reload()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, on_hup)


def run(settings: WorkerSettings, registry: CollectorRegistry) -> int:
    """Run the worker until a stop signal; return the exit code (0 after a drain)."""
    service = build_service(settings, registry)
    worker, c = service.worker, service.worker.config
    stop = threading.Event()
    install_signals(stop, worker)
    service.http.start()
    log.info("worker %s: group %s on %s, model %s %s", worker.consumer, c.group, c.stream, worker.model.card.name,
             worker.model.card.version)  # fmt: skip
    try:
        worker.run(stop)
    finally:
        service.http.stop()
    log.info("worker %s: stopped", worker.consumer)
    return 0

"""Settings of ``tapwatch detect`` and ``tapwatch run``, apart from the pipeline they configure.

``detect`` reads them, starts its meter and only then imports the stages (:mod:`tapwatch.app.pipeline`: ONNX
Runtime, the alerter), which load while the meter reads the capture.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from tapwatch.alerting.settings import AlerterSettings, AlertMode
from tapwatch.capture.service import CaptureSettings


class EmbeddedSettings(BaseSettings):
    """Settings of ``tapwatch detect`` and ``tapwatch run`` (environment ``TAPWATCH_<NAME>``; options win).

    The alerter part (sinks, suppression, explanations) is :class:`~tapwatch.alerting.settings.AlerterSettings`
    and the sensor part (window key, key cap) :class:`~tapwatch.capture.service.CaptureSettings`, read from the
    same environment.
    """

    model_config = SettingsConfigDict(env_prefix="TAPWATCH_", extra="ignore")
    model: Path | None = Field(None, description="ONNX model; None: the shipped deployment model under models/.")
    card: Path | None = Field(None, description="Its model card; None: NAME.card.json or NAME.json beside it.")
    threads: int | None = Field(
        None,
        ge=1,
        le=64,
        description="ONNX Runtime intra-op threads (verdicts and "
        "explanations); None: detect uses the usable cores (at most 4), run one.",
    )

    def threads_for(self, offline: bool) -> int:
        """The threads to use: ``detect`` (offline) has the machine to itself once the meter has read the capture,
        while ``run`` leaves the cores to the meter, which must keep up with the wire.

        >>> EmbeddedSettings().threads_for(False), EmbeddedSettings(threads=3).threads_for(True)
        (1, 3)
        """
        if self.threads is not None:
            return self.threads
        return min(4, len(os.sched_getaffinity(0))) if offline else 1

    batch_size: int = Field(64, ge=1, le=4096, description="Windows per model run.")
    # 512 windows are eight full batches (1.7 MB at T = 10 and 82 float32 features): the sensor refills a batch
    # far faster than the model scores one, so the worker never starves. More costs time, not only memory:
    # MemoryBus.read_group scans the stream's entries on every read, and the stream holds up to this many.
    backlog: int = Field(512, ge=1, le=1_000_000, description="Windows (and verdicts) in memory before the "
                         "producer waits for the consumer.")  # fmt: skip
    metrics_host: str = Field("127.0.0.1", description="Address of /metrics, /livez, /readyz (run).")
    metrics_port: int = Field(9640, ge=0, le=65535, description="Port of /metrics, /livez, /readyz (run); 0: any.")


def sensor_settings(config: EmbeddedConfig) -> CaptureSettings:
    """The sensor's settings in one process: aggregates only for the episode alerter (which alone reads them)."""
    if config.alerter.alert_mode is AlertMode.EPISODES:
        return config.capture
    return config.capture.model_copy(update={"aggregates": False})


@dataclass(frozen=True)
class EmbeddedConfig:
    """Everything the embedded pipeline is built from, read once by the command."""

    settings: EmbeddedSettings
    alerter: AlerterSettings
    capture: CaptureSettings

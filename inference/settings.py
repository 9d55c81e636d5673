"""Settings of ``tapwatch worker`` (environment variables ``TAPWATCH_<NAME>``; command-line options win)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from tapwatch.features.errors import ConfigError
from tapwatch.inference.config import WorkerConfig

_D = WorkerConfig()


class WorkerSettings(BaseSettings):
    """Everything ``tapwatch worker`` can be told; built once in ``main`` and passed down.

    Example
    -------
    >>> s = WorkerSettings(model="m.onnx", batch_size=32)
    >>> s.to_config().batch_size, s.to_config().group
    (32, 'workers')
    """

    model_config = SettingsConfigDict(env_prefix="TAPWATCH_", extra="ignore")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (redis://[:password@]host:port/db).")
    model: Path | None = Field(None, description="The ONNX model file; required.")
    card: Path | None = Field(None, description="Its model card; None: NAME.card.json or NAME.json beside it.")
    profile: Path | None = Field(None, description="Site profile (tapwatch learn); None: NAME.profile.json beside "
                                 "the model when there is one.")  # fmt: skip
    threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads per session.")
    reload_poll_s: float = Field(2.0, ge=0, le=3600, description="Model file poll interval; 0 turns polling off.")
    stream: str = Field(_D.stream, min_length=1, description="Stream of window entries.")
    worker_group: str = Field(_D.group, min_length=1, description="Consumer group of the workers.")
    worker_consumer: str = Field(_D.consumer, description="This worker's consumer name; empty: <host>-<pid>.")
    verdicts_stream: str = Field(_D.verdicts_stream, min_length=1, description="Stream that receives verdicts.")
    verdicts_maxlen: int = Field(_D.verdicts_maxlen, ge=100, description="Approximate bound of the verdict stream.")
    dead_stream: str = Field(_D.dead_stream, min_length=1, description="Dead-letter stream.")
    dead_maxlen: int = Field(_D.dead_maxlen, ge=100, description="Approximate bound of the dead-letter stream.")
    batch_size: int = Field(_D.batch_size, ge=1, le=4096, description="Entries per read and per model run.")
    block_ms: int = Field(_D.block_ms, ge=1, le=30_000, description="Longest wait for new entries per read (ms).")
    claim_idle_ms: int = Field(_D.claim_idle_ms, ge=100, description="Pending time after which entries are claimed.")
    claim_interval_s: float = Field(_D.claim_interval_s, gt=0, le=3600, description="How often to look for them.")
    backoff_initial_s: float = Field(_D.backoff_initial_s, gt=0, le=60, description="First wait when Redis is down.")
    backoff_max_s: float = Field(_D.backoff_max_s, gt=0, le=300, description="Cap of the doubling backoff.")
    stats_interval_s: float = Field(_D.stats_interval_s, gt=0, le=3600, description="Pending/lag gauge refresh.")
    drain_timeout_s: float = Field(_D.drain_timeout_s, ge=0, le=600, description="Retry time for the last batch.")
    ready_max_lag: int = Field(_D.ready_max_lag, ge=0, description="/readyz fails above this group lag; 0: never.")
    max_entry_bytes: int = Field(_D.max_entry_bytes, ge=16_384, le=512 * 2**20, description="Largest window entry "
                                 "decoded (bytes); a larger one is dead-lettered unparsed (too_large).")  # fmt: skip
    metrics_host: str = Field("127.0.0.1", description="Address of /metrics, /livez, /readyz.")
    metrics_port: int = Field(9641, ge=0, le=65535, description="Port of /metrics, /livez, /readyz; 0 picks one.")

    def to_config(self) -> WorkerConfig:
        """The loop's part of the settings."""
        names = WorkerConfig.__dataclass_fields__
        fields = {k: v for k, v in self.model_dump().items() if k in names}
        return WorkerConfig(**fields, group=self.worker_group, consumer=self.worker_consumer)


# Settings that have a command-line option, and its name (the others are set by environment only).
OPTIONS = {"redis_url": "--redis", "model": "--model", "card": "--card", "batch_size": "--batch-size",
           "block_ms": "--block-ms", "threads": "--threads", "claim_idle_ms": "--claim-idle-ms",
           "reload_poll_s": "--reload-poll", "worker_consumer": "--consumer", "metrics_port": "--metrics-port",
           "metrics_host": "--metrics-host"}  # fmt: skip


def build_settings(overrides: dict[str, Any]) -> WorkerSettings:
    """Settings from the environment and ``overrides``; a bad value raises :class:`ConfigError` naming it."""
    try:
        settings = WorkerSettings(**overrides)
    except ValidationError as err:
        first = err.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "settings"
        option = f"{OPTIONS[key]} or " if key in OPTIONS else ""
        where = f"setting {key} ({option}TAPWATCH_{key.upper()})"
        raise ConfigError(where, f"{first['msg']} (got {first.get('input')!r})") from err
    if settings.model is None:
        raise ConfigError("setting model (--model or TAPWATCH_MODEL)", "no ONNX model given")
    if settings.backoff_initial_s > settings.backoff_max_s:
        raise ConfigError("setting backoff_initial_s", f"must be <= backoff_max_s ({settings.backoff_max_s})")
    return settings

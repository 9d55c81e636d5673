"""Settings of ``tapwatch alerter`` (and of the alerter inside the embedded ``detect``/``run`` modes).

Environment variables ``TAPWATCH_<FIELD>``; command-line options win. Built once in ``main`` and passed down;
library code never reads the environment.
"""

from __future__ import annotations

import os
import socket
from dataclasses import replace
from enum import Enum

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tapwatch.bus.consumer import ConsumerConfig
from tapwatch.bus.entries import MAX_ENTRY_BYTES
from tapwatch.bus.streams import ALERTS_STREAM, DEAD_STREAM, VERDICTS_STREAM
from tapwatch.features.aggregates import AGGREGATES_STREAM

# The alerter's consumer loop has no settings for these (no options, no environment variables): Redis down, it
# retries after 0.1 s, doubling to 5 s; at stop it tries once to finish its work, then leaves it pending (another
# alerter claims it) rather than hold up the shutdown.
LOOP_BACKOFF_INITIAL_S = 0.1
LOOP_BACKOFF_MAX_S = 5.0
LOOP_DRAIN_TIMEOUT_S = 0.0


class AlertMode(str, Enum):
    """What the alerter writes."""

    EPISODES = "episodes"
    FLOWS = "flows"


def default_consumer() -> str:
    """A consumer name unique per process and stable for its life: ``<host>-<pid>``."""
    return f"{socket.gethostname()}-{os.getpid()}"


class AlerterSettings(BaseSettings):
    """Every setting of the alerter; see ``docs/alerts.md`` and ``tapwatch alerter --help``."""

    model_config = SettingsConfigDict(env_prefix="TAPWATCH_", extra="ignore")

    redis_url: str | None = Field(None, description="Redis URL; None is the in-memory bus (embedded mode only).")
    verdicts_stream: str = Field(VERDICTS_STREAM, description="Stream the verdicts are read from.")
    alerter_group: str = Field("alerters", description="Consumer group on the verdicts stream.")
    alerter_consumer: str = Field(default_factory=default_consumer, description="This process's consumer name.")
    read_count: int = Field(64, ge=1, le=10_000, description="Verdicts per XREADGROUP.")
    # >= 1: XREADGROUP BLOCK 0 waits forever on Redis; < 1500: RedisBus's socket timeout is 2 s, and an idle
    # read must not look like a dead server.
    block_ms: int = Field(1000, ge=1, le=1500, description="XREADGROUP block time; also bounds stop latency.")
    claim_idle_ms: int = Field(30_000, ge=0, description="Claim verdicts pending this long in any alerter.")
    claim_interval_s: float = Field(10.0, gt=0, description="How often to look for stale pending verdicts.")
    dead_stream: str = Field(DEAD_STREAM, description="Where malformed verdicts go, with the reason.")
    max_entry_bytes: int = Field(
        MAX_ENTRY_BYTES,
        ge=16_384,
        le=512 * 2**20,
        description="Largest verdict or aggregate entry decoded (field names and values, bytes); a larger one is "
        "dead-lettered unparsed (too_large). 1 MiB: three times the largest verdict a card allows (T = 1024).",
    )
    dedup_ttl_s: int = Field(
        3600, ge=60, le=30 * 86400, description="Lifetime of the per-window 'alerted' key (one Redis key per alert)."
    )

    card: str | None = Field(None, description="Model card JSON; default: the card beside --onnx, if given.")
    onnx: str | None = Field(None, description="ONNX file; default: the card's onnx.file beside the card.")
    reload_poll_s: float = Field(
        2.0, ge=0, le=3600, description="Poll the model files this often and reload a changed card; 0: never."
    )
    signature_family: str | None = Field(None, description="Model family for signature ids; default from the name.")

    threshold_file: str | None = Field(None, description="Suricata threshold.config style suppression file.")
    threshold_max_entries: int = Field(100_000, ge=1, description="Cap on threshold tracking entries (LRU).")

    explain: bool | None = Field(
        None,
        description="LIME explanations: True requires them (a card with "
        "feature_stats and its ONNX file), False never, None when the card allows.",
    )
    explain_samples: int = Field(500, ge=10, le=100_000, description="LIME perturbed samples per explanation.")
    explain_top_k: int = Field(5, ge=1, le=50, description="Features per explanation.")
    explain_per_second: float = Field(10.0, ge=0, description="Explanations per second (budget); 0: none.")
    explain_queue: int = Field(8, ge=1, le=1000, description="Explanations waiting at once.")
    explain_deadline_ms: int = Field(200, ge=1, le=60_000, description="Longest wait of an alert for LIME.")
    explain_cpu_share: float = Field(
        0.25, ge=0, le=64, description="CPU seconds of explanation per second (a fraction of one core); 0: none."
    )
    explain_threads: int = Field(1, ge=1, le=64, description="ONNX Runtime intra-op threads of the explainer.")
    explain_seed: int | None = Field(None, description="LIME sampler seed (reproducible explanations).")
    episode_explain_in_line: bool = Field(
        False,
        description="Episode lines wait for LIME (detect: a pcap's lines are read afterwards, every episode explained);"
        " off: a line goes out at once, and LIME, within the explanation budget, comes with the episode's next line.",
    )

    stdout: bool = Field(False, description="Write EVE lines to standard output.")
    alert_file: str | None = Field(None, description="JSON-lines alert file.")
    alert_file_max_bytes: int = Field(100 * 2**20, ge=1024, description="Rotate the alert file at this size.")
    alert_file_keep: int = Field(5, ge=0, le=1000, description="Rotated alert files kept.")
    redis_sink: bool | None = Field(None, description="Alerts to the alerts stream; default: on with Redis.")
    alerts_stream: str = Field(ALERTS_STREAM, description="Stream of the Redis sink.")
    alerts_stream_maxlen: int = Field(100_000, ge=100, description="Approximate bound of the alerts stream.")
    syslog_udp: str | None = Field(None, description="HOST:PORT of an RFC 5424 syslog receiver over UDP.")
    syslog_tcp: str | None = Field(None, description="HOST:PORT of an RFC 5424 syslog receiver over TCP.")
    syslog_facility: str = Field("local0", description="Syslog facility name.")
    webhook_url: str | None = Field(None, description="URL that receives each alert as a JSON POST.")
    webhook_queue: int = Field(1000, ge=1, le=1_000_000, description="Alerts waiting for the webhook.")
    webhook_retries: int = Field(3, ge=0, le=20, description="Retries per alert after a failed POST.")
    webhook_backoff_s: float = Field(0.5, gt=0, le=60, description="First retry delay (doubles, capped at 10 s).")
    webhook_timeout_s: float = Field(2.0, gt=0, le=60, description="Per-request timeout of the webhook.")

    alert_mode: AlertMode = Field(
        AlertMode.EPISODES,
        description="episodes: one alert line per episode open, "
        "update and close; flows: the old alert per window over the threshold.",
    )
    aggregates_stream: str = Field(AGGREGATES_STREAM, description="Stream of the sensor's aggregate buckets.")
    baseline: str | None = Field(
        None,
        description="Thresholds and benign medians of the volume view "
        "(JSON); None: the shipped models/site-baseline.json.",
    )
    profile: str | None = Field(
        None,
        description="Site profile (tapwatch learn): baseline, family thresholds, novelty rule; None: NAME.profile.json "
        "beside the model when there is one.",
    )
    allow_list: str | None = Field(None, description="Hosts, networks and ports whose episodes are never written.")
    episode_quiet_s: float = Field(
        120.0, gt=0, le=86_400, description="An episode closes after this long without new evidence."
    )
    episode_open_windows: int = Field(
        8, ge=1, le=10_000, description="Window-view evidence needed to open an episode (within episode_open_within_s)."
    )
    episode_open_within_s: float = Field(60.0, gt=0, le=86_400, description="Time the opening windows must fall in.")
    episode_open_min_score: float = Field(0.0, ge=0, le=1, description="Attack score the opening window needs.")
    episode_open_concurrent: int = Field(
        6, ge=1, le=10_000, description="Flows of a flood's window-view evidence open at one moment that open it."
    )
    episode_update_s: float = Field(
        60.0, gt=0, le=86_400, description="First gap between update lines (doubling, at most an hour)."
    )
    verdicts_file: str | None = Field(None, description="JSON lines, one per verdict (window), for analysis.")

    metrics_host: str = Field("127.0.0.1", description="Address of /metrics, /livez, /readyz.")
    metrics_port: int = Field(9642, ge=0, le=65535, description="Port of /metrics, /livez, /readyz; 0 picks one.")

    @field_validator("syslog_facility")
    @classmethod
    def _facility(cls, v: str) -> str:
        from tapwatch.alerting.netsinks import FACILITIES

        if v not in FACILITIES:
            raise ValueError(f"unknown syslog facility {v!r} (valid: {', '.join(FACILITIES)})")
        return v

    @field_validator("syslog_udp", "syslog_tcp")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        from tapwatch.alerting.netsinks import parse_hostport

        if v is not None:
            parse_hostport(v, "syslog")
        return v

    @property
    def redis_sink_on(self) -> bool:
        return self.redis_sink if self.redis_sink is not None else self.redis_url is not None

    def aggregates_config(self) -> ConsumerConfig:
        """The consumer loop on the aggregates stream (same group, consumer and read sizes as the verdicts')."""
        return replace(self.consumer_config(), stream=self.aggregates_stream)

    def consumer_config(self) -> ConsumerConfig:
        """The consumer loop's part of the settings: the verdicts stream in group ``alerter_group``.

        >>> AlerterSettings(alerter_consumer="a1", read_count=16).consumer_config().batch_size
        16
        """
        return ConsumerConfig(
            stream=self.verdicts_stream, group=self.alerter_group, consumer=self.alerter_consumer,
            batch_size=self.read_count, block_ms=self.block_ms, claim_idle_ms=self.claim_idle_ms,
            claim_interval_s=self.claim_interval_s, backoff_initial_s=LOOP_BACKOFF_INITIAL_S,
            backoff_max_s=LOOP_BACKOFF_MAX_S, drain_timeout_s=LOOP_DRAIN_TIMEOUT_S,
        )  # fmt: skip

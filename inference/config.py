"""The worker's configuration: a plain frozen dataclass, so the embedded mode needs no environment.

:class:`~tapwatch.inference.settings.WorkerSettings` (the service's pydantic-settings, read once in
``main``) takes its defaults from here and validates the ranges; :class:`WorkerConfig` only refuses the
values that would break the loop itself (its loop part is a :class:`~tapwatch.bus.consumer.ConsumerConfig`,
:meth:`WorkerConfig.consumer_config`, which checks them).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from tapwatch.bus.consumer import ConsumerConfig
from tapwatch.bus.entries import MAX_ENTRY_BYTES
from tapwatch.bus.streams import DEAD_STREAM, VERDICTS_STREAM, WINDOWS_STREAM
from tapwatch.features.errors import ConfigError


@dataclass(frozen=True)
class WorkerConfig:
    """How a :class:`~tapwatch.inference.worker.Worker` reads, writes, claims and backs off.

    The loop's part (stream, group, consumer, batch size, block time, claiming, backoff, drain) maps onto the
    shared :class:`~tapwatch.bus.consumer.ConsumerConfig`; the rest is the worker's own.

    Parameters
    ----------
    stream, group, consumer
        The windows stream, the consumer group (``workers``) and this consumer's name (empty: host-pid).
    verdicts_stream, verdicts_maxlen
        Where verdicts go and the approximate bound of that stream (trimming is counted).
    dead_stream, dead_maxlen
        Where bad entries go and the approximate bound of that stream.
    batch_size
        Entries per XREADGROUP and per model run. It bounds the work in hand: the loop holds one batch
        at a time, batch_size × T × F × 4 bytes (210 kB at 64 × 10 × 82), and ONNX Runtime's per-window
        cost stops falling beyond a few dozen windows per run (issue 3's cost table: batch 32 vs 256).
    block_ms
        Longest wait for new entries in one read; also how often an idle worker does its housekeeping
        (claims, reload polls, stats) and how soon it notices a stop request. Must be >= 1: Redis reads
        ``BLOCK 0`` as "forever".
    claim_idle_ms, claim_interval_s
        Entries pending in any consumer longer than ``claim_idle_ms`` are taken over (XAUTOCLAIM), looked
        for every ``claim_interval_s``. The idle time must exceed the longest batch, or live workers steal
        each other's batches (harmless, at least once, but wasted work).
    backoff_initial_s, backoff_max_s
        Wait after the bus becomes unreachable, doubled per failure up to the cap.
    stats_interval_s
        How often the pending and lag gauges are refreshed (one XINFO GROUPS).
    drain_timeout_s
        After a stop request, how long to keep retrying to write and ack the batch in hand while the bus
        is unreachable; after that its entries stay pending and another worker claims them.
    max_entry_bytes
        The largest window entry decoded (field names and values, bytes); a larger one is dead-lettered unparsed
        (``too_large``), as the alerter and the console do with theirs.
    ready_max_lag
        ``/readyz`` reports not ready while the group's lag (entries not yet delivered to any worker, as
        of the last stats refresh) exceeds this; 0 never does. Unknown lag (Redis 6.2) counts as ready.
    """

    stream: str = WINDOWS_STREAM
    group: str = "workers"
    consumer: str = ""
    verdicts_stream: str = VERDICTS_STREAM
    verdicts_maxlen: int = 100_000
    dead_stream: str = DEAD_STREAM
    dead_maxlen: int = 10_000
    batch_size: int = 64
    block_ms: int = 1000
    claim_idle_ms: int = 60_000
    claim_interval_s: float = 5.0
    backoff_initial_s: float = 0.2
    backoff_max_s: float = 5.0
    stats_interval_s: float = 5.0
    drain_timeout_s: float = 10.0
    ready_max_lag: int = 0
    max_entry_bytes: int = MAX_ENTRY_BYTES

    def __post_init__(self) -> None:
        self.consumer_config()  # block_ms, batch_size, claiming, backoff and drain are the loop's to check
        if self.max_entry_bytes < 16_384:
            raise ConfigError("max_entry_bytes", f"must be >= 16384, not {self.max_entry_bytes}")
        if self.ready_max_lag < 0:
            raise ConfigError("ready_max_lag", f"must be >= 0 (0: no limit), not {self.ready_max_lag}")

    def consumer_name(self) -> str:
        """``consumer``, or ``<host>-<pid>`` so that two workers on one host never share pending entries."""
        return self.consumer or f"{socket.gethostname()}-{os.getpid()}"

    def consumer_config(self) -> ConsumerConfig:
        """The consumer loop's part: the windows stream in group ``group``, as :meth:`consumer_name`.

        >>> WorkerConfig(consumer="w1", batch_size=32).consumer_config().batch_size
        32
        """
        return ConsumerConfig(
            stream=self.stream, group=self.group, consumer=self.consumer_name(), batch_size=self.batch_size,
            block_ms=self.block_ms, claim_idle_ms=self.claim_idle_ms, claim_interval_s=self.claim_interval_s,
            backoff_initial_s=self.backoff_initial_s, backoff_max_s=self.backoff_max_s,
            drain_timeout_s=self.drain_timeout_s,
        )  # fmt: skip

"""Count every flow into per-source and per-victim buckets: the sensor's destination/volume view.

Every flow, one-packet flows included, is counted twice: into the bucket of its source host
(:attr:`View.SOURCE`) and into the bucket of its destination host (:attr:`View.VICTIM`). A bucket is
``[start, start + bucket)`` of packet time, chosen by the flow's last packet. The watermark is the latest last
packet seen; a bucket is finished, and returned as an :class:`AggregateRecord`, once the watermark passes its
end by the allowed lateness. Flows arrive when they expire, so an idle flow can come up to the idle timeout
after its last packet: such a late flow counts into the oldest bucket of its host still open (or a new
bucket at the watermark), never dropped, so the flows of all records add up to the flows fed.

Memory is bounded: at most ``max_keys`` hosts per view hold open buckets, each distinct set in a bucket
holds at most ``max_distinct`` values (:mod:`tapwatch.capture.aggregate_counts`), and the beacon history
at most ``max_pairs`` pairs. Past ``max_keys`` the host updated least recently loses its open buckets, which
are dropped, not emitted, and counted through ``on_evict``. Dropping is right: the case that fills a view
with hosts is a flood from spoofed sources, which fills the source view with hosts of one flow each that no
rule could use (and emitting them would flood the bus instead), while the victim view keeps the whole flood
in one host's bucket; a real scanner or flooder updates its host with every flow and stays recent.

>>> from tapwatch.features.contract import FEATURE_NAMES
>>> from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord
>>> def syn(port: int, t: int) -> FlowRecord:  # one SYN, never answered
...     meta = FlowMeta(port, "", "10.0.0.9", 40000, "192.0.2.1", port, 6, t, t, 1, 60, ExpiryReason.IDLE, t, "s")
...     return FlowRecord(meta, (0.0,) * len(FEATURE_NAMES))
>>> agg = Aggregator(AggregatorConfig(bucket_s=10), sensor="s")
>>> [r for port in range(100) for r in agg.add(syn(port, 1_000 + port))], len(agg)
([], 2)
>>> src, victim = agg.flush()
>>> src.view.value, src.key, src.distinct_ports, src.unanswered, src.no_payload, victim.distinct_peers
('source', '10.0.0.9', 100, 100, 100, 1)
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace

from tapwatch.capture.aggregate_counts import BeaconTracker, Bucket, flow_counts
from tapwatch.features.aggregates import AggregateRecord, Beacon, View
from tapwatch.features.errors import ConfigError
from tapwatch.features.schema import FlowRecord

_NEVER = -(1 << 62)


@dataclass(frozen=True)
class AggregatorConfig:
    """Bucket length and the bounds of the aggregates.

    Parameters
    ----------
    bucket_s
        Bucket length in seconds of packet time.
    lateness_s
        How long past its end a bucket waits for flows that expire late (beyond it they go to a newer bucket).
    max_keys
        Hosts with open buckets per view (least recently updated evicted first).
    max_distinct
        Cap of each distinct set of a bucket (ports, peers, pairs, source ports); counts past it are lower bounds.
    beacon_history, beacon_min
        Flow start times kept per (source, destination, port) pair; starts needed before a pair can be a beacon.
    beacon_min_interval_s, max_beacons
        Shortest median interval of a beacon (closer connections are a burst); regular pairs a record carries.
    max_pairs
        Pairs whose start times are kept (LRU).
    """

    bucket_s: float = 10.0
    lateness_s: float = 2.0
    max_keys: int = 50_000
    max_distinct: int = 4096
    beacon_history: int = 16
    beacon_min: int = 6
    beacon_min_interval_s: float = 1.0
    max_beacons: int = 4
    max_pairs: int = 100_000

    def __post_init__(self) -> None:
        checks = {
            "bucket_s": (self.bucket_s >= 0.001, "must be >= 0.001"),
            "lateness_s": (self.lateness_s >= 0, "must be >= 0"),
            "max_keys": (self.max_keys >= 1, "must be >= 1"),
            "max_distinct": (self.max_distinct >= 1, "must be >= 1"),
            "beacon_history": (self.beacon_history >= 3, "must be >= 3"),
            "beacon_min": (3 <= self.beacon_min <= self.beacon_history, "must be in 3..beacon_history"),
            "beacon_min_interval_s": (self.beacon_min_interval_s >= 0, "must be >= 0"),
            "max_beacons": (self.max_beacons >= 0, "must be >= 0"),
            "max_pairs": (self.max_pairs >= 1, "must be >= 1"),
        }
        for name, (ok, why) in checks.items():
            if not ok:
                raise ConfigError(name, f"{why} (got {getattr(self, name)!r})")


class Aggregator:
    """Bucket every flow per source and per victim; return the buckets each flow finishes.

    Parameters
    ----------
    config
        Bucket length, lateness and bounds.
    sensor
        The sensor name written into every record.
    on_evict
        Called as ``on_evict(1)`` for each host whose open buckets were dropped by the ``max_keys`` cap.
    """

    def __init__(self, config: AggregatorConfig, sensor: str, on_evict: Callable[[int], None] | None = None) -> None:
        self.config = config
        self.sensor = sensor
        self.on_evict = on_evict
        self.evicted = 0
        self.bucket_ms = max(1, round(config.bucket_s * 1000))
        self._wait_ms = self.bucket_ms + round(config.lateness_s * 1000)
        self._keys: dict[View, OrderedDict[str, dict[int, Bucket]]] = {v: OrderedDict() for v in View}
        # Open buckets by start, so that the watermark finishes them oldest first without scanning every host.
        self._due: dict[int, dict[tuple[View, str], None]] = {}
        self._starts: list[int] = []
        self._watermark = _NEVER
        self._beacons = BeaconTracker(
            config.beacon_history, config.beacon_min, config.max_pairs, config.beacon_min_interval_s * 1000
        )

    def __len__(self) -> int:
        """Hosts holding open buckets, both views."""
        return sum(len(keys) for keys in self._keys.values())

    @property
    def watermark_ms(self) -> int:
        """The latest last packet seen (packet time)."""
        return self._watermark

    def add(self, record: FlowRecord) -> list[AggregateRecord]:
        """Count one flow; return the buckets finished because its last packet moved the watermark."""
        m = record.meta
        finished = self._advance(m.last_seen_ms)
        start = m.last_seen_ms // self.bucket_ms * self.bucket_ms
        counts = flow_counts(record)
        self._bucket(View.SOURCE, m.src_ip, start).add(m, counts)
        self._bucket(View.VICTIM, m.dst_ip, start).add(m, counts)
        self._beacons.add(m.src_ip, m.dst_ip, m.dst_port, m.first_seen_ms)
        return finished

    def flush(self) -> list[AggregateRecord]:
        """Finish every open bucket, oldest first (end of a capture, shutdown)."""
        out: list[AggregateRecord] = []
        while self._starts:
            out += self._finish_start(heapq.heappop(self._starts))
        return out

    def _advance(self, last_seen_ms: int) -> list[AggregateRecord]:
        if last_seen_ms <= self._watermark:
            return []
        self._watermark = last_seen_ms
        out: list[AggregateRecord] = []
        while self._starts and self._starts[0] + self._wait_ms <= last_seen_ms:
            out += self._finish_start(heapq.heappop(self._starts))
        return out

    def _finish_start(self, start: int) -> list[AggregateRecord]:
        out = []
        for view, key in self._due.pop(start, {}):
            keys = self._keys[view]
            buckets = keys[key]
            bucket = buckets.pop(start)
            if not buckets:
                del keys[key]
            beacons: tuple[Beacon, ...] = ()
            if view is View.SOURCE:
                found = self._beacons.regular(key, bucket.pairs, self.config.max_beacons)
                beacons = tuple(replace(b, sample=bucket.pairs[(b.peer, b.port)].newest) for b in found)
            out.append(bucket.record(self.sensor, key, start, self.bucket_ms, beacons))
        return out

    def _bucket(self, view: View, key: str, start: int) -> Bucket:
        """The open bucket of ``key`` that a flow ending in the bucket at ``start`` counts into."""
        keys = self._keys[view]
        buckets = keys.get(key)
        if start + self._wait_ms <= self._watermark:  # its own bucket is finished: a late flow
            start = min(buckets) if buckets else self._watermark // self.bucket_ms * self.bucket_ms
        if buckets is None:
            buckets = keys[key] = {}
            if len(keys) > self.config.max_keys:
                self._evict(keys, view)
        else:
            keys.move_to_end(key)
        bucket = buckets.get(start)
        if bucket is None:
            bucket = buckets[start] = Bucket(view, self.config.max_distinct)
            due = self._due.get(start)
            if due is None:
                due = self._due[start] = {}
                heapq.heappush(self._starts, start)
            due[(view, key)] = None
        return bucket

    def _evict(self, keys: OrderedDict[str, dict[int, Bucket]], view: View) -> None:
        """Drop the open buckets of the host updated least recently (see the module docstring)."""
        key, buckets = keys.popitem(last=False)
        for start in buckets:
            self._due[start].pop((view, key), None)
        self.evicted += 1
        if self.on_evict is not None:
            self.on_evict(1)


def aggregates_of(
    records: Iterable[FlowRecord], config: AggregatorConfig | None = None, sensor: str | None = None
) -> Iterator[AggregateRecord]:
    """The aggregate records of ``records`` taken in their order (nothing is sorted), flushed at the end.

    ``sensor`` names the records; None takes the first flow's sensor.
    """
    agg: Aggregator | None = None
    for record in records:
        if agg is None:
            agg = Aggregator(config or AggregatorConfig(), sensor or record.meta.sensor)
        yield from agg.add(record)
    if agg is not None:
        yield from agg.flush()

"""The counts of one open bucket of the destination/volume view, and the beacon tracker of the source view.

:class:`Bucket` counts the flows of one host (source or victim) over one bucket into a bounded state: every
distinct set (ports, peers, (peer, port) pairs, source ports) holds at most ``max_distinct`` values, and the
counters behind the ``top_*`` fields are those sets' values, so a bucket never grows past
``4 × max_distinct`` entries however many flows it counts. :class:`BeaconTracker` keeps the recent run of flow
start times of each (source, destination, port) pair across buckets, LRU-bounded, and finds the most regular
pairs of a source. A pair's run starts again when a connection comes much later than the run's usual interval
(the bot slept, or the earlier starts were a burst of page loads): the minutes between two beacon episodes
must not hide either. :mod:`tapwatch.capture.aggregates` drives both.

>>> from tapwatch.features.aggregates import View
>>> tracker = BeaconTracker(history=16, min_count=3, max_pairs=10)
>>> for t in (0, 5_000, 10_000, 15_000):
...     tracker.add("10.0.0.1", "192.0.2.1", 443, t)
>>> (b,) = tracker.regular("10.0.0.1", [("192.0.2.1", 443)])
>>> (b.peer, b.port, b.count, b.interval_ms, b.cv)
('192.0.2.1', 443, 4, 5000.0, 0.0)
>>> for t in (900_000, 905_000, 910_000):  # a quarter of an hour later: a new run
...     tracker.add("10.0.0.1", "192.0.2.1", 443, t)
>>> [(b.count, b.cv) for b in tracker.regular("10.0.0.1", [("192.0.2.1", 443)])]
[(3, 0.0)]
"""

from __future__ import annotations

import itertools
import math
import operator
import statistics
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import TypeVar

from tapwatch.features.aggregates import AggregateRecord, Beacon, View
from tapwatch.features.contract import feature_index
from tapwatch.features.schema import FlowMeta, FlowRecord

_BWD_PACKETS = feature_index("Total Bwd packets")
_BWD_RST = feature_index("Bwd RST Flags")
_FWD_BYTES = feature_index("Total Length of Fwd Packet")
_BWD_BYTES = feature_index("Total Length of Bwd Packet")
_TCP, _UDP, _ICMP = 6, 17, (1, 58)
_T = TypeVar("_T", int, str)


def _count(counter: dict[_T, int], value: _T, cap: int) -> bool:
    """Count ``value`` if it is held or there is room for it; False when the set is full and it is new."""
    n = counter.get(value)
    if n is not None:
        counter[value] = n + 1
        return True
    if len(counter) >= cap:
        return False
    counter[value] = 1
    return True


def _top(counter: dict[_T, int]) -> tuple[_T | None, int]:
    """The most counted value (the first one counted among equals), or (None, 0)."""
    if not counter:
        return None, 0
    value = max(counter, key=counter.__getitem__)
    return value, counter[value]


def flow_counts(record: FlowRecord) -> tuple[int, ...]:
    """What one flow adds to a bucket's sums: packets, bytes, tcp, udp, icmp, unanswered, rejected, no_payload,
    icmp_packets.

    Computed once per flow for both views; the definitions are those of :mod:`tapwatch.features.aggregates`.
    """
    m, v = record.meta, record.values
    proto = m.protocol
    no_fwd = v[_FWD_BYTES] == 0
    return (
        m.packets, m.bytes, proto == _TCP, proto == _UDP, proto in _ICMP, v[_BWD_PACKETS] == 0,
        proto == _TCP and v[_BWD_RST] > 0 and no_fwd, proto in (_TCP, _UDP) and no_fwd and v[_BWD_BYTES] == 0,
        m.packets if proto in _ICMP else 0,
    )  # fmt: skip


class _Pair:
    """Flows, bytes and newest flow of one (peer, port) pair of a bucket."""

    __slots__ = ("bytes", "flows", "newest")

    def __init__(self, meta: FlowMeta) -> None:
        self.flows, self.bytes, self.newest = 0, 0, meta

    def add(self, meta: FlowMeta) -> None:
        self.flows += 1
        self.bytes += meta.bytes
        if meta.last_seen_ms >= self.newest.last_seen_ms:
            self.newest = meta


class Bucket:
    """The bounded counts of one host over one bucket.

    Parameters
    ----------
    view
        Whose traffic it counts: the source view counts destination ports and hosts, the victim view the
        victim's ports, its sources and their source ports.
    max_distinct
        Cap of each distinct set; past it ``capped`` is set and new values are no longer held.
    """

    __slots__ = ("capped", "first_ms", "flows", "last_ms", "max_distinct", "pairs", "peers", "ports", "source",
                 "src_ports", "sums", "view")  # fmt: skip

    def __init__(self, view: View, max_distinct: int) -> None:
        self.view = view
        self.source = view is View.SOURCE
        self.max_distinct = max_distinct
        self.flows = 0
        self.first_ms, self.last_ms = 0, 0
        # packets, bytes, tcp, udp, icmp, unanswered, rejected, no_payload, icmp_packets
        self.sums = [0] * 9
        self.capped = False
        self.ports: dict[int, int] = {}
        self.peers: dict[str, int] = {}
        self.src_ports: dict[int, int] = {}
        self.pairs: dict[tuple[str, int], _Pair] = {}

    def add(self, m: FlowMeta, counts: tuple[int, ...]) -> None:
        """Count one flow: its metadata and its :func:`flow_counts`."""
        if self.flows == 0 or m.first_seen_ms < self.first_ms:
            self.first_ms = m.first_seen_ms
        if m.last_seen_ms > self.last_ms:
            self.last_ms = m.last_seen_ms
        self.flows += 1
        self.sums = list(map(operator.add, self.sums, counts))
        peer = m.dst_ip if self.source else m.src_ip
        cap = self.max_distinct
        held = _count(self.ports, m.dst_port, cap) & _count(self.peers, peer, cap)
        if not self.source:
            held &= _count(self.src_ports, m.src_port, cap)
        pair = self.pairs.get((peer, m.dst_port))
        if pair is None and len(self.pairs) < cap:
            pair = self.pairs[(peer, m.dst_port)] = _Pair(m)
        if pair is None:
            held = False
        else:
            pair.add(m)
        self.capped |= not held

    def record(self, sensor: str, key: str, start_ms: int, bucket_ms: int,
               beacons: tuple[Beacon, ...] = ()) -> AggregateRecord:  # fmt: skip
        """The finished bucket as the record the sensor publishes."""
        port, port_flows = _top(self.ports)
        peer, peer_flows = _top(self.peers)
        src_port, src_port_flows = _top(self.src_ports)
        pair_peer, pair_port, pair = "", 0, None
        if self.pairs:
            (pair_peer, pair_port), pair = max(self.pairs.items(), key=lambda kv: kv[1].flows)
        packets, bytes_, tcp, udp, icmp, unanswered, rejected, no_payload, icmp_packets = self.sums
        return AggregateRecord(
            sensor=sensor, view=self.view, key=key, start_ms=start_ms, bucket_ms=bucket_ms,
            first_ms=self.first_ms, last_ms=self.last_ms, flows=self.flows, packets=packets, bytes=bytes_,
            tcp=tcp, udp=udp, icmp=icmp, unanswered=unanswered, rejected=rejected, no_payload=no_payload,
            distinct_ports=len(self.ports), distinct_peers=len(self.peers), capped=self.capped,
            top_port=port or 0, top_port_flows=port_flows, icmp_packets=icmp_packets, top_peer=peer or "",
            top_peer_flows=peer_flows,
            pair_peer=pair_peer, pair_port=pair_port, pair_flows=pair.flows if pair else 0,
            pair_bytes=pair.bytes if pair else 0, top_src_port=src_port or 0,
            top_src_port_flows=src_port_flows, beacons=beacons, sample=pair.newest if pair else None,
        )  # fmt: skip


def regularity(starts: Iterable[int]) -> tuple[float, float] | None:
    """(median interval, coefficient of variation) of the intervals between sorted start times, or None.

    >>> regularity([0, 1000, 2000, 3000])
    (1000.0, 0.0)
    >>> regularity([5, 5]) is None  # no time between them: nothing to measure
    True
    """
    ordered = sorted(starts)
    gaps = [b - a for a, b in itertools.pairwise(ordered)]
    if not gaps:
        return None
    mean = sum(gaps) / len(gaps)
    if mean <= 0:
        return None
    std = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    return float(statistics.median(gaps)), std / mean


class BeaconTracker:
    """The recent run of flow start times of each (source, destination, port) pair, across buckets.

    Parameters
    ----------
    history
        Start times kept per pair (the newest ones of its run).
    min_count
        Starts a pair's run needs before it can be reported.
    max_pairs
        Pairs held; the least recently seen one is forgotten first (a spoofed flood makes one pair per
        flow and must not grow this).
    min_interval_ms
        Shortest median interval reported: connections a second apart or closer are a burst (a page and its
        resources, a retry loop), not a timer.
    restart
        A start more than ``restart`` times the run's median interval after its newest start begins a new run.
        A jitter of ± 50 % keeps consecutive intervals within a factor of 3.
    """

    def __init__(self, history: int, min_count: int, max_pairs: int, min_interval_ms: float = 1_000.0,
                 restart: float = 4.0) -> None:  # fmt: skip
        self.history = history
        self.min_count = min_count
        self.max_pairs = max_pairs
        self.min_interval_ms = min_interval_ms
        self.restart = restart
        self._starts: OrderedDict[tuple[str, str, int], deque[int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._starts)

    def add(self, src: str, dst: str, port: int, start_ms: int) -> None:
        key = (src, dst, port)
        starts = self._starts.get(key)
        if starts is None:
            starts = self._starts[key] = deque(maxlen=self.history)
            if len(self._starts) > self.max_pairs:
                self._starts.popitem(last=False)
        else:
            self._starts.move_to_end(key)
            newest = max(starts)
            if len(starts) >= 2 and start_ms - newest > self.restart * max(1.0, _median_gap(starts)):
                starts.clear()  # the run is over: the next one starts here
        starts.append(start_ms)

    def regular(self, src: str, pairs: Iterable[tuple[str, int]], limit: int = 4) -> list[Beacon]:
        """Among ``pairs`` (peer, port) of ``src``, those whose run has enough starts at a median interval of at
        least ``min_interval_ms``: the ``limit`` most regular (lowest CV) first, without their samples."""
        found: list[Beacon] = []
        for peer, port in pairs:
            starts = self._starts.get((src, peer, port))
            if starts is None or len(starts) < self.min_count:
                continue
            reg = regularity(starts)
            if reg is not None and reg[0] >= self.min_interval_ms:
                found.append(Beacon(peer, port, len(starts), reg[0], reg[1]))
        found.sort(key=lambda b: b.cv)
        return found[:limit]


def _median_gap(starts: Iterable[int]) -> float:
    ordered = sorted(starts)
    return float(statistics.median(b - a for a, b in itertools.pairwise(ordered)))

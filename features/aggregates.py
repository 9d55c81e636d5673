"""The destination and volume view: per-source and per-victim counts over short time buckets.

A window holds one source's last T flows, so it cannot see what many one-packet flows do together: a scan of
one probe per port, a flood from spoofed sources, reflection towards one victim. The sensor therefore also
counts every flow, one-packet flows included, into bounded aggregates per source host and per victim host
over buckets of a few seconds (packet time), and publishes each finished bucket as an
:class:`AggregateRecord` on ``tapwatch:aggregates`` (Zeek's scan detector counts distinct ports per source in a
time window; Suricata's ``threshold``/``rate_filter`` count events per source or destination per interval).

The counts (``docs/alerts.md`` has the table):

* ``unanswered``: flows in which the responder sent nothing; ``rejected``: TCP flows the responder reset
  before any payload was sent; ``no_payload``: TCP or UDP flows that carried no payload either way (a
  handshake that was never used, a half-open SYN).
* ``distinct_ports`` / ``distinct_peers``: destination ports and hosts of a source, or ports and sources of a
  victim; each set is capped (``capped`` is then true and the counts are lower bounds).
* ``top_*``: the busiest port, peer and (peer, port) pair of the bucket, with their flows;
  ``top_src_port`` (victim view): the busiest *source* port of the flows towards the victim (53 or 123 for
  reflection).
* ``beacons`` (source view): the pairs of the bucket whose connections came most regularly over their recent
  run of starts, most regular first (at most a few): how many connections, the median interval and its
  coefficient of variation (a C2 beacon calls home on a timer; people do not), and a flow of the pair.

>>> rec = AggregateRecord(sensor="s", view=View.SOURCE, key="10.0.0.1", start_ms=0, bucket_ms=10_000)
>>> AggregateRecord.decode(rec.encode()) == rec
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from enum import Enum
from typing import Any

from tapwatch.features.errors import SchemaError
from tapwatch.features.fieldcheck import COUNT, PORT, TEXT, TIME, check_value, load_json
from tapwatch.features.schema import Encoded, FlowMeta

AGGREGATE_SCHEMA_VERSION = 3
"""2: ``beacons`` (several pairs) replaced ``beacon_*`` (one); 3: ``icmp_packets`` (a ping flood is one long flow:
one among many in its victim's bucket, but most of its packets)."""
AGGREGATES_STREAM = "tapwatch:aggregates"
BEACONS_MAX = 64
"""Most beacons a decoded bucket may list (the sensor sends a few)."""


class View(str, Enum):
    """Whose traffic a bucket counts."""

    SOURCE = "source"
    """Everything one host started (its ``key`` is the source address)."""
    VICTIM = "victim"
    """Everything that reached one host (its ``key`` is the destination address)."""


@dataclass(frozen=True)
class Beacon:
    """One (peer, port) pair of a source whose recent connections came on a timer.

    ``count`` starts in the pair's current run, their median interval and its coefficient of variation, and the
    pair's newest flow in the bucket (what an alert about the beacon names as its flow).
    """

    peer: str
    port: int
    count: int
    interval_ms: float
    cv: float
    sample: FlowMeta | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"peer": self.peer, "port": self.port, "count": self.count,
                             "interval_ms": self.interval_ms, "cv": self.cv}  # fmt: skip
        if self.sample is not None:
            d["sample"] = json.loads(self.sample.to_json())
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Beacon:
        """The inverse of :meth:`to_dict`; ``TypeError``/``KeyError``/``ValueError`` on a malformed one."""
        if not isinstance(d, Mapping):
            raise TypeError("a beacon is not a JSON object")
        sample = d.get("sample")
        return cls(str(d["peer"]), int(d["port"]), int(d["count"]), float(d["interval_ms"]), float(d["cv"]),
                   None if sample is None else FlowMeta.from_json(json.dumps(sample)))  # fmt: skip


@dataclass(frozen=True)
class AggregateRecord:
    """One finished bucket of one host, as it travels on ``tapwatch:aggregates``.

    Parameters
    ----------
    sensor, view, key
        The sensor, the view and the host (source or victim address).
    start_ms, bucket_ms
        The bucket: ``[start_ms, start_ms + bucket_ms)`` in packet time (the flows' last packets).
    first_ms, last_ms
        The earliest first packet and the latest last packet of the bucket's flows.
    flows, packets, bytes, tcp, udp, icmp
        Flows (one-packet ones included), packets and link-layer bytes in both directions, flows per protocol.
    unanswered, rejected, no_payload
        See the module docstring.
    distinct_ports, distinct_peers, capped
        Distinct destination ports and hosts (victim view: ports of the victim and distinct sources).
    top_port, top_port_flows, top_peer, top_peer_flows
        The busiest destination port and peer.
    icmp_packets
        Packets of the ICMP flows (a ping flood is one flow of thousands of packets).
    pair_peer, pair_port, pair_flows, pair_bytes
        The busiest (peer, destination port) pair and its flows and bytes.
    top_src_port, top_src_port_flows
        Victim view: the busiest source port of the flows towards the victim.
    beacons
        Source view: the bucket's pairs with a run of regular starts, most regular first (empty: none).
    sample
        The newest flow of the busiest pair: what an alert names as its representative flow.
    """

    sensor: str
    view: View
    key: str
    start_ms: int
    bucket_ms: int
    first_ms: int = 0
    last_ms: int = 0
    flows: int = 0
    packets: int = 0
    bytes: int = 0
    tcp: int = 0
    udp: int = 0
    icmp: int = 0
    unanswered: int = 0
    rejected: int = 0
    no_payload: int = 0
    distinct_ports: int = 0
    distinct_peers: int = 0
    capped: bool = False
    top_port: int = 0
    top_port_flows: int = 0
    icmp_packets: int = 0
    top_peer: str = ""
    top_peer_flows: int = 0
    pair_peer: str = ""
    pair_port: int = 0
    pair_flows: int = 0
    pair_bytes: int = 0
    top_src_port: int = 0
    top_src_port_flows: int = 0
    beacons: tuple[Beacon, ...] = ()
    sample: FlowMeta | None = None
    version: int = AGGREGATE_SCHEMA_VERSION

    @property
    def seconds(self) -> float:
        """The bucket's length in seconds."""
        return self.bucket_ms / 1000.0

    def counts(self) -> dict[str, Any]:
        """Every field but the identity and the sample, by name (what rules and summaries read)."""
        skip = {"sensor", "view", "key", "sample", "version"}
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}

    def encode(self) -> dict[str, str]:
        """Flat field map for XADD: the identity as fields, the counts as one JSON object."""
        counts = self.counts()
        counts["beacons"] = [b.to_dict() for b in self.beacons]
        out = {"v": str(self.version), "sensor": self.sensor, "view": self.view.value, "key": self.key,
               "counts": json.dumps(counts, separators=(",", ":"))}  # fmt: skip
        if self.sample is not None:
            out["flow"] = self.sample.to_json()
        return Encoded(out, self)

    @classmethod
    def decode(cls, fields_: Mapping[Any, Any]) -> AggregateRecord:
        """Parse a field map read from the bus; raises :class:`SchemaError` with a closed-set reason.

        Every count is checked for its type and range (``dtype``, ``value``, ``non_finite``); counts and fields this
        version does not know are ignored (as Suricata's and Zeek's readers ignore unknown keys)."""
        if (own := Encoded.object_of(fields_, cls)) is not None:
            return own  # type: ignore[no-any-return]
        f = {(k.decode() if isinstance(k, bytes) else str(k)): v for k, v in fields_.items()}

        def text(name: str) -> str:
            if name not in f:
                raise SchemaError("aggregate", "missing_field", f"field {name!r} is missing")
            v = f[name]
            try:
                return v.decode() if isinstance(v, bytes) else str(v)
            except UnicodeDecodeError as err:
                raise SchemaError("aggregate", "malformed", f"field {name!r} is not UTF-8") from err

        if text("v") != str(AGGREGATE_SCHEMA_VERSION):
            raise SchemaError("aggregate", "version", f"unknown aggregate schema version {text('v')[:40]!r}")
        try:
            view = View(text("view"))
        except ValueError as err:
            raise SchemaError("aggregate", "value", str(err)[:200]) from err
        counts = load_json(text("counts"), "aggregate", "counts")
        if not isinstance(counts, dict):
            raise SchemaError("aggregate", "dtype", "counts is not a JSON object")
        for name in ("start_ms", "bucket_ms"):
            if name not in counts:
                raise SchemaError("aggregate", "missing_field", f"count {name!r} is missing")
        known = {name: counts[name] for name in _COUNT_CHECKS if name in counts}
        for name, value in known.items():
            check_value("aggregate", name, value, *_COUNT_CHECKS[name])
        beacons = counts.get("beacons", [])
        if not isinstance(beacons, list) or len(beacons) > BEACONS_MAX:
            raise SchemaError("aggregate", "dtype", f"beacons is not a JSON list of at most {BEACONS_MAX}")
        sensor, key = text("sensor"), text("key")
        check_value("aggregate", "sensor", sensor, *TEXT)
        check_value("aggregate", "key", key, *TEXT)
        return cls(sensor=sensor, view=view, key=key,
                   sample=FlowMeta.checked(text("flow"), "aggregate") if "flow" in f else None,
                   beacons=tuple(_beacon(b) for b in beacons), **known)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the view as its name, the sample as a dict)."""
        d = asdict(self)
        d["view"] = self.view.value
        d["beacons"] = [b.to_dict() for b in self.beacons]
        if self.sample is not None:
            d["sample"] = json.loads(self.sample.to_json())
        return d


def _count_checks() -> dict[str, tuple[type, float, float]]:
    """Type and range of each count a reader accepts (times, ports and names have their own)."""
    special: dict[str, tuple[type, float, float]] = {
        "start_ms": TIME, "first_ms": TIME, "last_ms": TIME, "bucket_ms": (int, 1, 86_400_000),
        "top_port": PORT, "pair_port": PORT, "top_src_port": PORT, "top_peer": TEXT, "pair_peer": TEXT,
        "capped": (bool, 0, 1),
    }  # fmt: skip
    skip = {"sensor", "view", "key", "sample", "version", "beacons"}
    return {x.name: special.get(x.name, COUNT) for x in fields(AggregateRecord) if x.name not in skip}


_COUNT_CHECKS = _count_checks()


def _beacon(d: Any) -> Beacon:
    """A beacon of a bucket read from the bus, checked like the counts."""
    if not isinstance(d, dict):
        raise SchemaError("aggregate", "dtype", "a beacon is not a JSON object")
    checks = {"peer": TEXT, "port": PORT, "count": COUNT, "interval_ms": (float, 0, math.inf),
              "cv": (float, 0, math.inf)}  # fmt: skip
    for name, check in checks.items():
        if name not in d:
            raise SchemaError("aggregate", "missing_field", f"beacon field {name!r} is missing")
        check_value("aggregate", f"beacon.{name}", d[name], *check)
    sample = d.get("sample")
    meta = None if sample is None else FlowMeta.checked(json.dumps(sample), "aggregate")
    return Beacon(d["peer"], d["port"], d["count"], float(d["interval_ms"]), float(d["cv"]), meta)

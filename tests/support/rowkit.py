"""Rebuild the packets of one corrected CIC-IDS2017 row as a pcap and read them back through the sensor.

Rows come from the corrected CIC-IDS2017 subset under ``../shared`` and are read at run time, never copied
into the repository. A test names its row with a :class:`RowRef` (file, ``id``, ``Flow ID``, ``Timestamp``,
label) and lists the packets it infers from the row as :class:`Pkt` values: direction, offset in µs from
the flow's first packet, TCP flags, transport payload bytes, TCP header length and window, or ICMP type
and code. The flow's addresses and ports are the row's (fwd = from ``Src IP``:``Src Port``).

Time: the sensor truncates packet times to whole milliseconds. :func:`write_pcap` puts the first packet
500 µs into a millisecond and every other packet at its exact µs offset, so the sensor reads each offset
rounded half up to a millisecond (:func:`sensor_us`), as :func:`~tapwatch.features.resolution.quantize_row`
rounds the row's times.

>>> [sensor_us(us) for us in (0, 49, 499, 500, 1_515_758)]
[0, 0, 0, 1000, 1516000]
"""

from __future__ import annotations

import calendar
import csv
import gzip
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from itertools import pairwise
from pathlib import Path
from statistics import mean, stdev

import pytest
from prometheus_client import CollectorRegistry
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import EDecimal, wrpcap

from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.features.contract import FEATURE_NAMES
from tests.support.env import CIC_SUBSET

FWD = True
BWD = False
FIRST_PACKET_SUB_MS_US = 500
"""Where the first packet sits inside its millisecond; makes the sensor's truncation a half-up rounding."""

_TCP_OPTIONS: dict[int, list[tuple[str, object]]] = {
    20: [],
    24: [("MSS", 1460)],  # nmap's SYN probe
    32: [("NOP", None), ("NOP", None), ("Timestamp", (1000, 2000))],  # Linux after the handshake
    40: [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1000, 0)), ("NOP", None), ("WScale", 7)],  # Linux SYN
}
"""TCP options per header length: CIC's header length is the TCP data offset × 4."""


def require_subset() -> Path:
    """The subset's folder; skip (fail under ``CI=true``) when ``../shared`` is not there."""
    if CIC_SUBSET.is_dir():
        return CIC_SUBSET
    reason = f"corrected CIC-IDS2017 subset not found at {CIC_SUBSET.resolve()} (../shared is not mounted)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true: {reason}")
    pytest.skip(reason)


@dataclass(frozen=True)
class RowRef:
    """One row of the subset, named the way the test cites it."""

    file: str
    id: int
    flow_id: str
    timestamp: str
    label: str

    def __str__(self) -> str:
        return f"{self.file} id={self.id} '{self.flow_id}' {self.timestamp} ({self.label})"


@lru_cache(maxsize=8)
def _rows(file: str) -> tuple[dict[str, str], ...]:
    with gzip.open(require_subset() / file, "rt", newline="") as fh:
        return tuple(csv.DictReader(fh))


def load_row(ref: RowRef) -> dict[str, str]:
    """The row as read from the gzip CSV; exactly one row must match id, Flow ID and Timestamp."""
    hits = [r for r in _rows(ref.file) if r["id"] == str(ref.id) and r["Flow ID"] == ref.flow_id
            and r["Timestamp"] == ref.timestamp]  # fmt: skip
    assert len(hits) == 1, f"{ref}: {len(hits)} matching rows"
    assert hits[0]["Label"] == ref.label, f"{ref}: label is {hits[0]['Label']!r}"
    return hits[0]


def row_features(row: Mapping[str, str]) -> dict[str, float]:
    """The 82 features of a row (same names as the CSV columns)."""
    return {name: float(row[name]) for name in FEATURE_NAMES}


@dataclass(frozen=True)
class Pkt:
    """One packet inferred from a row.

    ``payload`` is transport payload bytes (what CIC counts; ignored for ICMP, whose CIC length is 0),
    ``header`` the TCP header length (20, 24, 32 or 40), ``flags`` scapy's TCP flag letters.
    """

    at_us: int
    fwd: bool
    flags: str = ""
    payload: int = 0
    header: int = 20
    window: int = 0
    icmp: tuple[int, int] | None = None


def sensor_us(at_us: int) -> int:
    """The offset the sensor measures for a packet written at ``at_us`` by :func:`write_pcap`."""
    return (at_us + FIRST_PACKET_SUB_MS_US) // 1000 * 1000


def _transport(p: Pkt, proto: int, ports: tuple[int, int], seqs: list[int]) -> Packet:
    if proto == 1:
        assert p.icmp is not None, "an ICMP packet needs (type, code)"
        return ICMP(type=p.icmp[0], code=p.icmp[1], id=0x4A2B, seq=1)
    if proto == 17:
        return UDP(sport=ports[0], dport=ports[1]) / Raw(bytes(p.payload))
    me, peer = (0, 1) if p.fwd else (1, 0)
    seg = TCP(sport=ports[0], dport=ports[1], flags=p.flags, seq=seqs[me], window=p.window,
              ack=seqs[peer] if "A" in p.flags else 0, options=_TCP_OPTIONS[p.header])  # fmt: skip
    seqs[me] += p.payload + ("S" in p.flags) + ("F" in p.flags)
    if p.payload:
        seg = seg / Raw(b"\x17" * p.payload)
    assert TCP(bytes(seg)).dataofs * 4 == p.header
    return seg


def write_pcap(path: Path, row: Mapping[str, str], pkts: Sequence[Pkt]) -> Path:
    """Write ``pkts`` between the row's endpoints; the first packet at the row's second + 500 µs."""
    start = datetime.strptime(row["Timestamp"], "%Y-%m-%d %H:%M:%S.%f")
    base = Decimal(calendar.timegm(start.timetuple())) + Decimal(FIRST_PACKET_SUB_MS_US) / 10**6
    src, dst = row["Src IP"], row["Dst IP"]
    sport, dport, proto = int(row["Src Port"]), int(row["Dst Port"]), int(row["Protocol"])
    seqs = [1_000_000, 5_000_000]
    frames = []
    for p in pkts:
        ips = (src, dst) if p.fwd else (dst, src)
        ports = (sport, dport) if p.fwd else (dport, sport)
        frame = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=ips[0], dst=ips[1], proto=proto)
        frame = frame / _transport(p, proto, ports, seqs)
        frame.time = EDecimal(base + Decimal(p.at_us) / 10**6)
        frames.append(frame)
    assert [p.at_us for p in pkts] == sorted(p.at_us for p in pkts), "packets must be in time order"
    wrpcap(str(path), frames, linktype=1)
    return path


def run_sensor(pcap: Path) -> list[dict[str, float]]:
    """The features of every flow the sensor emits for ``pcap`` (one-packet flows are not emitted)."""
    records = PcapSource([str(pcap)], CaptureConfig(sensor="rowkit"), CaptureMetrics(CollectorRegistry()))
    return [rec.features() for rec in records]


def _gap_stats(prefix: str, times: Sequence[int], total: bool) -> dict[str, float]:
    """CIC's IAT columns of one packet sequence: all 0 without a gap, Std 0 with one gap."""
    gaps = [b - a for a, b in pairwise(times)]
    names = (["Total"] if total else []) + ["Mean", "Std", "Max", "Min"]
    if not gaps:
        return {f"{prefix} IAT {n}": 0.0 for n in names}
    values = {"Total": sum(gaps), "Mean": mean(gaps), "Std": stdev(gaps) if len(gaps) > 1 else 0.0,
              "Max": max(gaps), "Min": min(gaps)}  # fmt: skip
    return {f"{prefix} IAT {n}": float(values[n]) for n in names}


def iat_features(pkts: Sequence[Pkt], clock: str) -> dict[str, float]:
    """Flow/Fwd/Bwd IAT columns of ``pkts`` on the row's clock (``"us"``) or the sensor's (``"sensor"``)."""
    at = [p.at_us if clock == "us" else sensor_us(p.at_us) for p in pkts]
    out = _gap_stats("Flow", at, total=False)
    out |= _gap_stats("Fwd", [t for t, p in zip(at, pkts, strict=True) if p.fwd], total=True)
    out |= _gap_stats("Bwd", [t for t, p in zip(at, pkts, strict=True) if not p.fwd], total=True)
    return out


def multi_gap_time_stats(pkts: Sequence[Pkt]) -> dict[str, float]:
    """IAT Mean and Std of every gap set with 2+ gaps, as the sensor measures them.

    The mean or standard deviation of several millisecond gaps is in general not a whole number of
    milliseconds, so :func:`~tapwatch.features.resolution.quantize_row` (which rounds them to one) cannot
    be the sensor's value for them; for a single gap it is exact.
    """
    sensor = iat_features(pkts, "sensor")
    counts = {"Flow": len(pkts), "Fwd": sum(p.fwd for p in pkts), "Bwd": sum(not p.fwd for p in pkts)}
    return {f"{d} IAT {s}": sensor[f"{d} IAT {s}"] for d, n in counts.items() if n >= 3 for s in ("Mean", "Std")}


def mismatches(got: Mapping[str, float], expected: Mapping[str, float], names: Iterable[str]) -> list[str]:
    """One line per feature where ``got`` differs from ``expected`` beyond rel 1e-6."""
    return [f"{n}: extractor {got[n]!r}, expected {expected[n]!r}" for n in names
            if got[n] != pytest.approx(expected[n], rel=1e-6)]  # fmt: skip


def packet_totals(pkts: Sequence[Pkt], proto: int) -> dict[str, float]:
    """The columns that follow from the packet list alone: counts, lengths, header bytes, flags, duration.

    A test compares them with the row before any sensor runs, so a failure of the sensor later is the
    sensor's and not a wrong packet list. CIC lengths: TCP/UDP payload, 0 for ICMP; headers: TCP data
    offset × 4, 8 for UDP, 0 for ICMP.
    """

    def header(p: Pkt) -> int:
        return p.header if proto == 6 else 8 if proto == 17 else 0

    def length(p: Pkt) -> int:
        return 0 if proto == 1 else p.payload

    out: dict[str, float] = {"Flow Duration": float(pkts[-1].at_us - pkts[0].at_us)}
    for name, fwd in (("Fwd", True), ("Bwd", False)):
        side = [p for p in pkts if p.fwd is fwd]
        out[f"{name} Header Length"] = float(sum(header(p) for p in side))
        out[f"{name} PSH Flags"] = float(sum("P" in p.flags for p in side))
        out[f"{name} RST Flags"] = float(sum("R" in p.flags for p in side))
    fwd_pkts = [p for p in pkts if p.fwd]
    bwd_pkts = [p for p in pkts if not p.fwd]
    out |= {"Total Fwd Packet": float(len(fwd_pkts)), "Total Bwd packets": float(len(bwd_pkts)),
            "Total Length of Fwd Packet": float(sum(length(p) for p in fwd_pkts)),
            "Total Length of Bwd Packet": float(sum(length(p) for p in bwd_pkts))}  # fmt: skip
    for flag, letter in (("FIN", "F"), ("SYN", "S"), ("RST", "R"), ("PSH", "P"), ("ACK", "A")):
        out[f"{flag} Flag Count"] = float(sum(letter in p.flags for p in pkts))
    out["FWD Init Win Bytes"] = float(pkts[0].window if pkts[0].fwd else 0)
    return out

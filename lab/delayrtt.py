"""TCP handshake RTTs from a capture: what a tap sees of a path's round-trip time.

:func:`handshake_rtts` reads a classic pcap file (microsecond or nanosecond timestamps, Ethernet or Linux
cooked (v1 or v2) link type, IPv4 and IPv6) with :mod:`struct` alone, so it is fast on big captures and needs
no scapy. For each TCP handshake it returns the time from the client's SYN to its ACK of the SYN/ACK
(SYN→SYN/ACK plus SYN/ACK→ACK), which at a tap anywhere on the path is one full round trip;
:func:`handshake_rtts_by_client` groups them by the client's address. As TCP does (Karn's rule), a
handshake whose SYN or SYN/ACK was seen twice is left out: which copy the answer belongs to is unknown.

:func:`summarize` turns the RTTs into the numbers the tests and the bench compare with a profile.

Example
-------
>>> summarize([0.040, 0.041, 0.039, 0.043])
RttSummary(count=4, median_ms=40.5, p90_ms=42.4, jitter_p90_ms=2.2)
"""

from __future__ import annotations

import ipaddress
import statistics
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.delayline import DelayLineError

# pcap magic (as read little-endian) -> (byte order, timestamp fraction per second)
_MAGIC = {0xA1B2C3D4: ("<", 1e6), 0xD4C3B2A1: (">", 1e6), 0xA1B23C4D: ("<", 1e9), 0x4D3CB2A1: (">", 1e9)}
_LINK_ETHERNET, _LINK_SLL, _LINK_SLL2 = 1, 113, 276
_IPV4, _IPV6 = b"\x08\x00", b"\x86\xdd"
_IPV6_EXTENSIONS = {0, 43, 60}  # hop-by-hop, routing, destination options: (next header, length/8 - 1) first
_SYN, _ACK = 0x02, 0x10

Conn = tuple[bytes, int, bytes, int]  # client address, client port, server address, server port


def pcap_records(path: Path) -> Iterator[tuple[float, int, bytes]]:
    """(epoch seconds, link type, captured bytes) of each record of a classic pcap file."""
    with Path(path).open("rb") as fh:
        head = fh.read(24)
        if len(head) < 24 or struct.unpack("<I", head[:4])[0] not in _MAGIC:
            raise DelayLineError(f"{path}: not a classic pcap file (pcapng is not read here)")
        order, per_s = _MAGIC[struct.unpack("<I", head[:4])[0]]
        linktype = struct.unpack(order + "I", head[20:24])[0] & 0x0FFFFFFF
        rec = struct.Struct(order + "IIII")
        while len(hdr := fh.read(16)) == 16:
            sec, frac, incl, _orig = rec.unpack(hdr)
            yield sec + frac / per_s, linktype, fh.read(incl)


def _network(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """(offset, ethertype) of the network header of a frame, or None for a link type not read here."""
    if linktype == _LINK_ETHERNET:
        if frame[12:14] == b"\x81\x00":  # one 802.1Q tag
            return 18, frame[16:18]
        return 14, frame[12:14]
    if linktype == _LINK_SLL:
        return 16, frame[14:16]
    if linktype == _LINK_SLL2:
        return 20, frame[0:2]
    return None


def _tcp_offset(frame: bytes, off: int, ethertype: bytes) -> tuple[int, int, int] | None:
    """(TCP header offset, address offset, address length) of an IPv4 or IPv6 TCP packet at ``off``, or None."""
    if ethertype == _IPV4 and len(frame) >= off + 20 and frame[off + 9] == 6:
        return off + (frame[off] & 0x0F) * 4, off + 12, 4
    if ethertype != _IPV6 or len(frame) < off + 40:
        return None
    nxt, tcp = frame[off + 6], off + 40
    while nxt in _IPV6_EXTENSIONS and len(frame) >= tcp + 2:
        nxt, tcp = frame[tcp], tcp + (frame[tcp + 1] + 1) * 8
    return (tcp, off + 8, 16) if nxt == 6 else None


def _tcp(linktype: int, frame: bytes) -> tuple[Conn, int] | None:
    """((src, sport, dst, dport), flags) of an IPv4 or IPv6 TCP frame, or None."""
    net = _network(linktype, frame)
    found = _tcp_offset(frame, *net) if net is not None else None
    if found is None:
        return None
    tcp, addr, size = found
    if len(frame) < tcp + 14:
        return None
    sport, dport = struct.unpack("!HH", frame[tcp : tcp + 4])
    return (frame[addr : addr + size], sport, frame[addr + size : addr + 2 * size], dport), frame[tcp + 13]


@dataclass
class _Handshake:
    client: bytes
    syn_ts: float
    syns: int = 1
    synacks: int = 0
    synack_ts: float | None = None
    ack_ts: float | None = None

    def rtt(self) -> float | None:
        if self.ack_ts is None or self.syns != 1 or self.synacks != 1:
            return None
        return self.ack_ts - self.syn_ts


def _step(open_: dict[Conn, _Handshake], done: list[_Handshake], ts: float, conn: Conn, flags: int) -> None:
    """Advance the handshake ``conn`` (as sent) belongs to with one segment."""
    src, sport, dst, dport = conn
    if flags & _SYN and not flags & _ACK:
        hs = open_.get(conn)
        if hs is None or hs.ack_ts is not None:  # a new connection (maybe a reused port)
            if hs is not None:
                done.append(hs)
            open_[conn] = _Handshake(src, ts)
        else:
            hs.syns += 1
    elif flags & _SYN and flags & _ACK:
        if (hs := open_.get((dst, dport, src, sport))) is not None and hs.ack_ts is None:
            hs.synacks += 1
            hs.synack_ts = hs.synack_ts or ts
    elif flags & _ACK:
        hs = open_.get(conn)
        if hs is not None and hs.synack_ts is not None and hs.ack_ts is None:
            hs.ack_ts = ts


def _handshakes(pcap: Path) -> list[_Handshake]:
    """Every handshake begun in ``pcap``, in order of the SYNs."""
    open_: dict[Conn, _Handshake] = {}
    done: list[_Handshake] = []
    for ts, linktype, frame in pcap_records(pcap):
        seg = _tcp(linktype, frame)
        if seg is not None:
            _step(open_, done, ts, *seg)
    done.extend(open_.values())
    done.sort(key=lambda hs: hs.syn_ts)
    return done


def handshake_rtts(pcap: Path) -> list[float]:
    """Each complete TCP handshake's RTT in seconds (SYN to the client's ACK), in order of the SYNs.

    Parameters
    ----------
    pcap
        A classic pcap file (tcpdump ``-w``); a snap length of 64 bytes keeps every needed header.

    Example
    -------
    >>> handshake_rtts(Path("capture.pcap"))  # doctest: +SKIP
    [0.040211, 0.041003, ...]
    """
    return [rtt for hs in _handshakes(pcap) if (rtt := hs.rtt()) is not None]


def handshake_rtts_by_client(pcap: Path) -> dict[str, list[float]]:
    """:func:`handshake_rtts` grouped by the client's address (as text: ``10.213.1.2``, ``fd00:7477:1::2``)."""
    out: dict[str, list[float]] = {}
    for hs in _handshakes(pcap):
        if (rtt := hs.rtt()) is not None:
            out.setdefault(str(ipaddress.ip_address(hs.client)), []).append(rtt)
    return out


@dataclass(frozen=True)
class RttSummary:
    """Median and 90th percentile of RTTs, and the 90th percentile of |RTT − median| (the jitter), in ms."""

    count: int
    median_ms: float
    p90_ms: float
    jitter_p90_ms: float


def summarize(rtts: list[float]) -> RttSummary:
    """Summarize RTTs given in seconds (at least two); percentiles interpolate as ``statistics.quantiles``."""
    if len(rtts) < 2:
        raise DelayLineError(f"need at least two RTTs to summarize, got {len(rtts)}")
    ms = [r * 1000.0 for r in rtts]
    median = statistics.median(ms)
    p90 = statistics.quantiles(ms, n=10, method="inclusive")[-1]
    dev = statistics.quantiles([abs(x - median) for x in ms], n=10, method="inclusive")[-1]
    return RttSummary(len(ms), round(median, 3), round(p90, 3), round(dev, 3))

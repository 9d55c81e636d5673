"""Build small pcaps by hand with scapy: timestamped Ether/IP/TCP|UDP|ICMP packets between two hosts.

A :class:`Conversation` holds one client and one server. Each call appends one packet at a time given in
whole milliseconds after :data:`T0`; a fixed sub-millisecond offset (:data:`SUB_MS_US`) is added so that
the sensor's millisecond clock (NFStream truncates to whole milliseconds) reads exactly ``T0 + ms``.
TCP sequence and acknowledgement numbers are tracked per side so the packets look like a real session.

Example
-------
>>> c = Conversation(client=("10.0.0.1", 40000), server=("10.0.0.2", 80))
>>> c.tcp(0, CLIENT, "S", options=SYN_OPTIONS)
>>> c.tcp(1, SERVER, "SA")
>>> c.tcp(2, CLIENT, "A")
>>> len(c.packets), c.frame_bytes()
(3, 174)
>>> float(c.packets[1].time - c.packets[0].time)
0.001
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Packet, Raw
from scapy.utils import wrpcap

T0_MS = 1_700_000_000_000
"""Capture start in epoch milliseconds."""
SUB_MS_US = 437
"""Microseconds added to every packet: below 1 ms, so the sensor truncates it away."""
T0 = Decimal(T0_MS) / 1000

CLIENT = True
SERVER = False

ETHER_IP = 14 + 20
"""Ethernet + IPv4 header bytes of every frame built here (no VLAN, no IP options)."""

SYN_OPTIONS: tuple[tuple[str, object], ...] = (
    ("MSS", 1460),
    ("NOP", None),
    ("WScale", 7),
    ("SAckOK", b""),
    ("NOP", None),
    ("NOP", None),
)
"""4 + 1 + 3 + 2 + 1 + 1 = 12 option bytes: a 32-byte TCP header (data offset 8), no padding needed."""

MSS_ONLY: tuple[tuple[str, object], ...] = (("MSS", 1460),)
"""4 option bytes: a 24-byte TCP header."""


def stamp(ms: int) -> Decimal:
    """The pcap timestamp of a packet ``ms`` milliseconds after :data:`T0`.

    >>> stamp(5) - T0
    Decimal('0.005437')
    """
    return T0 + Decimal(ms) / 1000 + Decimal(SUB_MS_US) / 1_000_000


@dataclass
class _Side:
    ip: str
    port: int
    mac: str
    seq: int


class Conversation:
    """Packets between one client and one server, in capture order.

    Parameters
    ----------
    client, server
        (IPv4 address, port); the port is ignored for ICMP.
    """

    def __init__(self, client: tuple[str, int], server: tuple[str, int]) -> None:
        self.client = _Side(client[0], client[1], "02:00:00:00:00:01", 1_000)
        self.server = _Side(server[0], server[1], "02:00:00:00:00:02", 5_000)
        self.packets: list[Packet] = []

    def _ends(self, from_client: bool) -> tuple[_Side, _Side]:
        return (self.client, self.server) if from_client else (self.server, self.client)

    def _add(self, ms: int, from_client: bool, l4: Packet) -> None:
        src, dst = self._ends(from_client)
        pkt = Ether(src=src.mac, dst=dst.mac) / IP(src=src.ip, dst=dst.ip, ttl=64) / l4
        pkt.time = stamp(ms)
        if self.packets and pkt.time < self.packets[-1].time:
            raise ValueError(f"packet at {ms} ms is earlier than the previous one")
        self.packets.append(pkt)

    def tcp(
        self,
        ms: int,
        from_client: bool,
        flags: str,
        payload: int = 0,
        window: int = 8192,
        options: tuple[tuple[str, object], ...] = (),
    ) -> None:
        """Append a TCP segment with ``payload`` bytes of data and the given flags (scapy letters)."""
        src, dst = self._ends(from_client)
        ack = dst.seq if "A" in flags else 0
        seg = TCP(sport=src.port, dport=dst.port, flags=flags, seq=src.seq, ack=ack, window=window,
                  options=list(options))  # fmt: skip
        if payload:
            seg = seg / Raw(b"d" * payload)
        src.seq += payload + ("S" in flags) + ("F" in flags)
        self._add(ms, from_client, seg)

    def udp(self, ms: int, from_client: bool, payload: int) -> None:
        """Append a UDP datagram with ``payload`` bytes."""
        src, dst = self._ends(from_client)
        self._add(ms, from_client, UDP(sport=src.port, dport=dst.port) / Raw(b"u" * payload))

    def icmp(self, ms: int, from_client: bool, type_: int, code: int = 0, seq: int = 0, payload: int = 56) -> None:
        """Append an ICMP message (echo: type 8 request, type 0 reply) carrying ``payload`` data bytes."""
        msg = ICMP(type=type_, code=code, id=0x1234, seq=seq) / Raw(b"i" * payload)
        self._add(ms, from_client, msg)

    def frame_bytes(self) -> int:
        """Sum of whole frame lengths, as written to the pcap."""
        return sum(len(p) for p in self.packets)

    def write(self, path: Path) -> Path:
        """Write the packets as a classic (microsecond) pcap and return ``path``."""
        wrpcap(str(path), self.packets, linktype=1)
        return path

"""What an upload is: a pcap, a pcapng or a CICFlowMeter-style CSV, checked by content before anything is stored.

A capture is walked record by record (pcap) or block by block (pcapng) without reading the packets: a truncated or
corrupt file is refused with where it breaks, and the first and last packet times it yields give the job's progress
bar its scale. A CSV must have a header with the flow columns ``tapwatch score`` needs.
"""

from __future__ import annotations

import csv
import enum
import io
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tapwatch.features.errors import BadInputError

_PCAP_MAGIC = {
    b"\xa1\xb2\xc3\xd4": (">", 1e-6), b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
    b"\xa1\xb2\x3c\x4d": (">", 1e-9), b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
}  # fmt: skip
_PCAPNG = b"\x0a\x0d\x0d\x0a"
_MAX_RECORD = 1 << 18  # 256 KiB: larger than any link's frame, smaller than a corrupt length field usually is
_CSV_NEEDS = ({"Dst Port", "Destination Port"}, {"Flow Duration"})


class Kind(str, enum.Enum):
    PCAP = "pcap"
    PCAPNG = "pcapng"
    CSV = "csv"


@dataclass(frozen=True)
class Checked:
    """An upload that passed: its kind, packets (or CSV rows), and first and last packet times (epoch s)."""

    kind: Kind
    records: int
    first_s: float | None = None
    last_s: float | None = None
    labelled: bool = False


def refuse(problem: str) -> BadInputError:
    return BadInputError("upload", problem)


def sniff(head: bytes) -> Kind:
    """The kind of a file from its first bytes; :class:`BadInputError` for anything else."""
    if head[:4] in _PCAP_MAGIC:
        return Kind.PCAP
    if head[:4] == _PCAPNG:
        return Kind.PCAPNG
    try:
        first_line = head.decode("utf-8-sig").splitlines()[0] if head else ""
    except UnicodeDecodeError:
        first_line = ""
    columns = {c.strip() for c in next(csv.reader([first_line]), [])}
    if all(columns & need for need in _CSV_NEEDS):
        return Kind.CSV
    raise refuse("not a pcap, pcapng or CICFlowMeter-style CSV (a CSV needs a header with Dst Port and Flow Duration)")


def check(path: Path) -> Checked:
    """Walk the stored file; :class:`BadInputError` naming where it breaks."""
    with path.open("rb") as fh:
        kind = sniff(fh.read(4096))
        fh.seek(0)
        if kind is Kind.PCAP:
            return _pcap(fh)
        if kind is Kind.PCAPNG:
            return _pcapng(fh)
    return _csv(path)


def _pcap(fh: BinaryIO) -> Checked:
    header = fh.read(24)
    if len(header) < 24:
        raise refuse("a pcap file shorter than its 24-byte header")
    order, unit = _PCAP_MAGIC[header[:4]]
    snaplen = struct.unpack(order + "I", header[16:20])[0]
    limit = max(snaplen, _MAX_RECORD) if snaplen else _MAX_RECORD
    n, first, last, offset = 0, None, None, 24
    while True:
        rec = fh.read(16)
        if not rec:
            break
        if len(rec) < 16:
            raise refuse(f"corrupt pcap: it ends inside the header of packet {n + 1} (byte {offset})")
        sec, frac, incl, _orig = struct.unpack(order + "IIII", rec)
        if incl > limit:
            raise refuse(f"corrupt pcap: packet {n + 1} (byte {offset}) claims {incl} bytes")
        if len(fh.read(incl)) < incl:
            raise refuse(f"corrupt pcap: it ends inside packet {n + 1} (byte {offset})")
        t = sec + frac * unit
        first = t if first is None else first
        last = t if last is None or t > last else last
        n, offset = n + 1, offset + 16 + incl
    if n == 0:
        raise refuse("the pcap holds no packet")
    return Checked(Kind.PCAP, n, first, last)


def _pcapng(fh: BinaryIO) -> Checked:
    n, first, last, offset, order = 0, None, None, 0, "<"
    resolution: list[float] = []
    while True:
        head = fh.read(8)
        if not head:
            break
        if len(head) < 8:
            raise refuse(f"corrupt pcapng: it ends inside a block header (byte {offset})")
        if head[:4] == _PCAPNG:
            bom = fh.read(4)
            order = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">" if bom == b"\x1a\x2b\x3c\x4d" else ""
            if not order:
                raise refuse(f"corrupt pcapng: bad byte-order magic at byte {offset + 8}")
            resolution = []
            fh.seek(-4, io.SEEK_CUR)
        btype, length = struct.unpack(order + "II", head)
        if length < 12 or length % 4 or length > _MAX_RECORD + 64:
            raise refuse(f"corrupt pcapng: a block at byte {offset} claims {length} bytes")
        body = fh.read(length - 8)
        if len(body) < length - 8:
            raise refuse(f"corrupt pcapng: it ends inside the block at byte {offset}")
        if struct.unpack(order + "I", body[-4:])[0] != length:
            raise refuse(f"corrupt pcapng: the block at byte {offset} has mismatched lengths")
        if btype == 1:  # interface description: its timestamp resolution (if_tsresol), 10^-6 unless said
            resolution.append(_tsresol(body[8:-4], order))
        elif btype == 6:  # enhanced packet
            iface, high, low = struct.unpack(order + "III", body[:12])
            if iface >= len(resolution):
                raise refuse(f"corrupt pcapng: packet at byte {offset} names interface {iface}, which is not described")
            t = ((high << 32) | low) * resolution[iface]
            first = t if first is None else first
            last = t if last is None or t > last else last
            n += 1
        elif btype == 3:
            n += 1
        offset += length
    if n == 0:
        raise refuse("the pcapng holds no packet")
    return Checked(Kind.PCAPNG, n, first, last)


def _tsresol(options: bytes, order: str) -> float:
    i = 0
    while i + 4 <= len(options):
        code, size = struct.unpack(order + "HH", options[i : i + 4])
        if code == 0:
            break
        if code == 9 and size >= 1:
            v = options[i + 4]
            return float(2 ** -(v & 0x7F)) if v & 0x80 else float(10**-v)
        i += 4 + (size + 3) // 4 * 4
    return 1e-6


def _csv(path: Path) -> Checked:
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        reader = csv.reader(fh)
        header = [c.strip() for c in next(reader, [])]
        rows = sum(1 for row in reader if row)
    if rows == 0:
        raise refuse("the CSV has a header but no flow")
    return Checked(Kind.CSV, rows, labelled="Label" in header)

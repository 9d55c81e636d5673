"""Check capture sources before NFStream sees them, so bad input gets one clear line.

NFStream stops silently on a truncated or corrupt pcap and returns partial results. :func:`scan_pcap`
walks the file's record structure first (headers only, through ``mmap``), counts the packet records and
finds where the structure breaks; the sensor reports that after processing the readable part.
:func:`check_interface` checks that an interface exists and that the process may capture on it
(CAP_NET_RAW).
"""

from __future__ import annotations

import errno
import mmap
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from tapwatch.capture.fastpath import walk_pcap
from tapwatch.features.errors import BadInputError

_PCAP_MAGICS = {
    b"\xd4\xc3\xb2\xa1": "<",
    b"\xa1\xb2\xc3\xd4": ">",
    b"\x4d\x3c\xb2\xa1": "<",  # nanosecond timestamps
    b"\xa1\xb2\x3c\x4d": ">",
}
_PCAPNG_SHB = b"\x0a\x0d\x0d\x0a"
_PCAPNG_PACKET_BLOCKS = {2, 3, 6}  # obsolete packet, simple packet, enhanced packet
_MAX_RECORD = 262_144 * 4  # larger than any snap length libpcap writes: a bigger record is corruption
MAX_CAPTURE_MS = 253_402_300_799_999
"""9999-12-31 23:59:59.999 UTC in epoch ms: the latest time every output (CSV, EVE JSON) can write. NFStream keeps
packet times as unsigned ms, so a time libpcap reads as before 1970 comes out near 2^64, far past this."""
_RELEASE_EVERY = 64 << 20  # drop walked pages from RSS every 64 MiB: a 1 GB pcap would otherwise count in full


class _Pager:
    """Give back the pages of the map already walked (they are file cache, but they count as RSS)."""

    def __init__(self, m: mmap.mmap) -> None:
        self.m = m
        self.done = 0

    def walked(self, off: int) -> None:
        if off - self.done >= _RELEASE_EVERY:
            upto = off - off % mmap.PAGESIZE
            self.m.madvise(mmap.MADV_DONTNEED, self.done, upto - self.done)
            self.done = upto


@dataclass(frozen=True)
class PcapScan:
    """What the structure walk found.

    Parameters
    ----------
    path
        The file.
    packets
        Complete packet records before the end or the first break.
    bytes_read
        Offset where the readable part ends.
    size
        File size in bytes.
    problem
        None for a sound file, otherwise a phrase such as ``"truncated: ..."``.
    """

    path: str
    packets: int
    bytes_read: int
    size: int
    problem: str | None = None
    last_ms: int = 0
    """Timestamp of the last readable packet, epoch milliseconds."""

    read: bool = True
    """False for a file refused before NFStream saw it (a link type it cannot decode); nothing of it was read."""

    def message(self) -> str:
        return f"{self.path}: {self.problem}"

    def line(self, done: str) -> str:
        """The one-line report: the problem, then ``done`` (what became of the readable part), or that it was not
        read at all."""
        return f"{self.message()}; {done if self.read else 'the file was not read'}"


def _open_checked(path: str) -> int:
    try:
        return _checked_size(Path(path))
    except PermissionError as err:
        raise BadInputError(path, "permission denied") from err
    except OSError as err:
        raise BadInputError(path, err.strerror or str(err)) from err


def _checked_size(p: Path) -> int:
    path = str(p)
    if not p.exists():
        raise BadInputError(path, "no such file")
    if p.is_dir():
        raise BadInputError(path, "is a directory, not a pcap file")
    if not os.access(path, os.R_OK):
        raise BadInputError(path, "permission denied")
    size = p.stat().st_size
    if size == 0:
        raise BadInputError(path, "empty file (0 bytes), not a pcap")
    return size


def probe_pcap(path: str) -> None:
    """Raise :class:`BadInputError` unless the file exists, is readable and starts like a capture.

    The quick check done before any output; :func:`scan_pcap` walks the whole structure.
    """
    size = _open_checked(str(path))
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
    except OSError as err:
        raise BadInputError(str(path), err.strerror or str(err)) from err
    if head in _PCAP_MAGICS and size < 24:
        raise BadInputError(str(path), f"truncated: {size} bytes, shorter than the 24-byte pcap header; 0 packets read")
    if len(head) < 4 and _PCAPNG_SHB.startswith(head):  # "\n\r\r" would read as blank text: say what it is
        header = "28-byte pcapng section header block"
        raise BadInputError(str(path), f"truncated: {size} bytes, shorter than the {header}; 0 packets read")
    if len(head) < 4 and any(magic.startswith(head) for magic in _PCAP_MAGICS):
        raise BadInputError(str(path), f"truncated: {size} bytes, shorter than the 24-byte pcap header; 0 packets read")
    if head not in _PCAP_MAGICS and head != _PCAPNG_SHB:
        raise BadInputError(str(path), not_a_capture(path))


def not_a_capture(path: str) -> str:
    """What a file that is no pcap or pcapng looks like, in words a person can act on.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "x.pcap")
    >>> _ = open(f, "wb").write(b"hello, this is text\\n")
    >>> not_a_capture(f)
    "not a pcap or pcapng file: it looks like text ('hello, this is text')"
    >>> _ = open(f, "wb").write(bytes([0x1F, 0x8B, 8, 0]) + bytes(20))
    >>> not_a_capture(f)
    'not a pcap or pcapng file: it is gzip-compressed; decompress it first (gunzip)'
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(_SNIFF_BYTES)
    except OSError as err:
        return f"cannot be read: {err.strerror or err}"
    return f"not a pcap or pcapng file: {_describe(head)}"


_SNIFF_BYTES = 512
_KNOWN_FORMATS = (
    (b"\x1f\x8b", "it is gzip-compressed; decompress it first (gunzip)"),
    (b"BZh", "it is bzip2-compressed; decompress it first (bunzip2)"),
    (b"\xfd7zXZ\x00", "it is xz-compressed; decompress it first (unxz)"),
    (b"\x28\xb5\x2f\xfd", "it is zstd-compressed; decompress it first (unzstd)"),
    (b"PK\x03\x04", "it is a zip archive; extract the capture first (unzip)"),
    (b"\x7fELF", "it is a program (ELF executable)"),
    (b"%PDF", "it is a PDF document"),
    (b"snoop\x00\x00\x00", "it is a Solaris snoop capture; convert it first (editcap -F pcap IN OUT)"),
    (b"\x00\x00\x00\x00\x00\x00\x00\x00", "it starts with zero bytes (a blank or damaged file)"),
)
"""Leading bytes of formats users hand over by mistake, with what to do about them."""


def _describe(head: bytes) -> str:
    for magic, words in _KNOWN_FORMATS:
        if head.startswith(magic):
            return words
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\t\r\n" for c in text):
        first = text.strip().splitlines()[0][:40] if text.strip() else ""
        return f"it looks like text ({first!r})"
    return f"unknown format (first bytes {head[:4].hex()})"


LINKTYPES_DECODED = {
    0: "BSD loopback", 1: "Ethernet", 9: "PPP", 12: "raw IP", 14: "raw IP", 50: "PPP in HDLC framing",
    101: "raw IP", 104: "Cisco HDLC", 113: "Linux cooked capture", 228: "raw IPv4", 229: "raw IPv6",
}  # fmt: skip
"""Link types NFStream's packet decoder handles (its ``packet_datalink_checker``), by pcap LINKTYPE number."""

LINKTYPES_REFUSED = {
    105: "IEEE 802.11 Wi-Fi", 119: "IEEE 802.11 with Prism header", 127: "IEEE 802.11 with radiotap header",
    163: "IEEE 802.11 with AVS header", 192: "PPI", 108: "OpenBSD loopback", 276: "Linux cooked capture v2",
    187: "Bluetooth HCI", 189: "USB (Linux)", 195: "IEEE 802.15.4", 220: "USB (Linux, memory-mapped)",
}  # fmt: skip
"""Link types seen in the wild that NFStream cannot decode, named for the message. Radiotap (127) is refused too:
NFStream's decoder for it takes only unencrypted data frames with a 26-byte 802.11 header, so a monitor-mode
capture gives no flows (or wrong ones) without a word."""

_PCAPNG_IDB = 1
_LINKTYPE_PROBE_BYTES = 1 << 20  # interface blocks precede the packets they describe: look in the first MiB


def link_types(path: str) -> list[int]:
    """The link types a capture declares: the pcap header's, or each pcapng interface block's (first MiB).

    >>> import os, struct, tempfile
    >>> f = os.path.join(tempfile.mkdtemp(), "wifi.pcap")
    >>> _ = open(f, "wb").write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 105))
    >>> link_types(f)
    [105]
    """
    with open(path, "rb") as fh:
        head = fh.read(_LINKTYPE_PROBE_BYTES)
    if head[:4] in _PCAP_MAGICS and len(head) >= 24:
        return [struct.unpack_from(_PCAP_MAGICS[head[:4]] + "I", head, 20)[0] & 0xFFFF]
    found: list[int] = []
    off, endian = 0, "<"
    while off + 12 <= len(head) and head[:4] == _PCAPNG_SHB:
        if head[off : off + 4] == _PCAPNG_SHB:
            endian = "<" if head[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(endian + "II", head, off)
        if btype == _PCAPNG_IDB:
            found.append(struct.unpack_from(endian + "H", head, off + 8)[0])
        if blen < 12:
            break
        off += blen
    return found


def link_type_problem(path: str) -> str | None:
    """Why a capture's link type cannot be decoded, or None when NFStream decodes it."""
    for lt in link_types(path):
        if lt not in LINKTYPES_DECODED:
            name = LINKTYPES_REFUSED.get(lt, "unknown")
            return (f"link type {lt} ({name}) cannot be decoded; tapwatch reads Ethernet, Linux cooked capture, "
                    "raw IP, BSD loopback and PPP captures")  # fmt: skip
    return None


def scan_pcap(path: str) -> PcapScan:
    """Walk a pcap or pcapng file; raise :class:`BadInputError` when it cannot be read at all.

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); f = os.path.join(d, "x.pcap")
    >>> _ = open(f, "wb").write(b"not a capture at all, just text")
    >>> try: scan_pcap(f)
    ... except BadInputError as e: print(e.problem)
    not a pcap or pcapng file: it looks like text ('not a capture at all, just text')
    """
    size = _open_checked(str(path))
    try:
        fh = open(path, "rb")  # noqa: SIM115 (closed below; mmap needs the descriptor)
    except OSError as err:
        raise BadInputError(str(path), err.strerror or str(err)) from err
    with fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as m:
        head = m[:4]
        if head in _PCAP_MAGICS:
            return _scan_pcap(str(path), m, size, _PCAP_MAGICS[head])
        if head == _PCAPNG_SHB:
            return _scan_pcapng(str(path), m, size)
    raise BadInputError(str(path), not_a_capture(path))


def _scan_pcap(path: str, m: mmap.mmap, size: int, endian: str) -> PcapScan:
    if size < 24:
        raise BadInputError(path, f"truncated: {size} bytes, shorter than the 24-byte pcap header; 0 packets read")
    rec = struct.Struct(endian + "IIII")
    frac_per_ms = 1_000_000 if m[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d") else 1000
    off, n, last = 24, 0, 0
    pager = _Pager(m)
    while off < size:
        pager.walked(off)
        if walk_pcap is not None:  # the ordinary records in C, up to the next page release; the rest below
            end = min(size, off + _RELEASE_EVERY)
            off, n, last = walk_pcap(m, off, end, endian == ">", frac_per_ms, _MAX_RECORD, n, last)
            if off >= size:
                break
            if off >= end:
                continue
        if off + 16 > size:
            return PcapScan(path, n, off, size, _truncated(n, off, size), last)
        sec, frac, incl, _ = rec.unpack_from(m, off)
        if incl > _MAX_RECORD:
            return PcapScan(path, n, off, size, _corrupt(n, off, size, f"record length {incl}"), last)
        if off + 16 + incl > size:
            return PcapScan(path, n, off, size, _truncated(n, off, size), last)
        ms = sec * 1000 + frac // frac_per_ms
        if (sec | frac) >> 31:  # libpcap reads both as signed 32-bit: this may be a time before 1970
            ms = _signed32(sec) * 1000 + int(_signed32(frac) / frac_per_ms)
            if ms < 0:
                return PcapScan(path, n, off, size, _corrupt(n, off, size, f"timestamp {_when(ms)}"), last)
        last = max(last, ms)
        off += 16 + incl
        n += 1
    return PcapScan(path, n, off, size, None, last)


def _scan_pcapng(path: str, m: mmap.mmap, size: int) -> PcapScan:
    off, n, endian, last = 0, 0, "<", 0
    resolutions: list[int] = []  # timestamp units per second of each interface of the section
    pager = _Pager(m)
    while off < size:
        pager.walked(off)
        if off + 12 > size:
            return PcapScan(path, n, off, size, _truncated(n, off, size), last)
        btype_raw = m[off : off + 4]
        if btype_raw == _PCAPNG_SHB:
            bom = m[off + 8 : off + 12]
            endian = "<" if bom == b"\x4d\x3c\x2b\x1a" else ">"
        btype, blen = struct.unpack_from(endian + "II", m, off)
        if blen < 12 or blen % 4 or blen > _MAX_RECORD:
            return PcapScan(path, n, off, size, _corrupt(n, off, size, f"block length {blen}"), last)
        if off + blen > size:
            return PcapScan(path, n, off, size, _truncated(n, off, size), last)
        if btype_raw == _PCAPNG_SHB:
            resolutions = []
        elif btype == _PCAPNG_IDB:
            resolutions.append(_if_tsresol(m, off, blen, endian))
        elif btype == 6 and blen >= 28:  # enhanced packet block: interface, timestamp in that interface's units
            iface, hi, lo = struct.unpack_from(endian + "III", m, off + 8)
            units = resolutions[iface] if iface < len(resolutions) else 1_000_000
            ms = ((hi << 32) | lo) * 1000 // units
            if ms > MAX_CAPTURE_MS:
                return PcapScan(path, n, off, size, _corrupt(n, off, size, f"timestamp {_when(ms)}"), last)
            last = max(last, ms)
        n += btype in _PCAPNG_PACKET_BLOCKS
        off += blen
    return PcapScan(path, n, off, size, None, last)


def _signed32(x: int) -> int:
    return x - (1 << 32) if x >= 1 << 31 else x


def _when(ms: int) -> str:
    """A timestamp no output can hold, in words.

    >>> _when(-1000), _when(MAX_CAPTURE_MS + 1)
    ('-1 s (before 1970)', '253402300800 s (after the year 9999)')
    """
    return f"{ms // 1000} s ({'before 1970' if ms < 0 else 'after the year 9999'})"


def _if_tsresol(m: mmap.mmap, off: int, blen: int, endian: str) -> int:
    """Timestamp units per second of the interface block at ``off``: its if_tsresol option (code 9), else 10^6.

    A resolution libpcap refuses (above 2^-63 or 10^-19) is returned as is: libpcap's own error names it.
    """
    opt, end = off + 16, off + blen - 4
    while opt + 4 <= end:
        code, length = struct.unpack_from(endian + "HH", m, opt)
        if code == 0:
            break
        if code == 9 and length >= 1 and opt + 5 <= end:
            res = m[opt + 4]
            return 1 << (res & 0x7F) if res & 0x80 else 10**res
        opt += 4 + length + (-length % 4)
    return 1_000_000


def _truncated(n: int, off: int, size: int) -> str:
    return f"truncated: the file ends inside record {n + 1}; read {n} packets ({off} of {size} bytes)"


def _corrupt(n: int, off: int, size: int, what: str) -> str:
    return f"corrupt: invalid {what} at byte {off}; read {n} packets ({off} of {size} bytes)"


def check_interface(name: str) -> None:
    """Raise :class:`BadInputError` unless ``name`` exists and this process may capture on it."""
    if not name or "/" in name or not Path("/sys/class/net", name).exists():
        raise BadInputError(name, "no such network interface")
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as err:
        raise BadInputError(name, "permission denied: live capture needs CAP_NET_RAW") from err
    except OSError as err:
        if err.errno in (errno.EPERM, errno.EACCES):
            raise BadInputError(name, "permission denied: live capture needs CAP_NET_RAW") from err
        raise
    s.close()

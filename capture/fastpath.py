"""The meter's per-packet hot path: compiled when it was built, plain Python otherwise.

:class:`~tapwatch.capture.cicflow.CicFlow` and :func:`py_decode` are the definition; ``tapwatch.capture._cicflow``
(``capture/_cicflow.c``, built by ``pip install .`` when a C compiler is present) is the same state machine
in C, the same snapshot out, and the parity tests compare the two packet by packet and flow by flow. The
plugin uses :data:`FlowState` and :func:`decode`, which are the compiled ones unless the module is missing or
``TAPWATCH_PURE_PYTHON=1`` is set in the environment (read at import).

>>> COMPILED in (True, False)
True
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tapwatch.capture.cicflow import CicFlow

log = logging.getLogger(__name__)

Decoded = tuple[int, int, int, int, "tuple[int, int] | None"]


def py_decode(pkt: Any) -> Decoded:
    """Read what CICFlowMeter reads of an NFStream packet: (payload, header, flags, window, icmp).

    TCP flags and window come from the raw TCP header; lengths from NFStream, which derives them from
    the IP total length (Ethernet padding is never payload). ICMP payload and header count 0.
    """
    proto = pkt.protocol
    if proto == 6:
        ip = pkt.ip_packet
        off = (ip[0] & 0x0F) * 4 if pkt.ip_version == 4 else (40 if len(ip) > 6 and ip[6] == 6 else -1)
        if off >= 0 and len(ip) >= off + 16:
            flags = ip[off + 13]
            window = (ip[off + 14] << 8) | ip[off + 15]
        else:
            flags = pkt.fin | pkt.syn << 1 | pkt.rst << 2 | pkt.psh << 3 | pkt.ack << 4 | pkt.urg << 5
            flags |= pkt.ece << 6 | pkt.cwr << 7
            window = 0
        payload = pkt.payload_size
        return payload, pkt.transport_size - payload, flags, window, None
    if proto == 17:
        return pkt.payload_size, 8, 0, 0, None
    icmp = None
    if proto in (1, 58):
        ip = pkt.ip_packet
        off = (ip[0] & 0x0F) * 4 if pkt.ip_version == 4 else 40
        if len(ip) >= off + 2:
            icmp = (ip[off], ip[off + 1])
    return 0, 0, 0, 0, icmp


COMPILED_MAX_MS = (2**63 - 1) // 1000 - 1
"""The compiled state keeps times as 64-bit microseconds: packet times (ms) below this (the year 2262)."""

FlowState: Any = CicFlow
decode: Any = py_decode
walk_pcap: Any = None
"""The pcap structure walk's loop over ordinary records (:func:`tapwatch.capture.source.scan_pcap`), compiled."""
COMPILED = False
"""True when the plugin runs the compiled state machine."""

LAYOUT_FIELDS = ("direction", "time", "ip_version", "protocol", "fin", "raw_size", "transport_size", "payload_size",
                 "ip_content_len", "ip_content")  # fmt: skip
"""The fields of NFStream's ``struct nf_packet`` the compiled ``add_raw`` reads ("fin": the flags' word)."""
_SIZES = {"direction": 1, "time": 8, "ip_version": 1, "protocol": 1, "raw_size": 2, "transport_size": 2,
          "payload_size": 2, "ip_content_len": 2}  # fmt: skip
FLAG_FIELDS = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")


def packet_layout(ffi: Any) -> tuple[tuple[int, ...], tuple[int, ...]] | None:
    """Offsets of :data:`LAYOUT_FIELDS` and the bit of each TCP flag, from cffi's description of NFStream's
    ``struct nf_packet``; None when the struct is not what ``add_raw`` reads (another NFStream build), and the
    plugin then keeps NFStream's own packets.

    >>> from _lib_engine import ffi
    >>> offsets, bits = packet_layout(ffi)
    >>> len(offsets), sorted(bits) == list(range(min(bits), min(bits) + 8))
    (10, True)
    """
    try:
        fields = dict(ffi.typeof("struct nf_packet").fields)
        if any(ffi.sizeof(fields[n].type) != size for n, size in _SIZES.items()):
            return None
        if fields["ip_content"].type != ffi.typeof("uint8_t *"):
            return None
        word = fields["fin"].offset
        if any(fields[f].offset != word or fields[f].bitsize != 1 for f in FLAG_FIELDS):
            return None
        bits = []
        for flag in FLAG_FIELDS:  # set one flag at a time and see which bit of the 16-bit word it is
            p = ffi.new("struct nf_packet *")
            setattr(p, flag, 1)
            value = int(ffi.cast("uint16_t *", ffi.cast("char *", p) + word)[0])
            if value == 0 or value & (value - 1):
                return None
            bits.append(value.bit_length() - 1)
        return tuple(fields[n].offset for n in LAYOUT_FIELDS), tuple(bits)
    except (AttributeError, KeyError, TypeError) as err:  # cffi or NFStream not as expected
        log.debug("NFStream's packet struct not as expected (%s): NFStream's packets are used", err)
        return None


if os.environ.get("TAPWATCH_PURE_PYTHON", "") not in ("1", "true", "yes"):
    try:
        from tapwatch.capture import _cicflow  # type: ignore[attr-defined]
    except ImportError as err:  # no compiler at install time: the definition runs, slower
        log.debug("compiled meter not available (%s): using the pure-Python one", err)
    else:
        FlowState, decode, walk_pcap, COMPILED = _cicflow.CicFlow, _cicflow.decode, _cicflow.walk_pcap, True

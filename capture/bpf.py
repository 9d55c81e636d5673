"""Check a BPF filter with libpcap before any packet is read, so a bad ``--bpf`` gets one line naming it.

NFStream compiles the filter only when its meter starts, and reports a failure as the input file's error
("sample.pcap: Unable to compile BPF filter"). :func:`check_bpf` compiles it first on a dead handle
(``pcap_open_dead``, Ethernet) through the system's libpcap, and returns libpcap's own words for the problem.
Where no libpcap can be loaded the check is skipped, and the meter's error is mapped onto the option instead
(:func:`bpf_error`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

from tapwatch.features.errors import BadInputError

DLT_EN10MB = 1
_SNAPLEN = 65_535
_NETMASK_UNKNOWN = 0xFFFFFFFF


class _Program(ctypes.Structure):
    _fields_ = [("bf_len", ctypes.c_uint), ("bf_insns", ctypes.c_void_p)]


@functools.cache
def _libpcap() -> Any:
    name = ctypes.util.find_library("pcap")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.pcap_open_dead.restype = ctypes.c_void_p
    lib.pcap_open_dead.argtypes = [ctypes.c_int, ctypes.c_int]
    lib.pcap_compile.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Program), ctypes.c_char_p, ctypes.c_int,
                                 ctypes.c_uint32]  # fmt: skip
    lib.pcap_geterr.restype = ctypes.c_char_p
    lib.pcap_geterr.argtypes = [ctypes.c_void_p]
    lib.pcap_freecode.argtypes = [ctypes.POINTER(_Program)]
    lib.pcap_close.argtypes = [ctypes.c_void_p]
    return lib


def bpf_error(expression: str, problem: str) -> BadInputError:
    """The one-line error for a filter libpcap refused, naming the option and the filter."""
    return BadInputError("--bpf", f"{expression!r} is not a valid BPF filter: {problem}")


def check_bpf(expression: str | None) -> None:
    """Raise :class:`BadInputError` naming ``--bpf`` when libpcap cannot compile ``expression``.

    >>> check_bpf("tcp or udp")
    >>> try: check_bpf("this is not bpf")
    ... except BadInputError as e: print(e)
    --bpf: 'this is not bpf' is not a valid BPF filter: can't parse filter expression: syntax error
    """
    lib = _libpcap()
    if not expression or lib is None:
        return
    handle = lib.pcap_open_dead(DLT_EN10MB, _SNAPLEN)
    if not handle:
        return
    try:
        prog = _Program()
        if lib.pcap_compile(handle, ctypes.byref(prog), expression.encode(), 1, _NETMASK_UNKNOWN) != 0:
            raise bpf_error(expression, (lib.pcap_geterr(handle) or b"").decode(errors="replace") or "refused")
        lib.pcap_freecode(ctypes.byref(prog))
    finally:
        lib.pcap_close(handle)

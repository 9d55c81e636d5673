"""The compiled meter (capture/_cicflow.c) against its definition (capture/cicflow.py, ``fastpath.py_decode``).

Random packet sequences (many seeds) go to both :class:`CicFlow` classes; after every packet the two snapshots
must be equal, element by element and type by type (ints, float infinities where a minimum or maximum is
still unset, flag dicts in the same order, the icmp tuple), and the Python class must compute the same 82
values from either. ``decode`` must return what ``py_decode`` returns for packets built like NFStream's,
or raise the same exception. Without the built module these tests skip; under CI=true they fail.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from tapwatch.capture import fastpath
from tapwatch.capture.cicflow import (
    _STATE_NAMES,
    ACK,
    CWR,
    ECE,
    FIN,
    FIRST_FIN,
    OPEN,
    PSH,
    READY,
    RST,
    SECOND_FIN,
    SYN,
    URG,
    CicFlow,
)
from tapwatch.capture.fastpath import py_decode
from tests.support.env import need

try:
    from tapwatch.capture import _cicflow as _built  # type: ignore[attr-defined]
except ImportError:
    _built = None

COMMON_FLAGS = (0, SYN, SYN | ACK, ACK, PSH | ACK, FIN | ACK, FIN, RST, RST | ACK, FIN | PSH | ACK, URG | ACK,
                ECE | CWR | SYN)  # fmt: skip
GAPS_US = (0, 1, 1000, 999_999, 1_000_000, 1_000_001, 4_999_999, 5_000_000, 5_000_001, 6_000_000, 10**12, -1000)
"""Gaps around the 1 s bulk gap and the 5 s activity timeout, a huge one (its square exceeds int64), and a
clock that steps back."""


@pytest.fixture
def compiled() -> ModuleType:
    need(_built is not None, "compiled meter not built")
    assert _built is not None
    return _built


def test_the_plugin_runs_the_compiled_meter() -> None:
    need(fastpath.COMPILED, "compiled meter not built" if _built is None else "TAPWATCH_PURE_PYTHON is set")
    assert _built is not None
    assert fastpath.FlowState is _built.CicFlow and fastpath.decode is _built.decode
    assert _built.STATE_NAMES == _STATE_NAMES


# -- CicFlow ----------------------------------------------------------------------------------------------
def assert_same(c: Any, p: CicFlow) -> None:
    """Equal snapshots with equal element types (and dicts in the same order), equal readable attributes."""
    cs, ps = c.snapshot(), p.snapshot()
    assert cs == ps
    for name, cv, pv in zip(_STATE_NAMES, cs[0], ps[0], strict=True):
        assert type(cv) is type(pv), name
        if isinstance(pv, dict):
            assert list(cv.items()) == list(pv.items()), name
            assert all(type(k) is int and type(v) is int for k, v in cv.items()), name
        if isinstance(pv, tuple):
            assert [type(x) for x in cv] == [type(x) for x in pv], name
    for cb, pb in zip(cs[1:], ps[1:], strict=True):
        assert [type(x) for x in cb] == [type(x) for x in pb] == [int] * 4
    for attr in ("tcp_state", "start_us", "last_us", "carried_us", "protocol", "packets"):
        assert getattr(c, attr) == getattr(p, attr), attr


def random_flow(rng: random.Random) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Constructor arguments and packets for one flow: mostly TCP, also UDP, ICMP and another protocol."""
    protocol = rng.choice((6, 6, 6, 17, 1, 58, 47))
    kwargs: dict[str, Any] = {}
    if rng.random() < 0.5:
        kwargs["activity_timeout_us"] = rng.choice((5_000_000, 1_000, 0, 2_000_000))
    if protocol == 1 or rng.random() < 0.1:
        kwargs["icmp"] = (rng.randrange(256), rng.randrange(256))
    if rng.random() < 0.3:
        kwargs["carried_us"] = rng.choice((1_000, 120_000_000, 10**13))
    t = rng.choice((0, 1_000, 1_700_000_000_000_000))
    packets = [packet(rng, protocol, t)]
    for _ in range(rng.randrange(0, 60)):
        t += rng.choice(GAPS_US) if rng.random() < 0.6 else rng.randrange(0, 3_000_000)
        packets.append(packet(rng, protocol, t))
    return {"protocol": protocol, **kwargs}, packets


def packet(rng: random.Random, protocol: int, t: int) -> tuple[Any, ...]:
    """(t, fwd, payload, header, flags, window): any flag byte, payloads 0 and > 0, bools or ints for fwd."""
    fwd: Any = rng.random() < 0.6
    if rng.random() < 0.1:
        fwd = int(fwd)
    payload = rng.choice((0, 0, 1, rng.randrange(1, 1461), 65_535))
    header = rng.choice((20, 32, 40, 8, 0)) if protocol != 17 else 8
    flags = rng.choice(COMMON_FLAGS) if rng.random() < 0.8 else rng.randrange(256)
    return (t, fwd, payload, header, flags, rng.choice((0, 512, 65_535, rng.randrange(65_536))))


@pytest.mark.parametrize("seed", range(1000))
def test_random_flows_snapshot_equal_after_every_packet(compiled: ModuleType, seed: int) -> None:
    rng = random.Random(seed)
    init, packets = random_flow(rng)
    first, rest = packets[0], packets[1:]
    args = (init["protocol"], *first)
    extra = {k: v for k, v in init.items() if k != "protocol"}
    c, p = compiled.CicFlow(*args, **extra), CicFlow(*args, **extra)
    assert_same(c, p)
    for pkt in rest:
        c.add(*pkt)
        p.add(*pkt)
        assert_same(c, p)
    assert CicFlow.restore(c.snapshot()).values() == CicFlow.restore(p.snapshot()).values() == p.values()


def test_random_flows_reach_every_tcp_state(compiled: ModuleType) -> None:
    seen = set()
    for seed in range(1000):
        init, packets = random_flow(random.Random(seed))
        if init["protocol"] != 6:
            continue
        c = compiled.CicFlow(6, *packets[0])
        for pkt in packets[1:]:
            c.add(*pkt)
            seen.add(c.tcp_state)
    assert seen == {OPEN, FIRST_FIN, SECOND_FIN, READY}


@pytest.mark.parametrize(
    ("first", "rest", "state"),
    [
        ((0, True, 0, 32, SYN, 64240), [(1000, False, 0, 32, SYN | ACK, 65160), (2000, True, 0, 20, ACK, 502),
         (3000, True, 100, 20, PSH | ACK, 502), (4000, False, 0, 20, FIN | ACK, 509),
         (5000, True, 0, 20, FIN | ACK, 502), (6000, False, 0, 20, ACK, 509)], READY),
        ((0, True, 0, 20, ACK, 10), [(1000, True, 0, 20, FIN | ACK, 10), (2000, True, 0, 20, FIN | ACK, 10)],
         FIRST_FIN),
        ((0, True, 0, 20, FIN, 10), [(1000, False, 0, 20, FIN, 10), (2000, True, 0, 20, FIN, 10)], SECOND_FIN),
        ((0, False, 0, 20, SYN | ACK, 10), [(7_000_000, True, 0, 20, RST, 0)], READY),
        ((0, True, 0, 20, RST, 0), [(1, True, 5, 20, FIN | RST, 0)], FIRST_FIN),
    ],
)  # fmt: skip
def test_tcp_termination_sequences(compiled: ModuleType, first: tuple[Any, ...], rest: list[Any], state: int) -> None:
    c, p = compiled.CicFlow(6, *first), CicFlow(6, *first)
    for pkt in rest:
        c.add(*pkt)
        p.add(*pkt)
    assert c.tcp_state == p.tcp_state == state
    assert_same(c, p)


def test_bulk_and_activity_with_exact_gaps(compiled: ModuleType) -> None:
    """Data packets 1 s apart form bulks, 1 s + 1 µs apart do not; a 5 s + 1 µs pause is idle time."""
    steps = [1_000_000] * 5 + [1_000_001] * 3 + [5_000_001, 1, 5_000_000, 5_000_001] + [10**12] * 3
    c, p = compiled.CicFlow(6, 0, True, 100, 20, ACK, 0), CicFlow(6, 0, True, 100, 20, ACK, 0)
    t = 0
    for i, step in enumerate(steps):
        t += step
        pkt = (t, i < 6 or i % 3 != 0, 100 + i, 20, PSH | ACK, 0)
        c.add(*pkt)
        p.add(*pkt)
        assert_same(c, p)
    assert p.bulk_fwd.states >= 1 and p.idl_n >= 2 and p.iat_sq > 2**64  # the paths under test were taken


def test_keywords_bind_like_python(compiled: ModuleType) -> None:
    kw = {"protocol": 1, "time_us": 5, "fwd": 1, "payload": 0, "header": 0, "flags": 0, "window": 0,
          "icmp": (8, 0), "carried_us": 7, "activity_timeout_us": 3}  # fmt: skip
    c, p = compiled.CicFlow(**kw), CicFlow(**kw)
    c.add(t=10, fwd=False, payload=3, header=8, flags=0, window=1)
    p.add(t=10, fwd=False, payload=3, header=8, flags=0, window=1)
    c.add(20, True, 0, 8, window=2, flags=0)
    p.add(20, True, 0, 8, window=2, flags=0)
    assert_same(c, p)
    assert c.icmp is kw["icmp"] and c.activity_timeout_us == 3
    direct = compiled.CicFlow.__new__(compiled.CicFlow, **kw)  # tp_new, not the vectorcall path
    assert direct.snapshot() == CicFlow(**kw).snapshot()


def raises_like_python(make: Callable[[Any], Any], exc: type[BaseException], compiled: ModuleType) -> None:
    with pytest.raises(exc):
        make(CicFlow)
    with pytest.raises(exc):
        make(compiled.CicFlow)


@pytest.mark.parametrize(
    ("make", "exc"),
    [
        (lambda k: k(6, 0, True, 0, 20), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0, 1, None, 0, 9), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0, bogus=1), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0, protocol=6), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0).add(1, True, 0, 20, 2), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0).add(1, True, 0, 20, 2, 0, t=1), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0).add(1, True, 0, 20, 2, 0, nope=1), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0).add(1, True, 0, 20, 2, 0, 7), TypeError),
        (lambda k: k(6, 0, True, 0, 20, 2, 0).add("1", False, 0, 20, 2, 0), TypeError),
    ],
)  # fmt: skip
def test_bad_calls_raise_what_python_raises(compiled: ModuleType, make: Any, exc: type[BaseException]) -> None:
    raises_like_python(make, exc, compiled)


def test_arguments_outside_the_compiled_range_raise(compiled: ModuleType) -> None:
    """Where Python would store anything, the compiled meter refuses what it cannot hold exactly."""
    k = compiled.CicFlow
    with pytest.raises(TypeError):
        k(6, 0.5, True, 0, 20, 2, 0)  # a float time
    with pytest.raises(TypeError):
        k(6, 0, True, 0, 20, 2, 0).add(1.0, True, 0, 20, 2, 0)
    with pytest.raises(TypeError):
        k(6, 0, True, 0, 20, 2, 0).add(1, True, 0, 20, None, 0)  # Python skips a falsy flags value
    with pytest.raises(ValueError, match=r"0\.\.255"):
        k(6, 0, True, 0, 20, 256, 0)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        k(6, 0, True, 0, 20, 2, 0).add(1, True, 0, 20, -1, 0)
    with pytest.raises(TypeError, match="icmp"):
        k(1, 0, True, 0, 0, 0, 0, icmp=(8,))
    with pytest.raises(TypeError, match="icmp"):
        k(1, 0, True, 0, 0, 0, 0, 5_000_000, [8, 0])
    with pytest.raises(OverflowError):
        k(6, 2**63, True, 0, 20, 2, 0)


def test_a_flow_past_int64_raises_and_stays_broken(compiled: ModuleType) -> None:
    c = compiled.CicFlow(6, 2**62, True, 0, 20, ACK, 0)
    c.add(2**62 + 1, False, 1, 20, ACK, 0)
    with pytest.raises(OverflowError):
        c.add(-(2**62), True, 0, 20, ACK, 0)  # the gap is below -2**63
    with pytest.raises(OverflowError):
        c.snapshot()
    with pytest.raises(OverflowError):
        c.add(2**62 + 2, True, 0, 20, ACK, 0)


def test_many_distinct_flag_bytes_grow_past_the_inline_table(compiled: ModuleType) -> None:
    c, p = compiled.CicFlow(6, 0, True, 0, 20, 1, 0), CicFlow(6, 0, True, 0, 20, 1, 0)
    for i, flags in enumerate([*range(256), *range(255, -1, -3)]):
        for fwd in (True, False):
            c.add(i * 10, fwd, 1, 20, flags, 0)
            p.add(i * 10, fwd, 1, 20, flags, 0)
    assert_same(c, p)
    assert len(c.snapshot()[0][_STATE_NAMES.index("fwd_flags")]) == 255


# -- decode -----------------------------------------------------------------------------------------------
def tcp(flags: int, window: int, payload: bytes = b"", options: bytes = b"") -> bytes:
    return (
        struct.pack("!HHIIBBHHH", 40000, 443, 1, 2, (5 + len(options) // 4) << 4, flags, window, 0, 0)
        + options
        + payload
    )


def ipv4(proto: int, body: bytes, options: bytes = b"") -> bytes:
    ihl = 5 + len(options) // 4
    head = struct.pack(
        "!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(body), 1, 0, 64, proto, 0, b"\x0a\0\0\1", b"\x0a\0\0\2"
    )
    return head + options + body


def ipv6(next_header: int, body: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 6 << 28, len(body), next_header, 64, b"\1" * 16, b"\2" * 16) + body


def nfpacket(protocol: int, ip: Any, version: int, payload: int, transport: int, bits: int = 0, **over: Any) -> Any:
    """An NFStream packet as the plugin reads it (fin..cwr as 0/1, like NFStream's)."""
    names = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")
    fields = {n: (bits >> i) & 1 for i, n in enumerate(names)}
    return SimpleNamespace(protocol=protocol, ip_packet=ip, ip_version=version, payload_size=payload,
                           transport_size=transport, **{**fields, **over})  # fmt: skip


def outcome(fn: Callable[[Any], Any], pkt: Any) -> tuple[str, Any]:
    try:
        return ("ok", fn(pkt))
    except Exception as err:  # the comparison: the same exception type
        return ("raised", type(err))


def assert_decode_same(compiled: ModuleType, pkt: Any) -> tuple[Any, ...] | None:
    c, p = outcome(compiled.decode, pkt), outcome(py_decode, pkt)
    assert c == p, pkt
    if c[0] == "ok":
        assert type(c[1]) is tuple and [type(x) for x in c[1]] == [type(x) for x in p[1]], pkt
        if p[1][4] is not None:
            assert [type(x) for x in c[1][4]] == [int, int]
        return tuple(c[1])
    return None


OPTS = b"\x01\x01\x01\x00" * 3  # three NOP-padded option words: IHL 8


@pytest.mark.parametrize(
    ("pkt", "expected"),
    [
        (nfpacket(6, ipv4(6, tcp(SYN, 64240)), 4, 0, 20), (0, 20, SYN, 64240, None)),
        (nfpacket(6, ipv4(6, tcp(PSH | ACK, 502, b"x" * 10), OPTS), 4, 10, 30), (10, 20, PSH | ACK, 502, None)),
        (nfpacket(6, ipv4(6, tcp(ACK, 9, options=b"\1" * 12), OPTS), 4, 0, 32), (0, 32, ACK, 9, None)),
        (nfpacket(6, ipv6(6, tcp(FIN | ACK, 1234, b"ab")), 6, 2, 22), (2, 20, FIN | ACK, 1234, None)),
        (nfpacket(6, ipv6(0, b"\6\0" + b"\0" * 6 + tcp(ACK, 77)), 6, 0, 20, SYN | ACK), (0, 20, SYN | ACK, 0, None)),
        (nfpacket(6, ipv4(6, tcp(ACK, 1))[:35], 4, 0, 20, RST | ACK | CWR), (0, 20, RST | ACK | CWR, 0, None)),
        (nfpacket(6, ipv6(6, tcp(ACK, 1))[:55], 6, 0, 20, 0xFF), (0, 20, 0xFF, 0, None)),
        (nfpacket(6, ipv4(6, tcp(ACK, 1)), 4, 0, 20, syn=True, fin=False), (0, 20, ACK, 1, None)),
        (nfpacket(6, ipv4(6, b"")[:20], 4, 0, 0, syn=True, ack=True), (0, 0, SYN | ACK, 0, None)),
        (nfpacket(17, ipv4(17, b"\0" * 8 + b"q" * 30), 4, 30, 38), (30, 8, 0, 0, None)),
        (nfpacket(17, ipv6(17, b"\0" * 8), 6, 0, 8), (0, 8, 0, 0, None)),
        (nfpacket(1, ipv4(1, b"\x08\x00\0\0" + b"\0" * 4), 4, 4, 8), (0, 0, 0, 0, (8, 0))),
        (nfpacket(1, ipv4(1, b"\x03\x03\0\0" + b"\0" * 4, OPTS), 4, 4, 8), (0, 0, 0, 0, (3, 3))),
        (nfpacket(1, ipv4(1, b"\x0b")[:21], 4, 0, 0), (0, 0, 0, 0, None)),
        (nfpacket(58, ipv6(58, b"\x80\x00\0\0\0\0"), 6, 4, 8), (0, 0, 0, 0, (128, 0))),
        (nfpacket(58, ipv6(58, b"\x87"), 6, 0, 0), (0, 0, 0, 0, None)),
        (nfpacket(47, ipv4(47, b"\0" * 40), 4, 36, 4), (0, 0, 0, 0, None)),
        (nfpacket(132, ipv6(132, b"\0" * 40), 6, 28, 12), (0, 0, 0, 0, None)),
        (nfpacket(6, bytearray(ipv4(6, tcp(URG | ACK, 300))), 4, 0, 20), (0, 20, URG | ACK, 300, None)),
    ],
)  # fmt: skip
def test_decode_equals_py_decode(compiled: ModuleType, pkt: Any, expected: tuple[Any, ...]) -> None:
    assert assert_decode_same(compiled, pkt) == expected


@pytest.mark.parametrize(
    "pkt",
    [
        nfpacket(6, b"", 4, 0, 20),  # IndexError: no IPv4 header byte to read
        nfpacket(1, b"", 4, 0, 0),
        SimpleNamespace(protocol=6),
        SimpleNamespace(protocol=17),
        nfpacket(6, "not bytes", 4, 0, 20),
        nfpacket(6, ipv4(6, b""), 4, 0, 20, fin=None),
    ],
)
def test_decode_raises_what_py_decode_raises(compiled: ModuleType, pkt: Any) -> None:
    assert assert_decode_same(compiled, pkt) is None


@pytest.mark.parametrize("seed", range(20))
def test_decode_on_random_bytes(compiled: ModuleType, seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(500):
        ip = rng.randbytes(rng.choice((0, 1, 7, 20, 33, 39, 40, 55, 56, 60, 80, 200)))
        if ip and rng.random() < 0.7:
            ip = bytes([rng.choice((0x45, 0x46, 0x4F, 0x60)), *ip[1:]])
        pkt = nfpacket(rng.choice((6, 6, 17, 1, 58, 0, 47)), ip, rng.choice((4, 6)), rng.randrange(1500),
                       rng.randrange(1600), rng.randrange(256))  # fmt: skip
        assert_decode_same(compiled, pkt)

"""Community ID v1 (Corelight's flow hash) for the sensor's hot path, checked against the reference package.

The PyPI ``communityid`` package is the reference; it spends about 100 µs per flow parsing and validating
its inputs, which made it the largest cost of the reading process. TCP and UDP flows, nearly all flows,
take this short path (same hash input: seed, ordered addresses, protocol, a zero pad byte, ordered ports;
SHA-1; base64); ICMP, ICMPv6 and other protocols, whose port mapping has special cases, go to the package.
``tests/unit/test_cid.py`` compares both on many random tuples.

>>> community_id(6, "10.0.0.1", "10.0.0.2", 1234, 80)
'1:LzRJKgjvUJlC/VQLtISlfACcEzA='
"""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from functools import lru_cache

import communityid

_SEED = struct.pack("!H", 0)
_CID = communityid.CommunityID(seed=0)


@lru_cache(maxsize=65_536)
def _packed(addr: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in addr else socket.AF_INET, addr)


def community_id(proto: int, src: str, dst: str, sport: int, dport: int, icmp: tuple[int, int] | None = None) -> str:
    """The Community ID v1 (seed 0) of a flow; ``icmp`` is (type, code) for ICMP and ICMPv6."""
    if proto in (6, 17):
        a, b = _packed(src), _packed(dst)
        if (a, sport) > (b, dport):
            a, b, sport, dport = b, a, dport, sport
        digest = hashlib.sha1(_SEED + a + b + struct.pack("!BBHH", proto, 0, sport, dport)).digest()
        return "1:" + base64.b64encode(digest).decode()
    if proto in (1, 58) and icmp is not None:
        make = communityid.FlowTuple.make_icmp if proto == 1 else communityid.FlowTuple.make_icmp6
        return str(_CID.calc(make(src, dst, icmp[0], icmp[1])))
    if proto in (132, 1, 58):  # port-enabled protocol without its header: address-only tuple
        return str(_CID.calc(communityid.FlowTuple(proto, src, dst, None, None)))
    return str(_CID.calc(communityid.FlowTuple(proto, src, dst)))

"""The Community ID fast path equals the reference package on random TCP and UDP tuples."""

from __future__ import annotations

import ipaddress
import random

import communityid

from tapwatch.capture.cid import community_id


def test_fast_path_matches_the_reference_package() -> None:
    rng = random.Random(7)
    ref = communityid.CommunityID(seed=0)
    for i in range(3000):
        v6 = i % 3 == 0
        bits = 128 if v6 else 32
        src, dst = (
            str(ipaddress.ip_address(rng.getrandbits(bits)) if not v6 else ipaddress.IPv6Address(rng.getrandbits(bits)))
            for _ in range(2)
        )
        if i % 7 == 0:
            dst = src  # equal addresses: ordered by port
        proto = rng.choice((6, 17))
        sport, dport = rng.randrange(65536), rng.randrange(65536)
        make = communityid.FlowTuple.make_tcp if proto == 6 else communityid.FlowTuple.make_udp
        assert community_id(proto, src, dst, sport, dport) == ref.calc(make(src, dst, sport, dport)), (src, dst)


def test_icmp_and_other_protocols_use_the_package() -> None:
    ref = communityid.CommunityID(seed=0)
    icmp = ref.calc(communityid.FlowTuple.make_icmp("10.0.0.1", "10.0.0.2", 8, 0))
    assert community_id(1, "10.0.0.1", "10.0.0.2", 0, 0, (8, 0)) == icmp
    assert community_id(47, "10.0.0.1", "10.0.0.2", 0, 0) == ref.calc(communityid.FlowTuple(47, "10.0.0.1", "10.0.0.2"))

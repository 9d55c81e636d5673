"""Handshake RTTs from pcap files (lab.delayrtt): IPv4 and IPv6 over Ethernet and Linux cooked captures.

Frames are built with scapy and written to a pcap in tmp_path with chosen timestamps, so each expected RTT
is known exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrHopByHop
from scapy.layers.l2 import CookedLinux, CookedLinuxV2, Ether
from scapy.utils import wrpcap

from lab.delayrtt import handshake_rtts, handshake_rtts_by_client

C6, S6, C4, S4 = "fd00:7477:1::2", "fd00:7477:3::2", "10.213.1.2", "10.213.3.2"


def _handshake(net: Any, t0: float, rtt: float, sport: int) -> list[Any]:
    """SYN at t0, SYN/ACK 0.1 ms later, the client's ACK ``rtt`` after the SYN; ``net(src, dst)`` builds L3."""
    client, server = net(True), net(False)
    frames = [client / TCP(sport=sport, dport=80, flags="S", seq=1), server / TCP(sport=80, dport=sport, flags="SA",
              seq=9, ack=2), client / TCP(sport=sport, dport=80, flags="A", seq=2, ack=10)]  # fmt: skip
    for frame, ts in zip(frames, (t0, t0 + 0.0001, t0 + rtt), strict=True):
        frame.time = ts
    return frames


def _ether(ip: Any) -> Any:
    return lambda up: Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / ip(up)


def _v6(up: bool) -> Any:
    return IPv6(src=C6, dst=S6) if up else IPv6(src=S6, dst=C6)


def _v4(up: bool) -> Any:
    return IP(src=C4, dst=S4) if up else IP(src=S4, dst=C4)


def test_ipv6_and_ipv4_handshakes_over_ethernet_grouped_by_client(tmp_path: Path) -> None:
    frames = (_handshake(_ether(_v6), 100.0, 0.040, 40000) + _handshake(_ether(_v4), 101.0, 0.001, 40001)
              + _handshake(_ether(_v6), 102.0, 0.042, 40002))  # fmt: skip
    wrpcap(str(tmp_path / "eth.pcap"), frames)
    assert handshake_rtts(tmp_path / "eth.pcap") == pytest.approx([0.040, 0.001, 0.042], abs=2e-6)
    by_client = handshake_rtts_by_client(tmp_path / "eth.pcap")
    assert by_client.keys() == {C6, C4}
    assert by_client[C6] == pytest.approx([0.040, 0.042], abs=2e-6)


def test_ipv6_with_an_extension_header(tmp_path: Path) -> None:
    def hop_by_hop(up: bool) -> Any:
        return _v6(up) / IPv6ExtHdrHopByHop()

    wrpcap(str(tmp_path / "ext.pcap"), _handshake(_ether(hop_by_hop), 5.0, 0.020, 40000))
    assert handshake_rtts(tmp_path / "ext.pcap") == pytest.approx([0.020], abs=2e-6)


@pytest.mark.parametrize("cooked", [CookedLinux, CookedLinuxV2])
def test_ipv6_over_linux_cooked_captures(cooked: Any, tmp_path: Path) -> None:
    def net(up: bool) -> Any:
        return cooked(proto=0x86DD) / _v6(up)

    frames = _handshake(net, 7.0, 0.0125, 40000) + _handshake(net, 8.0, 0.0135, 40001)
    wrpcap(str(tmp_path / "sll.pcap"), frames)
    assert handshake_rtts_by_client(tmp_path / "sll.pcap") == {C6: pytest.approx([0.0125, 0.0135], abs=2e-6)}


def test_a_retransmitted_ipv6_syn_is_left_out(tmp_path: Path) -> None:
    """Karn's rule holds for IPv6 too: which SYN the SYN/ACK answers is unknown."""
    frames = _handshake(_ether(_v6), 1.0, 0.040, 40000)
    again = frames[0].copy()
    again.time = 1.00005
    wrpcap(str(tmp_path / "retx.pcap"), [frames[0], again, *frames[1:], *_handshake(_ether(_v6), 2.0, 0.03, 40001)])
    assert handshake_rtts(tmp_path / "retx.pcap") == pytest.approx([0.03], abs=2e-6)

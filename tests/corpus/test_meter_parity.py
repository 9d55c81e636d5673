"""The compiled meter and the pure-Python one write byte-identical flow CSVs for real captures (issue 16).

``tapwatch flows`` runs each capture twice at once, once with ``TAPWATCH_PURE_PYTHON=1`` (``CicFlow`` and
``py_decode`` from capture/cicflow.py and capture/fastpath.py, the definition) and once with the compiled
``tapwatch.capture._cicflow``. The captures cover IPv4 and IPv6 TCP (long sessions past the flow timeout, bulk
transfers, FIN and RST endings, a SYN flood of one-packet flows, IPv6 extension headers that hide the TCP
header so flags come from NFStream's fields), UDP, ICMP and ICMPv6 and ESP. Packet-level parity, type by type,
is tests/unit/test_cicflow_compiled.py.
"""

from __future__ import annotations

import importlib.util
from itertools import zip_longest
from pathlib import Path

import pytest

from tests.support.cli import tapwatch
from tests.support.env import REPO, need

SAMPLE = "capture/samples/sample.pcap"
CAPTURES = (
    SAMPLE,
    "zeek/ftp/ipv6.pcap",  # FTP over IPv6
    "zeek/icmp/5-pings.pcap",  # ICMP echo
    "zeek/icmp/icmp6-ping.pcap",  # ICMPv6 echo
    "suricata-verify/bug-4663-03__icmp_and_ssh.pcap",  # ICMP beside an SSH session
    "zeek/dns/long-connection.pcap",  # 267 s of DNS over TCP: cut by the 120 s flow timeout, time carried over
    "zeek/ssh/ssh.pcap",  # SSH sessions with bulk transfers
    "zeek/http/bro.org.pcap",  # HTTP browsing, many short connections
    "zeek/ftp/bruteforce.pcap",  # many short FTP logins: FIN and RST endings
    "suricata-verify/firewall__tcp-session-syn-flood-drop-precedence__input.pcap",  # SYN flood
    "suricata-verify/ipv6-evasion__ipv6-dos-with-ext-headers-5__denial6-5.pcap",  # 35,720 IPv6 packets, ext headers
    "suricata-verify/dhcp-request-flood__test.pcap",  # 10,000 UDP packets
    "zeek/ip6_esp.pcap",  # IPv6 ESP over 1,048 s
)


@pytest.mark.parametrize("name", CAPTURES)
def test_compiled_and_pure_python_meters_write_the_same_csv(
    name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    need(importlib.util.find_spec("tapwatch.capture._cicflow") is not None, "compiled meter not built")
    pcap = REPO / name if name == SAMPLE else request.getfixturevalue("shared") / "pcaps" / name
    outs = {mode: tmp_path / f"{mode}.csv" for mode in ("compiled", "pure")}
    runs = {
        mode: tapwatch("flows", str(pcap), "-o", str(out), "--single-packet-flows",
                       env={"TAPWATCH_PURE_PYTHON": "1"} if mode == "pure" else None)
        for mode, out in outs.items()
    }  # fmt: skip
    for mode, proc in runs.items():
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, (mode, err)
    compiled, pure = outs["compiled"].read_bytes().splitlines(), outs["pure"].read_bytes().splitlines()
    assert len(pure) > 1, "no flows: the capture tests nothing"
    first = next((i for i, (c, p) in enumerate(zip_longest(compiled, pure)) if c != p), None)
    assert first is None, (
        f"CSV line {first + 1} differs:\ncompiled {compiled[first : first + 1]}\npure     {pure[first : first + 1]}"
    )
    assert outs["compiled"].read_bytes() == outs["pure"].read_bytes()  # line endings too

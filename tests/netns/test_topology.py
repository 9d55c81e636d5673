"""The routed lab (lab.topology): dual-stack reachability through the router, the tap, no way out of the lab,
the refusals before building, teardown on an exception and on signals, and the throwaway lab user.

Every lab here has a prefix starting with ``twt`` so that it never meets another session's namespaces.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6
from scapy.utils import PcapReader

from lab.labuser import NOLOGIN, lab_user, user_exists
from lab.netns import Endpoint, wait_listening
from lab.topo_check import ping_all
from lab.topo_guard import Probes, root_addresses, root_links, root_namespaces
from lab.topo_plan import Host, LabError, LinkProfile, TopologySpec
from lab.topology import Topology, lab_topology, link
from lab.topology import main as topology_main
from tests.support.cli import run_as_nobody
from tests.support.env import REPO, need_netns

pytestmark = pytest.mark.timeout(120)

OUTSIDE = ("192.0.2.1", "198.51.100.1", "203.0.113.1", "2001:db8::1", "fd00::2")
"""Addresses outside the lab (documentation ranges, and the root namespace's own ULA here): never reachable."""


def _namespaces() -> set[str]:
    return root_namespaces()


@pytest.fixture(scope="module")
def topo() -> Iterator[Topology]:
    need_netns()
    with lab_topology(TopologySpec(prefix="twttopo", clients=2, servers=1, attackers=1)) as t:
        yield t
    assert not {n for n in _namespaces() if n.startswith("twttopo-")}


def _echoes(pcap: Path) -> tuple[set[tuple[str, str, str]], int]:
    """``(src, dst, request|reply)`` of the ICMP echoes in ``pcap``, and the largest frame (checked whole)."""
    found, largest = set(), 0
    for pkt in PcapReader(str(pcap)):
        assert pkt.wirelen is None or pkt.wirelen == len(pkt), "a frame was cut by the snap length"
        largest = max(largest, len(pkt))
        if IP in pkt and ICMP in pkt and pkt[ICMP].type in (0, 8):
            found.add((pkt[IP].src, pkt[IP].dst, "request" if pkt[ICMP].type == 8 else "reply"))
        elif IPv6 in pkt and (ICMPv6EchoRequest in pkt or ICMPv6EchoReply in pkt):
            found.add((pkt[IPv6].src, pkt[IPv6].dst, "request" if ICMPv6EchoRequest in pkt else "reply"))
    return found, largest


def test_every_pair_reaches_every_other_through_the_router_and_the_tap_sees_every_path(
    topo: Topology, tmp_path: Path
) -> None:
    pcap = tmp_path / "tap.pcap"
    with topo.capture(pcap, 1_000_000, 5_000) as cap:
        pings = ping_all(topo)
        topo.run_in(topo.host("c1"), ["busybox", "ping", "-c", "1", "-s", "4000", topo.host("s1").ipv4])
    assert len(pings) == 4 * 3 * 2
    assert [(s.name, d.name, f) for s, d, f, ok in pings if not ok] == []
    seen, largest = _echoes(pcap)
    for src, dst, family, _ in pings:
        a, b = src.addresses(family)[0], dst.addresses(family)[0]
        assert (a, b, "request") in seen and (b, a, "reply") in seen, (src.name, dst.name, family)
    assert largest <= 1514, "one segment per frame: nothing larger than an Ethernet frame at MTU 1500"
    assert cap.dropped == 0 and not cap.reached_limit and cap.captured >= 2 * len(pings)


def test_tcp_frames_on_the_tap_are_at_most_mtu_sized(topo: Topology, tmp_path: Path) -> None:
    """A bulk download over each IP version: no TSO/GRO super-frame reaches the tap (gso_max_segs 1)."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "big.bin").write_bytes(bytes(1_000_000))
    server, client = topo.host("s1"), topo.host("c2")
    httpd = topo.start_in(server, ["busybox", "httpd", "-f", "-p", "8080", "-h", str(tmp_path / "www")])
    try:
        wait_listening(Endpoint(server.netns, server.iface, server.ipv4), "tcp", 8080)
        with topo.capture(tmp_path / "tcp.pcap", 20_000_000, 20_000):
            for address in (server.ipv4, f"[{server.ipv6}]"):
                got = topo.run_in(client, ["curl", "-sS", "-o", "/dev/null", "-w", "%{size_download}",
                                           f"http://{address}:8080/big.bin"])  # fmt: skip
                assert got.stdout == "1000000"
    finally:
        topo.stop(httpd)
    sizes = [len(pkt) for pkt in PcapReader(str(tmp_path / "tcp.pcap"))]
    assert len(sizes) > 2 * 1_000_000 // 1500 and max(sizes) == 1514


def test_the_capture_stays_within_its_byte_budget(topo: Topology, tmp_path: Path) -> None:
    pcap = tmp_path / "small.pcap"
    budget = 24 + 3 * (1518 + 16)  # three whole frames
    with topo.capture(pcap, budget, 1_000) as cap:
        for _ in range(4):
            topo.run_in(topo.host("a1"), ["busybox", "ping", "-c", "1", "-W", "1", topo.host("s1").ipv6])
    assert cap.max_packets == 3 and cap.reached_limit and cap.captured == 3
    assert pcap.stat().st_size <= budget
    with pytest.raises(LabError, match="holds no frame"), topo.capture(pcap, 100, 10):
        pass


def test_no_host_and_not_the_router_has_a_route_out_of_the_lab(topo: Topology) -> None:
    for ns in [topo.router, *(h.netns for h in topo.hosts)]:
        for family in ("-4", "-6"):
            assert topo.run_in(ns, ["ip", family, "route", "show", "default"]).stdout.strip() == "", ns
        for address in OUTSIDE:
            done = topo.run_in(ns, ["ip", "route", "get", address], check=False)
            assert done.returncode != 0 and "unreachable" in done.stderr, (ns, address, done.stdout)
    for host in topo.hosts:  # every route is the host's own subnet or the lab's range via the router
        routes = topo.run_in(host, ["ip", "-4", "route"]).stdout + topo.run_in(host, ["ip", "-6", "route"]).stdout
        for line in routes.splitlines():
            assert "via" not in line or line.split()[2] in (host.gw4, host.gw6), line


def test_the_lab_uses_no_root_interface_and_no_root_address() -> None:
    need_netns()
    spec = TopologySpec(prefix="twtroot", clients=1, servers=1, attackers=0)
    links, addresses = root_links(), root_addresses()
    with lab_topology(spec) as topo:
        assert root_links() == links and root_addresses() == addresses
        assert set(topo.namespaces) == {"twtroot-rt", "twtroot-c1", "twtroot-s1"}


def _refused(spec: TopologySpec, match: str, probes: Probes | None = None) -> None:
    with pytest.raises(LabError, match=match), lab_topology(spec, probes=probes):
        pytest.fail("the lab started")


def test_refuses_when_a_namespace_name_is_taken() -> None:
    need_netns()
    subprocess.run(["ip", "netns", "add", "twtbusy-s1"], check=True)
    try:
        _refused(
            TopologySpec(prefix="twtbusy", clients=1, servers=1, attackers=0), "namespace twtbusy-s1 is already in use"
        )
        assert {n for n in _namespaces() if n.startswith("twtbusy")} == {"twtbusy-s1"}, "ours only, theirs kept"
    finally:
        subprocess.run(["ip", "netns", "delete", "twtbusy-s1"], check=True)


def test_refuses_when_an_address_or_interface_is_in_use_in_the_root_namespace() -> None:
    """The address in use is injected: a test may not add an address to a real root interface."""
    need_netns()
    spec = TopologySpec(prefix="twtaddr", clients=1, servers=1, attackers=0)
    taken_v6 = Probes(addresses=lambda: {"fd00:7477:2::99/64"})
    _refused(spec, r"fd00:7477:2::99/64 of the root namespace overlaps .* fd00:7477:2::/64", taken_v6)
    taken_v4 = Probes(addresses=lambda: {"127.0.0.1/8", "10.213.0.0/16"})  # a wider network over the lab's
    _refused(spec, r"10.213.0.0/16 of the root namespace overlaps the lab's subnet 10.213.1.0/24", taken_v4)
    taken_link = Probes(links=lambda: {"lo", "twtaddr-c1r"})
    _refused(spec, "interface twtaddr-c1r already exists in the root namespace", taken_link)
    assert not {n for n in _namespaces() if n.startswith("twtaddr")}


def test_a_replacement_linker_builds_every_link_and_its_namespaces_go_at_teardown() -> None:
    """The hook a delay line uses: a linker that adds a namespace of its own on each path, then wires as usual."""
    need_netns()
    calls: list[tuple[str, str, LinkProfile]] = []

    def wire(host: Host, router: str, profile: LinkProfile) -> tuple[str, ...]:
        calls.append((host.name, router, profile))
        subprocess.run(["ip", "netns", "add", f"{host.netns}w"], check=True)
        return (f"{host.netns}w", *link(host, router, profile))

    slow = LinkProfile(mtu=1400)
    spec = TopologySpec(prefix="twtlnk", clients=1, servers=1, attackers=0, links=(("s1", slow),))
    with lab_topology(spec, linker=wire) as topo:
        assert calls == [("c1", "twtlnk-rt", LinkProfile()), ("s1", "twtlnk-rt", slow)]
        assert {"twtlnk-c1w", "twtlnk-s1w"} <= _namespaces()
        assert "mtu 1400" in topo.run_in(topo.host("s1"), ["ip", "link", "show", "twtlnk-s1h"]).stdout
        assert not [p for p in ping_all(topo) if not p[3]]
    assert not {n for n in _namespaces() if n.startswith("twtlnk")}


def test_refuses_without_root_in_one_line() -> None:
    """The check command in a forked child that dropped to uid/gid 65534 (the venv is not theirs to run)."""
    need_netns()
    done = run_as_nobody(topology_main, "--check", "--prefix", "twtnoro")
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "Error: network namespaces unusable: needs root to create network namespaces and veth pairs"
    ], done.stderr


def test_teardown_after_an_exception_stops_processes_and_deletes_every_namespace() -> None:
    need_netns()
    spec = TopologySpec(prefix="twtexc", clients=1, servers=1, attackers=0)
    with pytest.raises(RuntimeError, match="boom"), lab_topology(spec) as topo:
        sleeper = topo.start_in(topo.host("s1"), ["sleep", "300"])
        names = set(topo.namespaces)
        assert names <= _namespaces()
        raise RuntimeError("boom")
    assert sleeper.poll() is not None
    assert not names & _namespaces()


SCRIPT = """
import sys, time
from lab.topo_plan import TopologySpec
from lab.topology import lab_topology
with lab_topology(TopologySpec(prefix=sys.argv[1], clients=1, servers=1, attackers=1)) as topo:
    proc = topo.start_in(topo.host("a1"), ["sleep", "300"])
    print(proc.pid, " ".join(topo.namespaces), flush=True)
    time.sleep(60)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_teardown_after_a_signal_to_the_process(sig: signal.Signals) -> None:
    need_netns()
    prefix = f"twtsig{sig.value}"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, prefix], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        pid, *names = proc.stdout.readline().split()
        assert len(names) == 4 and set(names) <= _namespaces()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0, err
    assert ("KeyboardInterrupt" in err) if sig == signal.SIGINT else (proc.returncode == 128 + sig.value)
    assert not set(names) & _namespaces()
    assert not os.path.exists(f"/proc/{pid}"), "the lab's sleep outlived the lab"


def test_the_check_command_pings_every_path_and_tears_down() -> None:
    need_netns()
    argv = [sys.executable, "-m", "lab.topology", "--check", "--prefix", "twtcli"]
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "24/24 paths ok" in done.stdout and "MISSING" not in done.stdout
    assert not {n for n in _namespaces() if n.startswith("twtcli")}


def test_the_lab_user_is_created_with_its_password_and_removed_with_its_home() -> None:
    need_netns()
    with lab_user() as user:
        entry = pwd.getpwnam(user.name)
        assert user.name.startswith("twlab") and entry.pw_shell == NOLOGIN and entry.pw_dir == user.home
        assert os.path.isdir(user.home) and len(user.password) >= 20 and user.password not in repr(user)
        shadow = Path("/etc/shadow").read_text()
        assert f"{user.name}:$" in shadow, "a password hash was set"
    assert not user_exists(user.name) and not os.path.exists(user.home)

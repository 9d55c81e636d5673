"""The lab's attacks (lab.attacks) at a tiny scale against the lab's real servers, each checked on the tap.

One lab for the module (prefix ``twakt``: 1 client, 1 server running the web services, SSH and FTP, and 2
attackers, the second running the bot's C2) with the lab user and lab.services. Each test runs one attack
while capturing on the tap and checks its :class:`~lab.episodes.Episode` and that the capture holds its
traffic between attacker and victim within ``[start, end]``.
"""

from __future__ import annotations

import ipaddress
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.attacks import ATTACKS, run_attack
from lab.delayrtt import pcap_records
from lab.episodes import Episode, Family, Service, ServiceMap
from lab.labuser import lab_user
from lab.services import ServicesConfig, lab_services
from lab.svc_site import SiteSpec
from lab.topo_guard import root_namespaces
from lab.topo_plan import Host, TopologySpec
from lab.topology import Topology, lab_topology
from tests.support.env import need_netns

pytestmark = pytest.mark.timeout(60)

LAB_NET = ipaddress.ip_network("10.213.0.0/16")
SYN, ACK = 0x02, 0x10


@dataclass(frozen=True)
class Packet:
    """What the checks need of one captured IP packet."""

    ts: float
    src: str
    dst: str
    proto: int
    sport: int
    dport: int
    flags: int


def packets(pcap: Path) -> list[Packet]:
    """The IPv4 and IPv6 packets of an Ethernet capture (ports and TCP flags 0 when absent)."""
    out = []
    for ts, _link, frame in pcap_records(pcap):
        kind = struct.unpack("!H", frame[12:14])[0]
        if kind == 0x0800:
            ihl, proto = (frame[14] & 0x0F) * 4, frame[23]
            src, dst, l4 = str(ipaddress.IPv4Address(frame[26:30])), str(ipaddress.IPv4Address(frame[30:34])), 14 + ihl
        elif kind == 0x86DD:
            proto, l4 = frame[20], 54
            src, dst = str(ipaddress.IPv6Address(frame[22:38])), str(ipaddress.IPv6Address(frame[38:54]))
        else:
            continue
        sport, dport = struct.unpack("!HH", frame[l4 : l4 + 4]) if proto in (6, 17) else (0, 0)
        flags = frame[l4 + 13] if proto == 6 else 0
        out.append(Packet(ts, src, dst, proto, sport, dport, flags))
    return out


@dataclass
class Lab:
    topo: Topology
    services: ServiceMap
    workdir: Path

    def run(self, name: str, attacker: str, victim: str, tmp: Path, scale: float) -> tuple[Episode, list[Packet]]:
        """Run one attack while capturing on the tap; its episode and the captured packets."""
        with self.topo.capture(tmp / f"{name}.pcap", 200_000_000, 100_000) as cap:
            ep = run_attack(self.topo, name, self.topo.host(attacker), self.topo.host(victim), self.services,
                            episode_id="e007", seed=7, scale=scale, link_profile="lan",
                            workdir=self.workdir)  # fmt: skip
        assert not cap.reached_limit and cap.dropped == 0
        return ep, packets(cap.path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    need_netns()
    workdir = tmp_path_factory.mktemp("attacks")
    spec = TopologySpec(prefix="twakt", clients=1, servers=1, attackers=2)
    enabled = frozenset({Service.HTTP, Service.HTTPS, Service.APP, Service.SSH, Service.FTP, Service.C2})
    config = ServicesConfig(enabled=enabled, site=SiteSpec(downloads=(10_000,)))
    with (
        lab_topology(spec) as topo,
        lab_user(shell="/bin/sh") as user,
        lab_services(topo, user, workdir / "services", config) as services,
    ):
        yield Lab(topo, services, workdir)
    assert not {n for n in root_namespaces() if n.startswith("twakt-")}


def _check_episode(ep: Episode, name: str, attacker: Host, victim: Host) -> None:
    spec = ATTACKS[name]
    assert (ep.episode_id, ep.family, ep.tool, ep.cic_class) == ("e007", spec.family, spec.tool, spec.cic_class)
    assert ep.attacker == (attacker.ipv4, attacker.ipv6) and ep.victims == (victim.ipv4, victim.ipv6)
    assert ep.spoofed is spec.spoofed and ep.link_profile == "lan" and ep.end > ep.start
    assert spec.tool in ep.command


def _between(pkts: list[Packet], ep: Episode, a: str, b: str) -> list[Packet]:
    """Packets between ``a`` and ``b`` (either way); each must lie within the episode."""
    found = [p for p in pkts if {p.src, p.dst} == {a, b}]
    late = [p for p in found if not ep.start <= p.ts <= ep.end + 0.05]  # a reply may trail the tool's exit
    assert not late, f"{len(late)} of {len(found)} packets outside [{ep.start}, {ep.end}]: {late[:3]}"
    return found


def test_a_syn_scan_over_ipv6_probes_each_port_within_the_episode(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("nmap-syn6", "a1", "s1", tmp_path, 0.05)
    a1, s1 = lab.topo.host("a1"), lab.topo.host("s1")
    _check_episode(ep, "nmap-syn6", a1, s1)
    seen = _between(pkts, ep, a1.ipv6, s1.ipv6)
    probes = {p.dport for p in seen if p.src == a1.ipv6 and p.flags == SYN}
    assert probes >= set(range(1, 51)), "ports 1-50 at scale 0.05"
    assert {p.sport for p in seen if p.src == s1.ipv6} >= set(range(1, 51)), "every closed port answered (RST)"


def test_a_spoofed_syn_flood_comes_from_outside_the_lab(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("hping3-syn-spoofed", "a1", "s1", tmp_path, 0.02)
    a1, s1 = lab.topo.host("a1"), lab.topo.host("s1")
    _check_episode(ep, "hping3-syn-spoofed", a1, s1)
    flood = [p for p in pkts if p.dst == s1.ipv4 and p.dport == 80 and p.flags == SYN]
    assert len(flood) == 300, "500 pps for 30 s at scale 0.02"
    hosts = {h.ipv4 for h in lab.topo.hosts}
    assert not {p.src for p in flood} & hosts, "no spoofed source is a lab host's address"
    assert sum(ipaddress.ip_address(p.src) in LAB_NET for p in flood) <= 3 and len({p.src for p in flood}) > 290
    assert all(ep.start <= p.ts <= ep.end for p in flood)


def test_a_slow_headers_attack_holds_connections_to_the_web_server(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("slowhttptest-headers", "a1", "s1", tmp_path, 0.1)
    a1, s1 = lab.topo.host("a1"), lab.topo.host("s1")
    _check_episode(ep, "slowhttptest-headers", a1, s1)
    assert 2.5 < ep.duration_s < 15, "-l 3 at scale 0.1"
    seen = _between(pkts, ep, a1.ipv4, s1.ipv4)
    opened = {p.sport for p in seen if p.src == a1.ipv4 and p.dport == 80 and p.flags == SYN}
    assert len(opened) >= 20


@pytest.mark.parametrize("name", ["wrk-flood", "ab-flood", "siege-flood"])
def test_an_http_flood(lab: Lab, tmp_path: Path, name: str) -> None:
    ep, pkts = lab.run(name, "a2", "s1", tmp_path, 0.07)
    a2, s1 = lab.topo.host("a2"), lab.topo.host("s1")
    _check_episode(ep, name, a2, s1)
    seen = _between(pkts, ep, a2.ipv4, s1.ipv4)
    connections = len({p.sport for p in seen if p.src == a2.ipv4 and p.flags == SYN})
    if name == "wrk-flood":  # -c 4 kept-alive connections, and wrk's first connection that checks the target
        assert 4 <= connections <= 6 and "requests in" in (lab.workdir / "e007-wrk-flood.log").read_text()
    else:  # ab -n 700, siege -r 8 for 4 users: a connection per request, and a few more when the machine is
        # busy (a CI run saw ab open 703: a connection that failed to complete is opened again)
        assert 0 <= connections - {"ab-flood": 700, "siege-flood": 32}[name] <= 5
    assert sum(p.src == a2.ipv4 for p in seen) > 100


def test_slowloris_holds_sockets_until_it_is_stopped(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("slowloris", "a1", "s1", tmp_path, 0.1)
    a1, s1 = lab.topo.host("a1"), lab.topo.host("s1")
    _check_episode(ep, "slowloris", a1, s1)
    assert 2.9 < ep.duration_s < 8, "stopped by timeout after 3 s"
    seen = _between(pkts, ep, a1.ipv4, s1.ipv4)
    assert len({p.sport for p in seen if p.src == a1.ipv4 and p.flags == SYN}) >= 15
    assert "Socket count: 15" in (lab.workdir / "e007-slowloris.log").read_text()


def test_masscan_scans_with_its_own_tcp_stack(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("masscan", "a1", "s1", tmp_path, 0.04)
    a1, s1 = lab.topo.host("a1"), lab.topo.host("s1")
    _check_episode(ep, "masscan", a1, s1)
    seen = _between(pkts, ep, a1.ipv4, s1.ipv4)
    assert {p.dport for p in seen if p.src == a1.ipv4 and p.flags == SYN} == set(range(1, 81))
    assert "Discovered open port 80/tcp" in (lab.workdir / "e007-masscan.log").read_text()


@pytest.mark.parametrize(("name", "port"), [("hydra-ssh", 2222), ("hydra-ftp", 2121), ("hydra-http-form", 8080)])
def test_password_guessing_finds_the_lab_password_from_a_word_list(lab: Lab, tmp_path: Path, name: str,
                                                                   port: int) -> None:  # fmt: skip
    ep, pkts = lab.run(name, "a1", "s1", tmp_path, 0.05)  # vsftpd answers a wrong password after ~3 s
    a1, s1 = lab.topo.host("a1"), lab.topo.host("s1")
    _check_episode(ep, name, a1, s1)
    secrets = (lab.services.login.password, lab.services.app_login.password)
    out = (lab.workdir / f"e007-{name}.log").read_text()
    assert "1 valid password found" in out and "password: ***" in out, out[-1000:]
    assert not any(s in ep.command or s in out for s in secrets)
    assert not list(lab.workdir.glob("words-*")), "the word list is deleted after the run"
    seen = _between(pkts, ep, a1.ipv4, s1.ipv4)
    assert len({p.sport for p in seen if p.dport == port and p.flags == SYN}) >= 4


def test_sqlmap_finds_the_injectable_search(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("sqlmap", "a2", "s1", tmp_path, 0.1)
    a2, s1 = lab.topo.host("a2"), lab.topo.host("s1")
    _check_episode(ep, "sqlmap", a2, s1)
    out = (lab.workdir / "e007-sqlmap.log").read_text()
    assert "sqlmap identified the following injection point" in out and "[2 tables]" in out, out[-1500:]
    assert len(_between(pkts, ep, a2.ipv4, s1.ipv4)) > 50


def test_the_bot_beacons_to_its_c2_from_an_infected_client(lab: Lab, tmp_path: Path) -> None:
    ep, pkts = lab.run("beacon", "c1", "a2", tmp_path, 0.1)
    c1, a2 = lab.topo.host("c1"), lab.topo.host("a2")
    _check_episode(ep, "beacon", c1, a2)
    assert "8 of 8 rounds succeeded" in (lab.workdir / "e007-beacon.log").read_text()
    seen = _between(pkts, ep, c1.ipv4, a2.ipv4)
    syns = sorted(p.ts for p in seen if p.src == c1.ipv4 and p.dport == 8443 and p.flags == SYN)
    assert len(syns) == 8, "one TLS connection per round"
    gaps = [b - a for a, b in itertools.pairwise(syns)]
    assert all(0.3 < g < 1.5 for g in gaps), gaps  # 0.5 s ± 30 %, plus the round itself
    assert ep.family is Family.BOTNET

"""Delay links in a lab's description (lab.topo_plan.LinkProfile, lab.delaylink): validation, delayed, profile_spec,
host seeds and the CPU reading, without root."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from lab.delayline import PathProfile, Profile
from lab.delaylink import cpu_seconds, delay_linker, delayed, host_seed, profile_spec
from lab.topo_plan import AddressPlan, Host, LabError, LinkKind, LinkProfile, Role


def test_a_delay_link_needs_a_path_and_a_veth_link_has_none() -> None:
    with pytest.raises(LabError, match="a delay link needs a path"):
        LinkProfile(LinkKind.DELAY)
    with pytest.raises(LabError, match="a veth link has no path"):
        LinkProfile(LinkKind.VETH, path=PathProfile(rtt_ms=1.0))
    with pytest.raises(LabError, match="one segment per frame"):
        LinkProfile(LinkKind.DELAY, one_segment_per_frame=False, path=PathProfile())
    with pytest.raises(LabError, match="link kind must be one of"):
        LinkProfile("delay", path=PathProfile())  # type: ignore[arg-type]
    with pytest.raises(LabError, match=r"mtu must be in 1280\.\.9000"):
        LinkProfile(LinkKind.DELAY, mtu=1000, path=PathProfile())
    assert LinkProfile(LinkKind.DELAY, path=PathProfile(rtt_ms=2.0)).path == PathProfile(rtt_ms=2.0)


@pytest.mark.parametrize("profile", list(Profile))
def test_delayed_carries_the_named_profile(profile: Profile) -> None:
    link = delayed(profile, mtu=1400)
    assert (link.kind, link.mtu, link.path, link.one_segment_per_frame) == (LinkKind.DELAY, 1400, profile.path, True)


def test_delayed_takes_a_path_profile_and_checks_the_mtu() -> None:
    assert delayed(PathProfile(rtt_ms=7.0, loss=0.1)).path == PathProfile(rtt_ms=7.0, loss=0.1)
    with pytest.raises(LabError, match="mtu"):
        delayed(Profile.WAN, mtu=100)


def test_profile_spec_delays_clients_and_attackers_and_leaves_servers_on_veth() -> None:
    spec = profile_spec("twdlu", clients=2, servers=2, attackers=1, profile=Profile.LOSSY)
    assert (spec.prefix, spec.clients, spec.servers, spec.attackers) == ("twdlu", 2, 2, 1)
    for name in ("c1", "c2", "a1"):
        assert spec.profile_for(name) == delayed(Profile.LOSSY), name
    for name in ("s1", "s2"):
        assert spec.profile_for(name) == LinkProfile(), name
    assert dict(spec.links).keys() == {"c1", "c2", "a1"}


def test_profile_spec_passes_options_on_and_lets_links_override() -> None:
    plan = AddressPlan(ipv4="10.99.0.0/16")
    spec = profile_spec("twdlu", 1, 1, 1, Profile.LAN, plan=plan, link=LinkProfile(mtu=1400),
                        links=(("a1", delayed(Profile.WAN)), ("s1", LinkProfile(mtu=1300))))  # fmt: skip
    assert spec.plan == plan
    assert spec.profile_for("c1") == delayed(Profile.LAN, mtu=1400)
    assert spec.profile_for("a1") == delayed(Profile.WAN)
    assert spec.profile_for("s1").mtu == 1300
    with pytest.raises(LabError, match="lab prefix"):
        profile_spec("TW", 1, 1, 0, Profile.LAN)


def test_host_seeds_differ_per_host_and_per_run_and_repeat() -> None:
    seeds = {host_seed(run, host) for run in range(20) for host in ("c1", "c2", "a1", "s1")}
    assert len(seeds) == 80
    assert host_seed(4, "c2") == host_seed(4, "c2")


def test_the_linker_refuses_a_kind_it_does_not_build() -> None:
    host = Host("c1", Role.CLIENT, "twdlu-c1", "twdlu-c1h", "twdlu-c1r", "10.213.1.2", "fd00:7477:1::2",
                "10.213.1.1", "fd00:7477:1::1")  # fmt: skip
    fake: Any = type("Odd", (), {"kind": type("K", (), {"value": "odd"})(), "path": None})()
    with pytest.raises(LabError, match="link kind odd is not built"):
        delay_linker()(host, "twdlu-rt", fake)
    assert delay_linker().stop() == {}


def test_cpu_seconds_reads_user_and_system_ticks(tmp_path: Path) -> None:
    tck = os.sysconf("SC_CLK_TCK")
    (tmp_path / "42").mkdir()
    fields = ["S"] + ["0"] * 10 + [str(3 * tck), str(tck)] + ["0"] * 30
    (tmp_path / "42" / "stat").write_text("42 (a (weird) name) " + " ".join(fields) + "\n")
    assert cpu_seconds(42, proc=tmp_path) == 4.0
    assert cpu_seconds(os.getpid()) > 0.0

"""The benign clients (lab.benign) against the lab's services: every activity works over both IP versions from two
clients at once, the tap sees flows to every service, and the end of a run ends long sessions at once.

One lab (2 clients, 2 servers; prefix ``twbn1``) with the lab user and all services for the module; the site's
downloads are small so that the capture stays small.
"""

from __future__ import annotations

import csv
import dataclasses
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.benign import ClientStats, run_client
from lab.benign_plan import Activity, Mix, Session, plan_client
from lab.episodes import Service, ServiceMap
from lab.labuser import lab_user
from lab.services import ServicesConfig, lab_services
from lab.svc_site import SiteSpec
from lab.topo_plan import TopologySpec
from lab.topology import Topology, lab_topology
from tests.support.env import need_netns

pytestmark = pytest.mark.timeout(90)

BUSY = Mix(weights=dict.fromkeys(Activity, 1.0), pace=3.0, ipv6_share=0.4, idle_hold_s=(4.0, 8.0),
           ssh_pause_s=(0.2, 1.0))  # fmt: skip
"""Every activity equally often, about 2.4 sessions a second per client, short idle and SSH sessions."""
RUN_S = 30.0


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Topology, ServiceMap, Path]]:
    need_netns()
    work = tmp_path_factory.mktemp("benign")
    config = ServicesConfig(site=SiteSpec(objects=30, downloads=(10_000, 200_000)))
    spec = TopologySpec(prefix="twbn1", clients=2, servers=2, attackers=0)
    with (
        lab_topology(spec) as topo,
        lab_user(shell="/bin/sh") as user,
        lab_services(topo, user, work / "services", config) as services,
    ):
        yield topo, services, work


def _run(topo: Topology, services: ServiceMap, plans: dict[str, list[Session]], work: Path,
         stop_after: float) -> dict[str, ClientStats]:  # fmt: skip
    """Run each client's plan in its own thread, as a scenario runner does, and stop them all after ``stop_after``."""
    stop, stats = threading.Event(), {}

    def client(name: str) -> None:
        stats[name] = run_client(topo, topo.host(name), services, plans[name], stop, work / name)

    threads = [threading.Thread(target=client, args=(name,)) for name in plans]
    for thread in threads:
        thread.start()
    stop.wait(stop_after)
    stop.set()
    for thread in threads:
        thread.join(20)
    assert not any(t.is_alive() for t in threads), "a client did not end within 20 s of the end of the run"
    return stats


def _flows(pcap: Path, out: Path) -> list[dict[str, str]]:
    tapwatch = str(Path(sys.executable).with_name("tapwatch"))
    subprocess.run([tapwatch, "flows", "--single-packet-flows", str(pcap), "-o", str(out)], check=True, timeout=60)
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_two_clients_do_every_activity_and_the_tap_sees_flows_to_every_service(
    lab: tuple[Topology, ServiceMap, Path],
) -> None:
    topo, services, work = lab
    plans = {name: plan_client(BUSY, random.Random(seed), RUN_S - 2) for seed, name in enumerate(("c1", "c2"))}
    planned = Counter(s.activity for plan in plans.values() for s in plan)
    assert set(planned) == set(Activity) and {s.family for p in plans.values() for s in p} == {4, 6}
    with topo.capture(work / "tap.pcap", 300_000_000, 400_000) as cap:
        stats = _run(topo, services, plans, work, RUN_S)
    ok, failed = Counter[Activity](), Counter[Activity]()
    for one in stats.values():
        ok.update(one.ok)
        failed.update(one.failed)
    assert {a for a in Activity if ok[a] == 0} == set(), (ok, failed)
    assert sum(failed.values()) <= 0.05 * sum(ok.values()), failed
    assert not cap.reached_limit and cap.dropped == 0
    flows = _flows(work / "tap.pcap", work / "flows.csv")
    ports = {int(f["Dst Port"]) for f in flows if f["Protocol"] in ("6", "17")}
    wanted = {services.port(s) for s in Service if s in services.at and s is not Service.C2}
    assert wanted <= ports, wanted - ports
    assert {f["Protocol"] for f in flows} >= {"1", "58"}, "pings over IPv4 and IPv6"
    clients = {topo.host(n).ipv4 for n in plans} | {topo.host(n).ipv6 for n in plans}
    assert {f["Src IP"] for f in flows} & clients == clients, "both clients over both IP versions"
    minute_rate = len(flows) / len(plans) / (RUN_S / 60)
    print(f"{len(flows)} flows, {minute_rate:.0f} per client-minute at pace {BUSY.pace}")


def test_the_end_of_the_run_ends_long_sessions_at_once_and_leaves_no_process(
    lab: tuple[Topology, ServiceMap, Path],
) -> None:
    topo, services, work = lab
    mix = dataclasses.replace(BUSY, weights={Activity.IDLE: 1.0, Activity.SSH: 1.0}, idle_hold_s=(60.0, 60.0),
                              ssh_pause_s=(30.0, 30.0))  # fmt: skip
    plan = [dataclasses.replace(s, offset_s=0.1 * i) for i, s in enumerate(plan_client(mix, random.Random(9), 5)[:4])]
    started = time.monotonic()
    stats = _run(topo, services, {"c1": plan}, work / "cut", 4.0)["c1"]
    assert time.monotonic() - started < 4.0 + 8.0, "SIGTERM, then SIGKILL after 3 s, for every session"
    assert stats.total == len(plan) and sum(stats.failed.values()) == 0, stats
    http_idle = sum(s.activity is Activity.IDLE and s.variant == "http" for s in plan)
    assert stats.ok[Activity.IDLE] >= http_idle, "an idle HTTP connection closed by the end of the run is done"
    pids = subprocess.run(["ip", "netns", "pids", topo.host("c1").netns], capture_output=True, text=True, timeout=10)
    assert pids.stdout.split() == []
    assert not any(p.is_dir() for p in (work / "cut" / "c1").iterdir()), "session folders are removed"

"""Run one scenario with a seed and a link profile: the lab up, traffic, a capture, labelled flows, teardown.

:func:`run_scenario` writes one directory:

* ``capture.pcap`` — everything the router forwarded, from the tap, within the run's disk budget;
* ``episodes.csv`` — every attack episode (family, tool, command line, attacker, victims, start, end) and one
  benign episode per host (:mod:`lab.episodes`);
* ``flows.csv`` — the capture's flows as ``tapwatch flows --single-packet-flows`` writes them (scan probes and
  spoofed floods are one-packet flows), each with its ``episode_id``, ``family`` and ``cic_class``
  (:mod:`lab.labels`);
* ``live/`` — with ``--live``, the alert lines ``tapwatch run`` wrote on the tap during the traffic and when
  each arrived (:mod:`lab.live_sensor`);
* ``run.json`` — written last, so a directory with it is complete: the scenario, seed and profile, the hosts,
  the episodes and flows per family, the capture's account (packets, kernel drops, whether the budget cut it),
  the handshake RTTs measured at the tap beside the profile's, the clients' session counts, the tools and their
  versions, and each file's sha256.

The schedule comes from the seed: the benign clients' sessions (:func:`lab.benign.plan_client`) and the order,
attackers and victims of the attacks (:func:`lab.attacks.plan_attacks`); two runs with one seed run the same
schedule (the packets differ: real tools on a real, busy machine).

Example
-------
>>> from lab.scenarios import scenario
>>> cfg = RunConfig(scenario("ci-short"), seed=7, profile=Profile.WAN, out=Path("runs/ci-short-wan-s7"))
>>> cfg.unit
'ci-short-wan-s7'
>>> run_scenario(cfg)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.attacks import run_attack
from lab.benign import plan_client, run_client
from lab.delayline import Profile
from lab.delaylink import DelayLinker, delay_linker, delay_topology, profile_spec
from lab.delayrtt import handshake_rtts, summarize
from lab.episodes import Episode, Family, ServiceMap, write_episodes
from lab.labels import benign_id, hosts_from_episodes, label_csv
from lab.labuser import lab_user
from lab.live_sensor import live_sensor
from lab.run_manifest import manifest, sha256_of, write_summary
from lab.run_plan import AttackSlot, plan_run
from lab.scenarios import Scenario
from lab.services import lab_services
from lab.topo_plan import LabError, Role
from lab.topology import Topology

log = logging.getLogger(__name__)

FILES = ("capture.pcap", "episodes.csv", "flows.csv")


@dataclass(frozen=True)
class RunConfig:
    """One unit of the lab: a scenario, a seed and a link profile, and where its directory goes.

    Parameters
    ----------
    scenario
        What to run (:mod:`lab.scenarios`).
    seed
        Seeds the schedule, the delay lines' jitter and loss, and the tools' random choices.
    profile
        The path profile of every client's and attacker's link (servers are on plain links, so a client-server
        round trip carries the profile's RTT once).
    out
        The run's directory; created, and refused when it exists and is not empty.
    prefix
        Prefix of the lab's namespace names (tests use ``twt...``).
    capture_bytes
        The capture's disk budget.
    """

    scenario: Scenario
    seed: int
    profile: Profile
    out: Path
    prefix: str = "twlab"
    capture_bytes: int = 2 << 30
    duration_s: float | None = None
    live: bool = False
    """Also run ``tapwatch run`` on the tap during the traffic (:mod:`lab.live_sensor`, into ``out/live``)."""

    @property
    def unit(self) -> str:
        return f"{self.scenario.name}-{self.profile.value}-s{self.seed}"

    @property
    def duration(self) -> float:
        return self.duration_s if self.duration_s is not None else self.scenario.duration_s


@dataclass
class RunResult:
    """What a run produced (also in its run.json)."""

    out: Path
    summary: dict[str, Any] = field(default_factory=dict)


def _benign_clients(topo: Topology, services: ServiceMap, cfg: RunConfig, work: Path,
                    stop: threading.Event) -> tuple[list[threading.Thread], dict[str, Any]]:  # fmt: skip
    """Start one thread per client running its seeded sessions; the dict fills with each client's stats."""
    stats: dict[str, Any] = {}
    threads = []
    for index, client in enumerate(topo.by_role(Role.CLIENT)):
        rng = random.Random(f"{cfg.seed}/benign/{client.name}")
        sessions = plan_client(cfg.scenario.mix(), rng, cfg.duration)
        folder = work / client.name
        folder.mkdir()

        def body(client=client, sessions=sessions, folder=folder) -> None:  # type: ignore[no-untyped-def]
            stats[client.name] = run_client(topo, client, services, sessions, stop, folder)

        thread = threading.Thread(target=body, name=f"benign-{client.name}", daemon=True)
        thread.start()
        threads.append(thread)
        log.info("run %s: client %s (#%s) has %s sessions", cfg.unit, client.name, index, len(sessions))
    return threads, stats


def _attacks(topo: Topology, services: ServiceMap, cfg: RunConfig, slots: list[AttackSlot], work: Path,
             deadline: float) -> list[Episode]:  # fmt: skip
    """Run the planned attacks one at a time; an attack whose bound would pass the deadline is left out."""
    episodes: list[Episode] = []
    for slot in slots:
        if _sleep_until(time.time() + slot.gap_s, deadline) or time.time() + slot.expected_s > deadline:
            log.warning("run %s: no time left for attack %s and the %s after it", cfg.unit, slot.name,
                        len(slots) - len(episodes) - 1)  # fmt: skip
            break
        ep = run_attack(topo, slot.name, topo.host(slot.attacker), topo.host(slot.victim), services,
                        episode_id=slot.episode_id, seed=slot.seed, scale=cfg.scenario.attack_scale,
                        link_profile=cfg.profile.value, workdir=work)  # fmt: skip
        episodes.append(ep)
        log.info("run %s: %s %s %s -> %s, %.1f s", cfg.unit, ep.episode_id, slot.name, slot.attacker, slot.victim,
                 ep.duration_s)  # fmt: skip
    return episodes


def _sleep_until(when: float, deadline: float) -> bool:
    """Sleep until ``when``; True when the deadline comes first."""
    time.sleep(max(0.0, min(when, deadline) - time.time()))
    return when >= deadline


def _benign_episodes(topo: Topology, cfg: RunConfig, start: float, end: float) -> list[Episode]:
    out = []
    for host in topo.hosts:
        tool = "mix" if host.role is Role.CLIENT else "idle"
        what = f"benign mix x{cfg.scenario.pace} of {host.name}" if tool == "mix" else f"{host.role.value} {host.name}"
        out.append(Episode(benign_id(host.name), Family.BENIGN, tool, what, (host.ipv4, host.ipv6), (), start, end,
                           cic_class="BENIGN", link_profile=_host_profile(host.role, cfg)))  # fmt: skip
    return out


def _host_profile(role: Role, cfg: RunConfig) -> str:
    return "none" if role is Role.SERVER else cfg.profile.value


def _extract(pcap: Path, raw: Path) -> None:
    """``tapwatch flows --single-packet-flows`` on the capture (the same extractor the sensor runs live)."""
    argv = [sys.executable, "-m", "tapwatch.app", "flows", "--single-packet-flows", "--sensor", "lab", str(pcap),
            "-o", str(raw)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        raise LabError(f"tapwatch flows failed on {pcap} (exit {done.returncode}): {done.stderr.strip()[-400:]}")


@contextlib.contextmanager
def _lab(cfg: RunConfig, work: Path, linker: DelayLinker) -> Iterator[tuple[Topology, ServiceMap]]:
    spec = profile_spec(cfg.prefix, cfg.scenario.clients, cfg.scenario.servers, cfg.scenario.attackers, cfg.profile)
    # The user outlives the lab: the lab's teardown ends every process in its namespaces (sshd's sessions run
    # as the user) before userdel, which refuses while a process of the user runs.
    with (
        lab_user(shell="/bin/sh") as user,
        delay_topology(spec, linker) as topo,
        lab_services(topo, user, work / "services") as services,
    ):
        yield topo, services


def run_scenario(cfg: RunConfig) -> RunResult:
    """Run ``cfg`` into ``cfg.out`` (see the module's docstring); the lab is torn down whatever happens."""
    began = time.time()
    out = cfg.out
    if out.exists() and any(out.iterdir()):
        raise LabError(f"run directory {out} exists and is not empty: refusing to overwrite a run")
    out.mkdir(parents=True, exist_ok=True)
    pcap = out / "capture.pcap"
    linker = delay_linker(cfg.seed)
    with tempfile.TemporaryDirectory(prefix=f"{cfg.prefix}-") as tmp, _lab(cfg, Path(tmp), linker) as (topo, services):
        plan = plan_run(cfg.scenario, topo, cfg.seed, services)
        sensor = live_sensor(topo, out / "live") if cfg.live else contextlib.nullcontext()
        with topo.capture(pcap, cfg.capture_bytes, max_packets=cfg.capture_bytes // 64) as cap, sensor:
            start = time.time()
            deadline = start + cfg.duration
            stop = threading.Event()
            threads, client_stats = _benign_clients(topo, services, cfg, Path(tmp), stop)
            try:
                _sleep_until(start + cfg.scenario.warmup_s, deadline)
                attacks = _attacks(topo, services, cfg, plan, Path(tmp), deadline)
                _sleep_until(deadline, deadline)
            finally:
                stop.set()
                for thread in threads:
                    thread.join(timeout=120.0)
            end = time.time()
        episodes = attacks + _benign_episodes(topo, cfg, start, end)
    client_stats["forwarders"] = linker.stats  # each delay line's counters (frames forwarded, lost, dropped)
    return _finish(cfg, episodes, cap, client_stats, (start, end, began))


def _finish(cfg: RunConfig, episodes: list[Episode], cap: Any, client_stats: dict[str, Any],
            span: tuple[float, float, float]) -> RunResult:  # fmt: skip
    """After teardown: episodes.csv, labelled flows.csv, run.json."""
    out = cfg.out
    write_episodes(episodes, out / "episodes.csv")
    raw = out / "flows.raw.csv"
    _extract(out / "capture.pcap", raw)
    counts = label_csv(raw, episodes, hosts_from_episodes(episodes), out / "flows.csv")
    raw.unlink()
    rtt = summarize(handshake_rtts(out / "capture.pcap"))
    forwarders = client_stats.pop("forwarders", {})
    summary = manifest(cfg, episodes, counts, cap, rtt, client_stats, span[:2]) | {"forwarders": forwarders}
    if cfg.live:
        summary["live"] = json.loads((out / "live" / "sensor.json").read_text())
    summary["wall_seconds"] = round(time.time() - span[2], 1)  # set-up, traffic, teardown and extraction
    summary["sha256"] = {name: sha256_of(out / name) for name in FILES}
    write_summary(out, summary)
    log.info("run %s: done in %.0f s: %s", cfg.unit, span[1] - span[0], counts)
    return RunResult(out, summary)

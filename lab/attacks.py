"""Run the lab's attacks (:data:`~lab.attack_catalog.ATTACKS`) as labelled episodes, and plan them from a seed.

:func:`run_attack` runs one attack in the attacker's namespace and returns its
:class:`~lab.episodes.Episode`: ``start`` is taken just before the tool starts and ``end`` just after it
exits (:func:`time.time`, the clock of the tap's capture), with both addresses of the attacker and of the
victim. The tool runs in the work directory (hydra's restore file, sqlmap's output stay there) with its
word lists written there only for the run (mode 0600, deleted afterwards); its output goes to
``<episode>-<attack>.log`` there with the run's passwords replaced by ``***``. A tool that outlives
:meth:`~lab.attack_catalog.Attack.timeout_s` is stopped (SIGTERM, then SIGKILL) and the episode is still
recorded. :func:`plan_attacks` turns a seed into a schedule: which attack, from which host, at which victim.

Run ``python -m lab.attacks --list`` to print the catalogue.

Example
-------
>>> from lab.topo_plan import TopologySpec, plan_hosts
>>> c1, c2, s1, a1 = plan_hosts(TopologySpec(prefix="twakdoc"))
>>> plan = plan_attacks(["nmap-syn", "beacon"], [a1], [s1], random.Random(5), bots=[c1, c2])
>>> [(p.episode_id, p.name, p.attacker.name, p.victim.name) for p in plan]
[('e001', 'nmap-syn', 'a1', 's1'), ('e002', 'beacon', 'c2', 'a1')]
"""

from __future__ import annotations

import json
import logging
import os
import random
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import click

from lab.attack_catalog import ATTACKS, TOOLS, Attack, AttackContext
from lab.episodes import Episode, Service, ServiceMap
from lab.topo_plan import Host, LabError
from lab.topology import Topology

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]  # lab.beacon runs as "python -m lab.beacon" from here
NOT_RUN = (126, 127)  # the shell's codes for "cannot execute" and "not found", as timeout(1) uses them
LOG_TAIL = 2000  # characters of a tool's output kept in the log line of a failed run

__all__ = ["ATTACKS", "TOOLS", "Attack", "AttackContext", "PlannedAttack", "plan_attacks", "run_attack"]


@dataclass(frozen=True)
class PlannedAttack:
    """One entry of a schedule: the episode id, the attack, who runs it, at whom, and the seed of its run."""

    episode_id: str
    name: str
    attacker: Host
    victim: Host
    seed: int


def attack(name: str) -> Attack:
    """The catalogue's attack ``name``, or :class:`LabError` naming the known ones."""
    try:
        return ATTACKS[name]
    except KeyError:
        raise LabError(f"no attack {name!r}; known: {', '.join(ATTACKS)}") from None


def _pick_victim(spec: Attack, attackers: Sequence[Host], victims: Sequence[Host], services: ServiceMap | None,
                 rng: random.Random) -> Host:  # fmt: skip
    """The service's host when the map is known (the bot's victim is the C2's host), else a random one."""
    if services is not None and spec.service is not None and spec.service in services.at:
        return services.host(spec.service)
    return rng.choice(list(attackers if spec.bot else victims))


def plan_attacks(names: Sequence[str], attackers: Sequence[Host], victims: Sequence[Host], rng: random.Random, *,
                 services: ServiceMap | None = None, bots: Sequence[Host] = ()) -> list[PlannedAttack]:  # fmt: skip
    """A schedule of ``names`` in their order: one seed (``rng``) gives one schedule.

    Parameters
    ----------
    names
        Attacks of :data:`ATTACKS`, in the order they run; episode ids are ``e001``... in that order.
    attackers, victims
        Hosts to attack from and hosts to attack (a service's host is chosen when ``services`` says where).
    rng
        Chooses hosts and each run's seed.
    services
        Where the services run: an attack on a service goes to its host, the bot's to the C2's host.
    bots
        Infected clients that run the botnet attacks.
    """
    if not attackers or not victims:
        raise LabError("an attack schedule needs at least one attacker and one victim")
    plan = []
    for index, name in enumerate(names, start=1):
        spec = attack(name)
        if spec.bot and not bots:
            raise LabError(f"attack {name} runs on an infected client: give bots")
        source = rng.choice(list(bots if spec.bot else attackers))
        victim = _pick_victim(spec, attackers, victims, services, rng)
        plan.append(PlannedAttack(f"e{index:03d}", name, source, victim, rng.randrange(2**31)))
    return plan


def _mac(topo: Topology, netns: str, iface: str) -> str:
    done = topo.run_in(netns, ["ip", "-j", "link", "show", "dev", iface], timeout=10)
    return str(json.loads(done.stdout)[0]["address"])


def _check_target(spec: Attack, victim: Host, services: ServiceMap) -> None:
    """An attack on a running service must aim at the host that runs it (the bot's at the C2's host)."""
    if spec.service is None or spec.service not in services.at:
        if spec.bot:
            raise LabError(f"attack {spec.name} needs the {Service.C2.value} service running")
        return
    where = services.host(spec.service)
    if where != victim:
        raise LabError(
            f"attack {spec.name} aims at {spec.service.value}, which runs on {where.name}, not {victim.name}"
        )


def _write_files(spec: Attack, ctx: AttackContext) -> list[Path]:
    """Write the attack's input files (owner-only: word lists hold the run's throwaway password)."""
    written = []
    for name, text in spec.files(ctx).items():
        path = ctx.workdir / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        written.append(path)
    return written


@dataclass(frozen=True)
class _Run:
    start: float
    end: float
    code: int
    timeout: float | None  # the bound it ran over, None when it exited in time
    output: str


def _execute(topo: Topology, host: Host, argv: list[str], timeout: float, spec: Attack, workdir: Path) -> _Run:
    """Start the tool, wait at most ``timeout`` s, stop it if it is still running; its times and output."""
    # HOME: siege and sqlmap keep state under ~ (~/.siege, ~/.local/share/sqlmap); it stays in the work directory
    env = {**os.environ, "HOME": str(workdir), **({"PYTHONPATH": str(REPO)} if spec.bot else {})}
    with tempfile.TemporaryFile("w+", errors="replace") as out:
        start = time.time()
        proc = topo.start_in(host, argv, cwd=workdir, stdout=out, stderr=subprocess.STDOUT, env=env)
        over: float | None = None
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            over = timeout
            code = topo.stop(proc)
        end = time.time()
        if proc in topo.procs:
            topo.procs.remove(proc)  # it exited: nothing left for teardown to stop
        out.seek(0)
        return _Run(start, end, code, over, out.read())


def _redact(text: str, services: ServiceMap) -> str:
    for secret in (services.login.password, services.app_login.password):
        if secret:
            text = text.replace(secret, "***")
    return text


def run_attack(topo: Topology, name: str, attacker: Host, victim: Host, services: ServiceMap, *, episode_id: str,
               seed: int, scale: float = 1.0, link_profile: str = "none", workdir: Path) -> Episode:  # fmt: skip
    """Run attack ``name`` from ``attacker`` at ``victim`` and return its episode.

    Parameters
    ----------
    topo
        The built lab.
    name
        An attack of :data:`ATTACKS`.
    attacker, victim
        Where it runs and whom it targets; for the bot, the infected client and the C2's host.
    services
        The run's services (ports, the accounts whose passwords the word lists hold).
    episode_id, seed, scale, link_profile
        The episode's id, the seed of its command line and word lists, the scale of its counts and
        durations (:class:`~lab.attack_catalog.AttackContext`), and the attacker's link profile for the label.
    workdir
        An existing directory for word lists, tool output and the log.
    """
    spec = attack(name)
    _check_target(spec, victim, services)
    workdir = Path(workdir).resolve()
    macs = _mac(topo, topo.router, attacker.router_iface), _mac(topo, attacker.netns, attacker.iface)
    ctx = AttackContext(attacker, victim, services, scale, random.Random(seed), workdir, *macs)
    written = _write_files(spec, ctx)
    argv = spec.argv(ctx)
    try:
        run = _execute(topo, attacker, argv, spec.timeout_s(scale), spec, workdir)
    finally:
        for path in written:
            path.unlink(missing_ok=True)
    output = _redact(run.output, services)
    (workdir / f"{episode_id}-{name}.log").write_text(output)
    _report(episode_id, spec, run, output)
    return Episode(episode_id, spec.family, spec.tool, shlex.join(argv), (attacker.ipv4, attacker.ipv6),
                   (victim.ipv4, victim.ipv6), run.start, run.end, spec.cic_class, spec.spoofed,
                   link_profile)  # fmt: skip


def _report(episode_id: str, spec: Attack, run: _Run, output: str) -> None:
    """One log line per episode; a timeout or a failure says so, with the tail of the tool's output."""
    took = run.end - run.start
    if run.code in NOT_RUN:
        raise LabError(f"episode {episode_id}: {spec.tool} could not run (exit {run.code}): {output.strip()[-300:]}")
    if run.timeout is not None:
        log.warning("episode %s: %s ran over its %.0f s bound and was stopped (exit %s after %.1f s)", episode_id,
                    spec.name, run.timeout, run.code, took)  # fmt: skip
    elif run.code not in spec.ok_codes:
        log.warning("episode %s: %s exited with %s after %.1f s: %s", episode_id, spec.name, run.code, took,
                    output.strip()[-LOG_TAIL:])  # fmt: skip
    else:
        log.info("episode %s: %s took %.1f s", episode_id, spec.name, took)


@click.command()
@click.option("--list", "show", is_flag=True, help="Print the catalogue: name, family, CIC-IDS2017 class, tool.")
def main(show: bool) -> None:
    """The lab's attacks. Example: python -m lab.attacks --list"""
    if not show:
        raise click.UsageError("nothing to do: give --list")
    for spec in ATTACKS.values():
        click.echo(f"{spec.name:22} {spec.family.value:10} {spec.cic_class or '-':28} {spec.tool} ({TOOLS[spec.tool]})")


if __name__ == "__main__":
    sys.exit(main())

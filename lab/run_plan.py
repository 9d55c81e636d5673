"""A run's attack schedule from its seed: which attack, from which host, at which victim, after which pause.

:func:`plan_run` shuffles the scenario's attack names with the seed and hands them to
:func:`lab.attacks.plan_attacks`, which picks each attack's source (an attacker host; for the beaconing bot the
last client, the infected one) and its victim (the host that serves what the attack targets, found in the run's
:class:`~lab.episodes.ServiceMap`, or a server drawn with the seed). This module adds the pause before each
attack and the time it is expected to take, so the runner can leave out what would not end within the run.
One seed gives one schedule.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lab.attacks import ATTACKS, plan_attacks
from lab.episodes import ServiceMap
from lab.scenarios import Scenario
from lab.topo_plan import LabError, Role
from lab.topology import Topology


@dataclass(frozen=True)
class AttackSlot:
    """One planned attack: its episode id, catalogue name, hosts, the pause before it, its seed and expected time."""

    episode_id: str
    name: str
    attacker: str
    victim: str
    gap_s: float
    seed: int
    expected_s: float


def expected_s(name: str, scale: float) -> float:
    """How long attack ``name`` runs at ``scale`` as the catalogue expects (its timeout is twice that plus 20 s)."""
    attack = ATTACKS[name]
    return max(attack.seconds * scale, attack.floor_s)


def plan_run(scenario: Scenario, topo: Topology, seed: int, services: ServiceMap) -> list[AttackSlot]:
    """The attack schedule of one run (see the module's docstring)."""
    unknown = [name for name in scenario.attacks if name not in ATTACKS]
    if unknown:
        raise LabError(f"scenario {scenario.name} names attacks not in the catalogue: {', '.join(unknown)}")
    rng = random.Random(f"{seed}/attacks")
    names = list(scenario.attacks)
    rng.shuffle(names)
    planned = plan_attacks(names, topo.by_role(Role.ATTACKER), topo.by_role(Role.SERVER), rng, services=services,
                           bots=topo.by_role(Role.CLIENT)[-1:])  # fmt: skip
    return [AttackSlot(p.episode_id, p.name, p.attacker.name, p.victim.name, rng.uniform(*scenario.gap_s), p.seed,
                       expected_s(p.name, scenario.attack_scale)) for p in planned]  # fmt: skip

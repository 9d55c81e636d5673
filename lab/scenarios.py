"""The lab's scenarios by name: how many hosts of each role, how long, which attacks, how busy the clients are.

A scenario is pure data; :mod:`lab.run` runs one with a seed and a link profile into a directory. Three are
defined (:data:`SCENARIOS`):

* ``office-day``: a small office — 7 clients on the office mix at pace 2.5, 2 servers — for 1,000 s, with 13
  attacks (at least two of each family) spread over it; most of its flows are benign: the corpus' workhorse.
* ``attack-mix``: 3 clients and every attack of the catalogue once, one after the other, for 18 minutes.
* ``ci-short``: 2 clients and one attack of each family at a small scale, under 2 minutes; CI runs it end to end.

Every scenario has 2 servers (s1: web; s2: DNS, NTP, SSH, FTP, mail) and 2 attacker hosts (a2 also hosts the
beaconing bot's C2); the bot runs on the last client.

Example
-------
>>> sc = scenario("ci-short")
>>> sc.name, sc.clients, sc.duration_s < 120
('ci-short', 2, True)
>>> scenario("office-night")
Traceback (most recent call last):
...
lab.topo_plan.LabError: no scenario 'office-night'; known: attack-mix, ci-short, office-day
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lab.attack_catalog import ATTACKS
from lab.benign_plan import OFFICE_MIX, Mix
from lab.topo_plan import LabError


@dataclass(frozen=True)
class Scenario:
    """One named scenario.

    Parameters
    ----------
    name
        Its name on the command line.
    clients, servers, attackers
        Hosts of each role (servers >= 1; attackers >= 1 when there are attacks).
    duration_s
        How long the run lasts (benign traffic runs throughout; attacks start within it).
    attacks
        Names from the attack catalogue (:data:`lab.attacks.ATTACKS`), run one at a time in the order the seed
        shuffles them; the same name may appear more than once.
    attack_scale
        Scales each attack's packet counts and durations (1.0: the catalogue's corpus size).
    pace
        Scales how busy each benign client is (1.0: the office mix as defined).
    warmup_s
        Benign traffic alone before the first attack (caches, keep-alive connections, the resolver warm).
    gap_s
        The pause between two attacks is drawn uniformly from this range.
    """

    name: str
    clients: int
    servers: int
    attackers: int
    duration_s: float
    attacks: tuple[str, ...]
    attack_scale: float = 1.0
    pace: float = 1.0
    warmup_s: float = 10.0
    gap_s: tuple[float, float] = (5.0, 20.0)

    def __post_init__(self) -> None:
        if self.servers < 1 or self.clients < 1 or (self.attacks and self.attackers < 1):
            raise LabError(f"scenario {self.name}: needs a client, a server and, with attacks, an attacker")
        if not 10 <= self.duration_s <= 24 * 3600 or not 0 < self.attack_scale <= 10 or not 0 < self.pace <= 50:
            raise LabError(f"scenario {self.name}: duration 10 s..24 h, attack_scale 0..10, pace 0..50")

    def mix(self) -> Mix:
        """The benign clients' mix: the office mix at this scenario's pace."""
        return replace(OFFICE_MIX, pace=self.pace)


ALL_ATTACKS = tuple(ATTACKS)
"""Every attack of the catalogue, as attack-mix runs them (the seed shuffles the order)."""

SCENARIOS: dict[str, Scenario] = {
    sc.name: sc
    for sc in (
        Scenario(
            "office-day",
            clients=7,
            servers=2,
            attackers=2,
            duration_s=1000.0,
            pace=2.5,
            attacks=(
                "nmap-syn",
                "nmap-connect6",
                "masscan",
                "hping3-syn-spoofed",
                "hping3-udp-spoofed",
                "slowloris",
                "wrk-flood",
                "hydra-ssh",
                "hydra-ftp",
                "hydra-http-form",
                "sqlmap",
                "beacon",
                "beacon",
            ),
            gap_s=(20.0, 45.0),
        ),
        Scenario(
            "attack-mix", clients=3, servers=2, attackers=2, duration_s=1080.0, attacks=ALL_ATTACKS, gap_s=(3.0, 10.0)
        ),
        Scenario(
            "ci-short",
            clients=2,
            servers=2,
            attackers=2,
            duration_s=70.0,
            attack_scale=0.1,
            pace=2.0,
            warmup_s=3.0,
            gap_s=(1.0, 2.0),
            attacks=("nmap-syn", "hping3-syn-spoofed", "hydra-ssh", "hydra-http-form", "beacon"),
        ),
    )
}


def scenario(name: str) -> Scenario:
    """The scenario called ``name``; a :class:`LabError` naming the known ones otherwise."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise LabError(f"no scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None

"""Matching alert lines to the lab's attacks, for :mod:`tapwatch.app.episodes_report`.

An alert line belongs to an attack when its episode is about the attacker and names one of the attack's victims as
its target (or, for a flood, is about its victim), and its time overlaps the attack's, plus a slack for flows that
expire late. Lines that belong to no attack are false;
so are the previous release's per-window alerts on flows of no attack.

>>> [round(x, 4) for x in wilson(0, 1000)]
[0.0, 0.0038]
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from tapwatch.features.families import Family


@dataclass(frozen=True)
class Attack:
    id: str
    family: Family
    tool: str
    attackers: frozenset[str]
    victims: frozenset[str]
    start_ms: int
    end_ms: int
    spoofed: bool


@dataclass
class AttackResult:
    attack: str
    family: str
    tool: str
    spoofed: bool
    detected: bool = False
    named: bool = False
    delay_s: float | None = None
    lines: int = 0
    families: list[str] = field(default_factory=list)
    named_by: list[str] = field(default_factory=list)
    """Ids of the episodes that named it by its family."""
    joined: bool = False
    """Every episode credited with it had opened before it began (an earlier attack on the same host): the
    operator already had an open episode, and this attack shows in its updates (``delay_s`` is to the next line)."""


def read_attacks(path: Path) -> list[Attack]:
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["family"] == Family.BENIGN.value:
                continue
            out.append(Attack(row["episode_id"], Family(row["family"]), row["tool"],
                              frozenset(row["attacker"].split()), frozenset(row["victims"].split()),
                              int(float(row["start"]) * 1000), int(float(row["end"]) * 1000),
                              row.get("spoofed", "0") == "1"))  # fmt: skip
    return out


def flow_counts(flows_csv: Path) -> tuple[int, dict[str, int]]:
    """Benign flows, and flows per episode id (an attack without flows was not captured: the lab's capture budget
    ran out before it, or the tool failed)."""
    per: dict[str, int] = {}
    benign = 0
    with flows_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            per[row.get("episode_id", "")] = per.get(row.get("episode_id", ""), 0) + 1
            benign += row.get("family", "benign") == "benign"
    return benign, per


def false_windows(over: list[tuple[str, str, int]], attacks: list[Attack], slack_s: float) -> int:
    """Windows over the threshold whose newest flow belongs to no attack (an attacker's, or to a victim of a flood,
    within the attack's time plus the slack): the previous release's false alerts on a lab run."""

    def attack_flow(src: str, dst: str, t: int) -> bool:
        return any(a.start_ms <= t <= a.end_ms + slack_s * 1000 and (src in a.attackers or dst in a.attackers
                   or (a.family is Family.DOS and dst in a.victims)) for a in attacks)  # fmt: skip

    return sum(1 for src, dst, t in over if not attack_flow(src, dst, t))


def ms(iso: str) -> int:
    """Epoch milliseconds of an ISO 8601 time (``Z`` or ``+0000`` offsets)."""
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _involves(lines: list[dict[str, Any]], a: Attack) -> bool:
    """An episode about a flood's victim involves the attack on that victim; one about a source, the attack from
    that source *on one of its victims* (a line names it as its destination or among its busiest ten targets): an
    attacker host is often a busy client too, and an episode about its other traffic is no detection of its
    attack."""
    ep = lines[0]["episode"]
    if ep["key"] == "victim":
        return ep["host"] in a.victims  # an episode about another victim of the same attacker is not this attack
    return ep["host"] in a.attackers and any(
        x["dest_ip"] in a.victims or any(t in a.victims for t in x["episode"].get("top_targets", ())) for x in lines
    )


def match(lines: list[dict[str, Any]], attacks: list[Attack], slack_s: float) -> tuple[list[AttackResult], int, int]:
    """Per attack results, false lines and false episodes (lines whose episode matches no attack)."""
    by_episode: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_episode.setdefault(line["episode"]["id"], []).append(line)
    results = {a.id: AttackResult(a.id, a.family.value, a.tool, a.spoofed) for a in attacks}
    false_lines = false_eps = 0
    for ep_lines in by_episode.values():
        first, last = ms(ep_lines[0]["episode"]["first_seen"]), ms(ep_lines[-1]["episode"]["last_seen"])
        owners = [a for a in attacks if _involves(ep_lines, a)
                  and first <= a.end_ms + slack_s * 1000 and last >= a.start_ms]  # fmt: skip
        if not owners:
            false_lines += len(ep_lines)
            false_eps += 1
            continue
        fam = ep_lines[0]["ml"]["family"]
        named = [a for a in owners if a.family.value == fam]
        # An episode may cover several attacks on one host (a scan, then another scan): each of its family is
        # credited, with all the episode's lines (an upper bound per attack); else the one it overlaps most.
        credited = named or [max(owners, key=lambda a: min(last, a.end_ms) - max(first, a.start_ms))]
        times = sorted(ms(x["timestamp"].replace("+0000", "+00:00")) for x in ep_lines)
        for owner in credited:
            r = results[owner.id]
            r.joined = (r.joined or not r.detected) and times[0] < owner.start_ms
            r.detected = True
            r.named = r.named or fam == owner.family.value
            if fam == owner.family.value:
                r.named_by.append(ep_lines[0]["episode"]["id"])
            r.families.append(fam)
            r.lines += len(ep_lines)
            # the first line the operator got once the attack had begun (an open episode may only update later)
            after = [t for t in times if t >= owner.start_ms]
            delay = (after[0] - owner.start_ms) / 1000 if after else 0.0
            r.delay_s = delay if r.delay_s is None else min(r.delay_s, delay)
    return list(results.values()), false_lines, false_eps


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95 % interval of a rate k/n.

    >>> [round(x, 4) for x in wilson(0, 1000)]
    [0.0, 0.0038]
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def per_k(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{1000 * k / n:.2f} [{1000 * lo:.2f}, {1000 * hi:.2f}]" if n else "n/a"


@dataclass
class Scored:
    """A lab run's lines against its attacks: the attacks it captured, the ones it did not, false lines."""

    results: list[AttackResult]
    not_captured: list[str]
    false_lines: int
    false_episodes: int
    benign_flows: int


def score_run(run: Path, lines: list[dict[str, Any]], slack_s: float) -> Scored:
    """Match ``lines`` to the attacks of the lab run folder ``run`` (its ``episodes.csv`` and ``flows.csv``); an
    attack without flows was not captured and is left out of the results."""
    attacks = read_attacks(run / "episodes.csv")
    benign, per_episode = flow_counts(run / "flows.csv")
    results, false_lines, false_eps = match(lines, attacks, slack_s)
    missing = [a.id for a in attacks if not per_episode.get(a.id)]
    kept = [r for r in results if r.attack not in missing]
    return Scored(kept, missing, false_lines, false_eps, benign)

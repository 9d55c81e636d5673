"""Evidence: what one verdict or one aggregate bucket says about one host, before anything is alerted.

Slips' design, in tapwatch's records: detectors emit evidence, and only accumulated evidence becomes an alert
(:mod:`tapwatch.alerting.episodes`). Two views produce it:

* the **window view**: a verdict whose attack score crosses the card's threshold *and* whose most probable class
  is an attack (a window the model calls benign is no evidence, whatever its score);
* the **volume view**: an :class:`~tapwatch.features.aggregates.AggregateRecord` that a rule of
  :mod:`tapwatch.alerting.volume` finds past a learned threshold.

Each piece names the host it is about: the *victim* for a flood (``Family.by_victim``), the *source* for
everything else, so one attacker's scan is one episode and a flood from 40,000 spoofed sources is one too.

>>> from tapwatch.features.schema import ExpiryReason, FlowMeta
>>> meta = FlowMeta(7, "1:x", "10.0.0.1", 40000, "10.0.0.2", 80, 6, 1000, 2000, 4, 300, ExpiryReason.TCP_FIN,
...                 2100, "s1")
>>> ev = Evidence(Family.DOS, ViewKind.WINDOW, "10.0.0.2", 2000, 0.9, meta, "DoS Hulk")
>>> ev.role, ev.episode_key
('victim', 'dos|victim|10.0.0.2')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from functools import lru_cache
from typing import Any

import numpy as np

from tapwatch.features.families import Family, family_of_class
from tapwatch.features.profile import RuleKind, SiteProfile
from tapwatch.features.schema import FlowMeta, Verdict


class ViewKind(str, Enum):
    """Which view produced a piece of evidence (a closed set: it is a metric label)."""

    WINDOW = "window"
    VOLUME = "volume"


@dataclass(frozen=True)
class Fact:
    """One measured value behind a piece of evidence, with the benign median beside it, for the summary.

    ``weight`` says how far past its threshold the value is (1.0: at the threshold); window evidence carries
    LIME weights instead, computed once per episode.
    """

    name: str
    value: float
    median: float | None = None
    weight: float = 0.0
    text: str = ""
    """How the summary says it, with ``{value}`` and ``{median}`` placeholders."""


@dataclass(frozen=True)
class Evidence:
    """One piece of evidence about one host.

    Parameters
    ----------
    family
        What it looks like.
    view
        Which view produced it.
    entity
        The host it is about: the victim for a flood, the source otherwise.
    at_ms
        Packet time of the newest traffic behind it.
    score
        How sure: the model's attack score, or for a rule how far past its threshold (capped at 1).
    flow
        A representative flow (the window's newest flow, the aggregate's sample).
    detail
        The dataset class (``DoS Hulk``) or the rule (``SYN flood``): ``ml.class``.
    flows, sources, targets, ports
        What it covers: flows, and up to a few addresses and ports with the counts beyond them.
    facts
        The measured values behind it (volume view), for the explanation and the summary.
    tensor
        The window, for a LIME explanation (window view).
    model, model_version
        Who decided.
    alone
        Whether this piece may open an episode by itself. The volume view's counts are decisive except the
        repeated-service rule's: many connections to one service are also a test harness, a batch job or a
        chatty client, so that piece opens an episode only beside the window view's evidence of the same family
        (Zeek calls password guessing only on *failed* logins; here the model judges what the connections are).
    """

    family: Family
    view: ViewKind
    entity: str
    at_ms: int
    score: float
    flow: FlowMeta
    detail: str
    flows: int = 1
    sources: tuple[str, ...] = ()
    targets: tuple[str, ...] = ()
    ports: tuple[int, ...] = ()
    n_sources: int = 0
    n_targets: int = 0
    n_ports: int = 0
    facts: tuple[Fact, ...] = ()
    tensor: np.ndarray[Any, np.dtype[np.float32]] | None = field(default=None, compare=False, repr=False)
    model: str = ""
    model_version: str = ""
    alone: bool = True

    @property
    def role(self) -> str:
        return "victim" if self.family.by_victim else "source"

    @property
    def episode_key(self) -> str:
        """``family|role|host``: one episode per key at a time."""
        return f"{self.family.value}|{self.role}|{self.entity}"


def benign_names(verdict: Verdict, card_benign: str | None) -> set[str]:
    """The verdict's benign class names: the card's, and any class whose family is benign."""
    names = {c for c in verdict.class_names if family_of_class(c) is Family.BENIGN}
    if card_benign is not None:
        names.add(card_benign)
    return names


@lru_cache(maxsize=64)
def _family_columns(class_names: tuple[str, ...], family: Family) -> tuple[int, ...]:
    """The columns of ``family``'s classes (a verdict's class names are its model's: a handful of tuples)."""
    return tuple(i for i, c in enumerate(class_names) if family_of_class(c) is family)


@dataclass(frozen=True)
class ProfileGate:
    """A site profile's bars on window-view evidence: the family's score (its classes' summed probability) at or
    over the profile's threshold for that family, and with the ``novel`` rule a window unlike the site's benign
    ones (a verdict the worker scored without the profile's novelty model passes that part, and is counted)."""

    model: str
    thresholds: tuple[tuple[str, float], ...] = ()
    novelty_min: float | None = None

    @classmethod
    def of(cls, profile: SiteProfile) -> ProfileGate:
        novel = profile.rule.novelty_min if profile.rule.kind is RuleKind.NOVEL else None
        return cls(profile.card.model.name, tuple(sorted(profile.thresholds.items())), novel)

    def admits(self, verdict: Verdict, family: Family) -> bool:
        if verdict.model != self.model:
            return True
        bar = next((t for f, t in self.thresholds if f == family.value), 0.0)
        if bar > 0:
            score = sum(verdict.probabilities[i] for i in _family_columns(verdict.class_names, family))
            if score < bar:
                return False
        return self.novelty_min is None or verdict.novelty is None or verdict.novelty >= self.novelty_min


def family_of_verdict(
    verdict: Verdict, card_benign: str | None = None, gate: ProfileGate | None = None
) -> tuple[Family, str] | None:
    """The family and class a verdict is evidence of, or None.

    None when the score is under the threshold, or when the most probable class is benign: a threshold under
    0.5 on ``1 - P(benign)`` lets windows through that the model itself calls benign, and those raise nothing.
    A class tapwatch cannot place in a family is None too (logged by the caller). With a site profile's ``gate``,
    None also when the profile's bars for the family are not met.
    """
    if not verdict.over_threshold or verdict.predicted in benign_names(verdict, card_benign):
        return None
    family = family_of_class(verdict.predicted)
    if family is None or family is Family.BENIGN:
        return None
    if gate is not None and not gate.admits(verdict, family):
        return None
    return family, verdict.predicted


def from_verdict(verdict: Verdict, card_benign: str | None = None, gate: ProfileGate | None = None) -> Evidence | None:
    """The window view's evidence in one verdict, or None (see :func:`family_of_verdict`)."""
    found = family_of_verdict(verdict, card_benign, gate)
    if found is None:
        return None
    family, cls = found
    f = verdict.flow
    entity = f.dst_ip if family.by_victim else f.src_ip
    return Evidence(
        family=family, view=ViewKind.WINDOW, entity=entity, at_ms=f.last_seen_ms, score=float(verdict.score),
        flow=f, detail=cls, flows=1, sources=(f.src_ip,), targets=(f.dst_ip,), ports=(f.dst_port,),
        n_sources=1, n_targets=1, n_ports=1, tensor=verdict.tensor, model=verdict.model,
        model_version=verdict.model_version,
    )  # fmt: skip

"""An episode's alert line: Suricata EVE-shaped, with ``episode{...}``, the family and an explanation in words.

Every line of an episode (``open``, ``update``, ``close``) is one ``event_type: "alert"`` object. The
5-tuple and ``community_id`` are the episode's representative flow (its volume-view evidence first, else its
strongest window); for an episode keyed by its victim (a flood) ``src_ip`` is the busiest source and
``episode.sources`` counts them all. ``episode.top_sources`` / ``top_targets`` name the busiest ten.
``alert.signature_id`` is one per family (:func:`family_signature`), so ``threshold.config`` and SIEM rules
key on the family; the dataset class or the rule that fired is detail in ``ml.class``. ``docs/alerts.md`` maps
each field to ECS.

>>> family_signature(Family.SCAN).sid, family_signature(Family.SCAN).msg
(9200001, 'TAPWATCH Network scan')
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tapwatch.alerting.alert import PROTO_NAMES, Contribution, eve_timestamp
from tapwatch.alerting.episodes import EpisodeLine
from tapwatch.alerting.signatures import Category, Severity
from tapwatch.features.families import Family
from tapwatch.features.schema import FlowMeta

FAMILY_SID_BASE = 9_200_000
GID = 1

_BASE_SEVERITY = {Family.SCAN: Severity.LOW, Family.DOS: Severity.MEDIUM, Family.BRUTEFORCE: Severity.MEDIUM,
                  Family.WEBATTACK: Severity.MEDIUM, Family.BOTNET: Severity.HIGH}  # fmt: skip
_CATEGORY = {Family.SCAN: Category.RECON, Family.DOS: Category.DOS, Family.BRUTEFORCE: Category.CREDENTIAL,
             Family.WEBATTACK: Category.WEB_ATTACK, Family.BOTNET: Category.COMPROMISE}  # fmt: skip


@dataclass(frozen=True)
class FamilySignature:
    """The rule-like identity of a family: what ``threshold.config`` and SIEM rules key on."""

    sid: int
    msg: str
    family: Family
    gid: int = GID
    rev: int = 1

    @property
    def category(self) -> Category:
        return _CATEGORY[self.family]


def family_signature(family: Family) -> FamilySignature:
    """``signature_id`` 9,200,000 + the family's index (scan 1, dos 2, bruteforce 3, webattack 4, botnet 5)."""
    return FamilySignature(FAMILY_SID_BASE + family.number, f"TAPWATCH {family.label}", family)


def severity_of(episode: dict[str, Any]) -> Severity:
    """Severity from the evidence: the family's base, one step up for a large and certain episode, one step down
    for a weak one (``docs/alerts.md``).

    >>> int(severity_of({"family": "dos", "flows": 5000, "n_sources": 900, "n_targets": 1, "max_score": 0.99}))
    1
    >>> int(severity_of({"family": "botnet", "flows": 3, "n_sources": 1, "n_targets": 1, "max_score": 0.6}))
    2
    """
    base = int(_BASE_SEVERITY[Family(episode["family"])])
    large = episode["flows"] >= 1000 or episode["n_sources"] >= 100 or episode["n_targets"] >= 50
    if large and episode["max_score"] >= 0.9:
        base -= 1
    elif episode["max_score"] < 0.7:
        base += 1
    return Severity(min(max(base, int(Severity.HIGH)), int(Severity.LOW)))


def iso(ms: int) -> str:
    """ISO 8601 with milliseconds and ``Z``.

    >>> iso(1499428365123)
    '2017-07-07T11:52:45.123Z'
    """
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _busiest(counts: dict[str, int], n: int = 10) -> list[str]:
    """The ``n`` names with the most flows (ties: the greater name first)."""
    return sorted(counts, key=lambda k: (counts[k], k), reverse=True)[:n]


@dataclass(frozen=True)
class EpisodeAlert:
    """One line of one episode, ready for the sinks (which read ``id``, ``severity``, ``signature.sid``,
    ``window_id``, ``flow`` and ``class_name``)."""

    line: EpisodeLine
    explanation: tuple[Contribution, ...]
    summary: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def episode(self) -> dict[str, Any]:
        return self.line.episode

    @property
    def family(self) -> Family:
        return Family(self.episode["family"])

    @property
    def signature(self) -> FamilySignature:
        return family_signature(self.family)

    @property
    def severity(self) -> Severity:
        return severity_of(self.episode)

    @property
    def flow(self) -> FlowMeta:
        return FlowMeta.from_json(self.episode["rep"])

    @property
    def window_id(self) -> str:
        """The episode id (the Redis sink's ``window_id`` field names what the line is about)."""
        return str(self.episode["id"])

    @property
    def class_name(self) -> str:
        return self.family.value

    def to_eve(self) -> dict[str, Any]:
        e, f, s = self.episode, self.flow, self.signature
        src, dst = f.src_ip, f.dst_ip
        if e["role"] == "victim":  # a flood: its busiest source (of many, maybe spoofed) and the victim
            src, dst = next(iter(_busiest(e["sources"], 1)), src), e["entity"]
        else:  # the host, and the destination of the representative flow (its ports are that flow's)
            src = e["entity"]
        return {
            "timestamp": eve_timestamp(e["last_ms"]), "flow_id": f.flow_id, "event_type": "alert",
            "src_ip": src, "src_port": f.src_port, "dest_ip": dst, "dest_port": f.dst_port,
            "proto": PROTO_NAMES.get(f.protocol, str(f.protocol)), "community_id": f.community_id,
            "direction": "to_server",
            "alert": {"action": "allowed", "gid": s.gid, "signature_id": s.sid, "rev": s.rev, "signature": s.msg,
                      "category": self.family.category, "severity": int(self.severity)},
            "episode": self._episode(),
            "ml": {"family": self.family.value, "class": e.get("rep_detail", ""),
                   "classes": dict(sorted(e["classes"].items(), key=lambda kv: -kv[1])),
                   "view": e.get("rep_view", ""), "views": list(e["views"]), "model": e["model"],
                   "model_version": e["model_version"], "score": e["max_score"],
                   "explanation": [c.to_json() for c in self.explanation], "summary": self.summary,
                   "alert_id": self.id},
            "host": f.sensor,
        }  # fmt: skip

    def _episode(self) -> dict[str, Any]:
        e = self.episode
        return {
            "id": e["id"], "state": self.line.state.value, "key": e["role"], "host": e["entity"],
            "first_seen": iso(e["first_ms"]), "last_seen": iso(e["last_ms"]), "flows": e["flows"],
            "evidence": e["evidence"], "sources": e["n_sources"], "targets": e["n_targets"], "ports": e["n_ports"],
            "top_ports": sorted((int(p) for p in e["ports"]), key=lambda p: -e["ports"][str(p)])[:10],
            "top_sources": _busiest(e["sources"]), "top_targets": _busiest(e["targets"]),
            "max_score": e["max_score"], "classes": sorted(e["classes"]), "lines": len(e["lines"]),
        }  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(self.to_eve(), separators=(",", ":"), ensure_ascii=False)

"""The :class:`Alert` record and its Suricata EVE JSON form (one object per line).

An alert is built from one :class:`~tapwatch.features.schema.Verdict` over its threshold: the newest flow of the
window, the model's decision, the stable signature of the alerted class and, when the budget allowed, a LIME
explanation. ``docs/alerts.md`` documents every EVE field and its ECS mapping.
"""

from __future__ import annotations

import ipaddress
import json
import math
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Protocol

from tapwatch.alerting.errors import InvalidAlert
from tapwatch.alerting.signatures import Category, Severity, Signature, is_benign
from tapwatch.features.schema import FlowMeta, Verdict

PROTO_NAMES = {1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 58: "IPv6-ICMP", 132: "SCTP"}
"""IP protocol numbers as Suricata writes them in ``proto``; others are written as the number."""


class Action(str, Enum):
    """``alert.action``: tapwatch watches a tap and never blocks."""

    ALLOWED = "allowed"


class Direction(str, Enum):
    """Who the alert points at: the window key is the flow's source, its initiator."""

    TO_SERVER = "to_server"
    TO_CLIENT = "to_client"


class Method(str, Enum):
    """How the detection was made."""

    ML_MODEL = "ml_model"


class ExplanationStatus(str, Enum):
    """Whether ``ml.explanation`` is present, and why not (a closed set: it is a metric label)."""

    OK = "ok"
    BUDGET = "skipped_budget"
    QUEUE_FULL = "skipped_queue_full"
    DEADLINE = "skipped_deadline"
    NO_TENSOR = "unavailable_no_tensor"
    MODEL_MISMATCH = "unavailable_model_mismatch"
    DISABLED = "disabled"
    ERROR = "error"


@dataclass(frozen=True)
class Contribution:
    """One feature of an explanation: its raw value in the newest flow and its LIME weight on the score."""

    feature: str
    value: float
    weight: float

    def to_json(self) -> dict[str, Any]:
        return {"feature": self.feature, "value": _num(self.value), "weight": round(self.weight, 6)}


def eve_timestamp(ms: int) -> str:
    """Suricata's timestamp format: ISO 8601, microseconds, UTC offset ``+0000``.

    >>> eve_timestamp(1499428365123)
    '2017-07-07T11:52:45.123000+0000'
    """
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+0000")


def _num(v: float) -> float | int:
    return int(v) if float(v).is_integer() and abs(v) < 2**53 else round(float(v), 6)


class AlertLine(Protocol):
    """What a sink reads of an alert line: the per-window :class:`Alert` and the episode's line both fit."""

    @property
    def id(self) -> str: ...
    @property
    def severity(self) -> Severity: ...
    @property
    def window_id(self) -> str: ...
    @property
    def flow(self) -> FlowMeta: ...
    @property
    def signature(self) -> Any: ...
    def to_json(self) -> str: ...


@dataclass(frozen=True)
class Alert:
    """One ML alert (validated on construction; raises :class:`InvalidAlert`).

    Parameters
    ----------
    flow
        The newest flow of the window (5-tuple, ids, times), copied from the verdict.
    signature
        The alerted class's stable signature (sid, category, severity).
    model, model_version
        The model card's name and version, as the verdict says.
    score, threshold
        The attack score (1 - P(benign)) and the threshold it crossed.
    probabilities
        ``(class, probability)`` pairs in the card's order.
    window_id, key, window_len, window_flows
        The window's stream id (the idempotency key), its key, T and how many rows hold real flows.
    flow_ids
        The flows that caused the alert (the window's newest flow; older flows are not carried).
    explanation, explanation_status
        Top-k :class:`Contribution` s when ``explanation_status`` is OK, else None.
    id, created_ms
        A uuid4 and the wall-clock time the alert was built.

    Example
    -------
    >>> from tapwatch.alerting.signatures import signature_for
    >>> from tapwatch.features.schema import ExpiryReason
    >>> meta = FlowMeta(7, "1:x", "10.0.0.1", 40000, "10.0.0.2", 80, 6, 1000, 2000, 4, 300,
    ...                 ExpiryReason.TCP_FIN, 2100, "s1")
    >>> a = Alert(flow=meta, signature=signature_for("hybrid", "PortScan"), model="hybrid", model_version="1",
    ...           score=0.9, threshold=0.5, probabilities=(("BENIGN", 0.1), ("PortScan", 0.9)),
    ...           window_id="1-0", key="10.0.0.1", window_len=10, window_flows=3, flow_ids=(7,))
    >>> a.to_eve()["alert"]["signature_id"], a.to_eve()["proto"], a.severity
    (9101006, 'TCP', <Severity.LOW: 3>)
    """

    flow: FlowMeta
    signature: Signature
    model: str
    model_version: str
    score: float
    threshold: float
    probabilities: tuple[tuple[str, float], ...]
    window_id: str
    key: str
    window_len: int
    window_flows: int
    flow_ids: tuple[int, ...]
    explanation: tuple[Contribution, ...] | None = None
    explanation_status: ExplanationStatus = ExplanationStatus.DISABLED
    direction: Direction = Direction.TO_SERVER
    method: Method = Method.ML_MODEL
    action: Action = Action.ALLOWED
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def __post_init__(self) -> None:
        self._check_flow()
        for name, v in (("score", self.score), ("threshold", self.threshold)):
            if not (isinstance(v, int | float) and math.isfinite(v) and 0.0 <= v <= 1.0):
                raise InvalidAlert(name, f"{v!r} is not a probability in [0, 1]")
        if any(not (math.isfinite(p) and -1e-6 <= p <= 1 + 1e-6) for _, p in self.probabilities):
            raise InvalidAlert("probabilities", f"{self.probabilities!r} holds a value outside [0, 1]")
        for name, enum in (
            ("explanation_status", ExplanationStatus),
            ("direction", Direction),
            ("method", Method),
            ("action", Action),
        ):
            if not isinstance(getattr(self, name), enum):
                raise InvalidAlert(name, f"{getattr(self, name)!r} is not a {enum.__name__}")
        if (self.explanation is not None) != (self.explanation_status is ExplanationStatus.OK):
            raise InvalidAlert("explanation", f"present only when the status is ok ({self.explanation_status.value})")
        if not self.flow_ids or self.flow.flow_id not in self.flow_ids:
            raise InvalidAlert("flow_ids", f"{self.flow_ids!r} must name the flow {self.flow.flow_id}")
        if not 0 <= self.window_flows <= self.window_len:
            raise InvalidAlert("window_flows", f"{self.window_flows} is outside 0..{self.window_len}")
        if not self.window_id or not self.model:
            raise InvalidAlert("window_id" if not self.window_id else "model", "is empty")
        try:
            uuid.UUID(self.id)
        except ValueError as err:
            raise InvalidAlert("id", f"{self.id!r} is not a uuid") from err

    def _check_flow(self) -> None:
        f = self.flow
        for name, ip in (("src_ip", f.src_ip), ("dst_ip", f.dst_ip)):
            try:
                ipaddress.ip_address(ip)
            except ValueError as err:
                raise InvalidAlert(name, str(err)) from err
        for name, port in (("src_port", f.src_port), ("dst_port", f.dst_port)):
            if not 0 <= port <= 65535:
                raise InvalidAlert(name, f"{port} is outside 0..65535")
        if not 0 <= f.protocol <= 255:
            raise InvalidAlert("protocol", f"{f.protocol} is outside 0..255")
        if not isinstance(self.signature.severity, Severity) or not isinstance(self.signature.category, Category):
            raise InvalidAlert("signature", "severity and category must be enums")

    @property
    def severity(self) -> Severity:
        return self.signature.severity

    @property
    def class_name(self) -> str:
        return self.signature.class_name

    def to_eve(self) -> dict[str, Any]:
        """The EVE object, keys in Suricata's order; ``docs/alerts.md`` maps each to ECS."""
        f, s = self.flow, self.signature
        return {
            "timestamp": eve_timestamp(f.last_seen_ms), "flow_id": f.flow_id, "event_type": "alert",
            "src_ip": f.src_ip, "src_port": f.src_port, "dest_ip": f.dst_ip, "dest_port": f.dst_port,
            "proto": PROTO_NAMES.get(f.protocol, str(f.protocol)), "community_id": f.community_id,
            "direction": self.direction.value,
            "alert": {"action": self.action.value, "gid": s.gid, "signature_id": s.sid, "rev": s.rev,
                      "signature": s.msg, "category": s.category.description, "severity": int(s.severity)},
            "ml": self._ml(),
            "flow": {"start": eve_timestamp(f.first_seen_ms), "end": eve_timestamp(f.last_seen_ms),
                     "pkts": f.packets, "bytes": f.bytes, "reason": f.expiry.value},
            "host": f.sensor,
        }  # fmt: skip

    def _ml(self) -> dict[str, Any]:
        ml: dict[str, Any] = {
            "model": self.model, "model_version": self.model_version, "score": round(self.score, 6),
            "threshold": round(self.threshold, 6), "class": self.signature.class_name,
            "probabilities": {c: round(p, 6) for c, p in self.probabilities},
            "window_id": self.window_id, "window_key": self.key, "window_len": self.window_len,
            "window_flows": self.window_flows, "flow_ids": list(self.flow_ids),
            "explanation_status": self.explanation_status.value, "method": self.method.value, "alert_id": self.id,
        }  # fmt: skip
        if self.explanation is not None:
            ml["explanation"] = [c.to_json() for c in self.explanation]
        return ml

    def to_json(self) -> str:
        """One compact JSON line (no newline)."""
        return json.dumps(self.to_eve(), separators=(",", ":"), ensure_ascii=False)


def from_verdict(
    verdict: Verdict,
    signature: Signature,
    explanation: tuple[Contribution, ...] | None,
    status: ExplanationStatus,
    window_len: int | None = None,
) -> Alert:
    """The alert for ``verdict`` (``window_len`` when the verdict carries no tensor: the card's T)."""
    rows = verdict.tensor.shape[0] if verdict.tensor is not None else (window_len or verdict.valid_rows or 1)
    if len(verdict.class_names) != len(verdict.probabilities):
        raise InvalidAlert("probabilities", f"{len(verdict.probabilities)} for {len(verdict.class_names)} classes")
    return Alert(
        flow=verdict.flow,
        signature=signature,
        model=verdict.model,
        model_version=verdict.model_version,
        score=min(max(float(verdict.score), 0.0), 1.0),
        threshold=min(max(float(verdict.threshold), 0.0), 1.0),
        probabilities=tuple(zip(verdict.class_names, (float(p) for p in verdict.probabilities), strict=True)),
        window_id=verdict.window_id,
        key=verdict.key,
        window_len=int(rows),
        window_flows=min(int(verdict.valid_rows), int(rows)),
        flow_ids=(verdict.flow.flow_id,),
        explanation=explanation,
        explanation_status=status,
    )


def alerted_class(verdict: Verdict, benign: str | None = None) -> str:
    """The class an alert is about: the predicted one unless benign, else the most probable non-benign one.

    A multi-class verdict can cross the score threshold (1 - P(benign)) while benign is still the single most
    probable class; the alert then names the most probable attack class.
    """

    def benign_name(c: str) -> bool:
        return c == benign or (benign is None and is_benign(c))

    if not benign_name(verdict.predicted):
        return verdict.predicted
    attacks = [(p, c) for c, p in zip(verdict.class_names, verdict.probabilities, strict=False) if not benign_name(c)]
    return max(attacks)[1] if attacks else verdict.predicted

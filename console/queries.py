"""What the inbox, the episode page and the API read: filtered episode lists and one episode's parts."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from tapwatch.console.ingest import epoch_ms
from tapwatch.console.store import Episode, Triage

PAGE = 100
FILTERS = ("family", "host", "sensor", "state", "since", "until")


@dataclass(frozen=True)
class EpisodeFilter:
    """The inbox's filters, as they stand in the URL's query string."""

    triage: Triage = Triage.INBOX
    family: str = ""
    host: str = ""
    sensor: str = ""
    state: str = ""
    since: str = ""
    until: str = ""
    page: int = 0

    @classmethod
    def of(cls, triage: Triage, args: Mapping[str, str]) -> EpisodeFilter:
        values = {k: str(args.get(k, "")).strip()[:128] for k in FILTERS}
        try:
            page = max(0, int(args.get("page", 0) or 0))
        except ValueError:
            page = 0
        return cls(triage, page=page, **values)

    def query(self) -> Select[Any]:
        q = select(Episode).where(Episode.triage == self.triage)
        if self.family:
            q = q.where(Episode.family == self.family)
        if self.host:  # the episode's host, or its representative flow's source or destination
            q = q.where((Episode.host == self.host) | (Episode.src_ip == self.host) | (Episode.dest_ip == self.host))
        if self.sensor:
            q = q.where(Episode.sensor == self.sensor)
        if self.state:
            q = q.where(Episode.state == self.state)
        for text, column, op in ((self.since, Episode.last_ms, "ge"), (self.until, Episode.first_ms, "le")):
            if text:
                try:
                    ms = epoch_ms(text if "T" in text or "+" in text else text + "T00:00:00+00:00")
                except ValueError:
                    continue
                q = q.where(column >= ms if op == "ge" else column <= ms)
        return q

    def args(self, **change: Any) -> dict[str, Any]:
        """The query-string arguments of this filter (for links that keep it)."""
        out = {k: getattr(self, k) for k in FILTERS if getattr(self, k)}
        out.update({k: v for k, v in change.items() if v not in ("", None)})
        return out


def episodes(db: Session, f: EpisodeFilter, limit: int = PAGE) -> tuple[list[Episode], int]:
    """One page of episodes under ``f``, newest activity first, and how many there are in all."""
    q = f.query()
    total = db.scalar(select(func.count()).select_from(q.subquery())) or 0
    rows = db.scalars(q.order_by(Episode.last_ms.desc(), Episode.id).offset(f.page * limit).limit(limit)).all()
    return list(rows), int(total)


def counts(db: Session) -> dict[str, int]:
    """Episodes per triage queue (the navigation's badges)."""
    rows = db.execute(select(Episode.triage, func.count()).group_by(Episode.triage)).all()
    found = {t.value: int(n) for t, n in rows}
    return {t.value: found.get(t.value, 0) for t in Triage}


def families(db: Session) -> list[str]:
    return [f for (f,) in db.execute(select(Episode.family).distinct().order_by(Episode.family)).all()]


def as_json(e: Episode) -> dict[str, Any]:
    """An episode as the API returns it."""
    return {
        "id": e.id, "sensor": e.sensor, "family": e.family, "signature": e.signature, "signature_id": e.signature_id,
        "severity": e.severity, "host": e.host, "role": e.role, "src_ip": e.src_ip, "dest_ip": e.dest_ip,
        "state": e.state, "first_ms": e.first_ms, "last_ms": e.last_ms, "flows": e.flows, "lines": e.lines,
        "max_score": e.max_score, "summary": e.summary, "triage": e.triage.value,
        "verdict": e.verdict.value if e.verdict else None, "job_id": e.job_id,
    }  # fmt: skip

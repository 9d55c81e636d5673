"""Triage: what an analyst does to episodes (archive, escalate, back to the inbox, a verdict, a comment), audited."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.console import accounts
from tapwatch.console.store import Comment, Episode, Triage, Verdict
from tapwatch.features.errors import BadInputError

MAX_COMMENT = 4000
MAX_BULK = 1000


class Action(str, enum.Enum):
    ARCHIVE = "archive"
    ESCALATE = "escalate"
    INBOX = "inbox"
    """Back to the inbox (un-archive, de-escalate)."""

    @property
    def triage(self) -> Triage:
        return {Action.ARCHIVE: Triage.ARCHIVED, Action.ESCALATE: Triage.ESCALATED, Action.INBOX: Triage.INBOX}[self]


def parse_action(text: str) -> Action:
    try:
        return Action(text)
    except ValueError:
        raise BadInputError("action", f"{text!r} is not one of {', '.join(a.value for a in Action)}") from None


def triage(db: Session, ids: Iterable[str], action: Action, user: str, address: str) -> int:
    """Move the episodes ``ids`` to the action's queue; return how many changed."""
    wanted = list(dict.fromkeys(ids))[:MAX_BULK]
    found = db.scalars(select(Episode).where(Episode.id.in_(wanted))).all() if wanted else []
    changed = [e for e in found if e.triage is not action.triage]
    for e in changed:
        e.triage = action.triage
    if changed:
        accounts.audit(db, user, address, action.value, ", ".join(e.id for e in changed))
    db.commit()
    return len(changed)


def set_verdict(db: Session, episode: Episode, verdict: str, user: str, address: str) -> None:
    """The analyst's verdict (``tp``, ``fp``, ``unsure``, or empty to clear it)."""
    if verdict and verdict not in {v.value for v in Verdict}:
        raise BadInputError("verdict", f"{verdict!r} is not one of tp, fp, unsure")
    episode.verdict = Verdict(verdict) if verdict else None
    accounts.audit(db, user, address, "verdict", f"{episode.id}: {verdict or 'cleared'}")
    db.commit()


def comment(db: Session, episode: Episode, text: str, user: str, address: str) -> Comment:
    text = text.strip()
    if not text:
        raise BadInputError("comment", "is empty")
    if len(text) > MAX_COMMENT:
        raise BadInputError("comment", f"is longer than {MAX_COMMENT} characters")
    c = Comment(episode_id=episode.id, user=user, text=text)
    db.add(c)
    accounts.audit(db, user, address, "comment", episode.id)
    db.commit()
    return c

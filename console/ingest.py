"""EVE alert lines (the alerter's, ``detect``'s, an upload's) into the console's episodes.

Each line updates its episode to what the line says (the newest line wins; an older line arriving late adds
itself to the episode's lines but does not roll it back) and is kept whole. A line that is not an episode
line is a :class:`LineError` with the reason; the caller counts and logs it, nothing else is written for it.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.console.store import AlertLine, Episode
from tapwatch.features.errors import TapwatchError


class LineError(TapwatchError):
    """An alert line the console cannot store; ``reason`` is short and from a closed set."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


def epoch_ms(text: str) -> int:
    """Milliseconds of an EVE or ISO 8601 time (``+0000``, ``+00:00`` or ``Z``)."""
    t = text.strip().replace("Z", "+00:00")
    if len(t) > 5 and t[-5] in "+-" and t[-3] != ":":
        t = t[:-2] + ":" + t[-2:]
    return int(datetime.fromisoformat(t).timestamp() * 1000)


def parse(raw: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """The line as a dict, checked for what the console reads; :class:`LineError` otherwise."""
    if isinstance(raw, dict):
        line = raw
    else:
        try:
            line = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as err:
            raise LineError("json", str(err)[:200]) from err
    if not isinstance(line, dict) or line.get("event_type") != "alert":
        raise LineError("not_alert", "not an EVE alert line")
    ep, alert = line.get("episode"), line.get("alert")
    if not isinstance(ep, dict) or not isinstance(alert, dict) or not isinstance(ep.get("id"), str):
        raise LineError("not_episode", "an alert line without an episode (written with --alert-mode flows?)")
    try:
        epoch_ms(str(line["timestamp"])), epoch_ms(str(ep["first_seen"])), epoch_ms(str(ep["last_seen"]))
        int(alert["signature_id"]), int(alert["severity"])
    except (KeyError, ValueError, TypeError) as err:
        raise LineError("fields", f"missing or malformed field {err}") from err
    return line


def ingest(db: Session, raw: str | bytes | dict[str, Any], job_id: int | None = None) -> Episode | None:
    """Store one alert line (the caller commits) and return its episode; :class:`LineError` for a line that is not
    one. A line whose ``ml.alert_id`` is stored already changes nothing and returns None (delivered twice)."""
    line = parse(raw)
    ep, alert, ml = line["episode"], line["alert"], line.get("ml") or {}
    at = epoch_ms(line["timestamp"])
    alert_id = str(ml["alert_id"])[:64] if ml.get("alert_id") else None
    seen = alert_id is not None and db.scalar(select(AlertLine.id).where(AlertLine.alert_id == alert_id))
    if seen:
        return None
    episode = db.get(Episode, ep["id"])
    if episode is None:
        episode = Episode(id=ep["id"][:64], job_id=job_id, lines=0, first_ms=epoch_ms(ep["first_seen"]), last_ms=0)
        db.add(episode)
    episode.lines = (episode.lines or 0) + 1
    db.add(AlertLine(episode_id=episode.id, alert_id=alert_id, at_ms=at, state=str(ep.get("state", "")), line=line))
    if at < (episode.last_ms or 0):
        return episode  # a late line: kept, but the episode already says more
    episode.sensor = str(line.get("host") or "")[:128]
    episode.family = str(ml.get("family") or alert.get("category", ""))[:32]
    episode.signature, episode.signature_id = str(alert.get("signature", ""))[:256], int(alert["signature_id"])
    episode.severity = int(alert["severity"])
    episode.host, episode.role = str(ep.get("host", ""))[:64], str(ep.get("key", ""))[:16]
    episode.src_ip, episode.dest_ip = str(line.get("src_ip", ""))[:64], str(line.get("dest_ip", ""))[:64]
    episode.state = str(ep.get("state", ""))[:16]
    episode.first_ms = min(episode.first_ms, epoch_ms(ep["first_seen"]))
    episode.last_ms = max(at, epoch_ms(ep["last_seen"]))
    episode.flows = int(ep.get("flows") or 0)
    episode.max_score = float(ep.get("max_score") or ml.get("score") or 0.0)
    episode.summary = str(ml.get("summary") or "")
    episode.detail = {"episode": ep, "ml": ml, "flow": {k: line.get(k) for k in (
        "flow_id", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "community_id")}}  # fmt: skip
    return episode

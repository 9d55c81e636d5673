"""Hosts (Slips' view): each host with its score over time, its one-hour time windows, and in a window its flows,
verdicts and episodes. The score of a window is the highest score of the host's episodes active in it."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from flask import Blueprint, Flask, abort, render_template, request
from sqlalchemy import func, or_, select

from tapwatch.console import charts, queries
from tapwatch.console.guard import requires
from tapwatch.console.store import Episode, JobFlow, Role
from tapwatch.console.web import db

WINDOW_MS = 3_600_000
"""Slips' time window: an hour."""
HOSTS_PAGE = 200
SPARK = 24


def _windows(episodes: list[Episode]) -> dict[int, list[Episode]]:
    """Window start -> the episodes active in it (from first to last seen)."""
    out: dict[int, list[Episode]] = defaultdict(list)
    for e in episodes:
        start = e.first_ms // WINDOW_MS * WINDOW_MS
        while start <= e.last_ms:
            out[start].append(e)
            start += WINDOW_MS
            if len(out) > 24 * 366:  # a corrupt time cannot make the loop run for ever
                break
    return out


@requires(Role.VIEWER)
def hosts() -> Any:
    rows = db().execute(
        select(Episode.host, func.count(), func.max(Episode.max_score), func.max(Episode.last_ms))
        .group_by(Episode.host).order_by(func.max(Episode.last_ms).desc()).limit(HOSTS_PAGE)
    ).all()  # fmt: skip
    names = [h for h, *_ in rows]
    episodes = db().scalars(select(Episode).where(Episode.host.in_(names))).all() if names else []
    by_host: dict[str, list[Episode]] = defaultdict(list)
    for e in episodes:
        by_host[e.host].append(e)
    table = []
    for host, n, best, last in rows:
        windows = _windows(by_host[host])
        scores = [max(e.max_score for e in windows[w]) for w in sorted(windows)][-SPARK:]
        families = sorted({e.family for e in by_host[host]})
        table.append({"host": host, "episodes": n, "max_score": best, "last_ms": last, "families": families,
                      "spark": charts.spark(scores), "windows": len(windows)})  # fmt: skip
    return render_template("hosts.html", hosts=table)


@requires(Role.VIEWER)
def host(address: str) -> Any:
    about = or_(Episode.host == address, Episode.src_ip == address, Episode.dest_ip == address)
    episodes = db().scalars(select(Episode).where(about).order_by(Episode.first_ms)).all()
    flows_seen = db().scalar(select(func.count()).select_from(JobFlow).where(
        or_(JobFlow.src_ip == address, JobFlow.dest_ip == address))) or 0  # fmt: skip
    if not episodes and not flows_seen:
        abort(404)
    windows = _windows(list(episodes))
    bucket = JobFlow.at_ms // WINDOW_MS
    mine = or_(JobFlow.src_ip == address, JobFlow.dest_ip == address)
    counted = {int(b) * WINDOW_MS: (int(n), float(top or 0.0)) for b, n, top in db().execute(
        select(bucket, func.count(), func.max(JobFlow.score)).where(mine).group_by(bucket))}  # fmt: skip
    chosen = request.args.get("window", type=int)
    flows: list[JobFlow] = []
    if chosen is not None:
        flows = list(db().scalars(select(JobFlow).where(
            or_(JobFlow.src_ip == address, JobFlow.dest_ip == address), JobFlow.at_ms >= chosen,
            JobFlow.at_ms < chosen + WINDOW_MS).order_by(JobFlow.at_ms).limit(1000)))  # fmt: skip
    rows = [{"start": w, "episodes": windows.get(w, []), "flows": counted.get(w, (0, 0.0))[0],
             "max_score": max([e.max_score for e in windows.get(w, [])] or [0.0])}
            for w in sorted(set(windows) | set(counted), reverse=True)]  # fmt: skip
    return render_template("host.html", address=address, windows=rows, chosen=chosen, flows=flows,
                           episodes=[queries.as_json(e) for e in episodes], flows_seen=flows_seen,
                           window_ms=WINDOW_MS)  # fmt: skip


def register(app: Flask) -> None:
    bp = Blueprint("hosts", __name__)
    bp.add_url_rule("/hosts", "hosts", hosts)
    bp.add_url_rule("/hosts/<address>", "host", host)
    app.register_blueprint(bp)

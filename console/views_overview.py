"""The overview: alert lines over time by family, the most alerting sources and targets, verdicts by class, and the
attack mix of the labelled CSVs uploaded (the paper's view of the attacks in a dataset)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, render_template, request
from sqlalchemy import func, select

from tapwatch.console import charts
from tapwatch.console.guard import requires
from tapwatch.console.store import AlertLine, Episode, JobFlow, Role
from tapwatch.console.web import db

SPANS = {"day": (86_400_000, 3_600_000, "%H:00"), "week": (7 * 86_400_000, 6 * 3_600_000, "%m-%d %H:00"),
         "month": (30 * 86_400_000, 86_400_000, "%m-%d")}  # fmt: skip
TOP = 10


@requires(Role.VIEWER)
def overview() -> Any:
    span = request.args.get("span", "week") if request.args.get("span") in SPANS else "week"
    length, step, fmt = SPANS[span]
    newest = db().scalar(select(func.max(AlertLine.at_ms))) or 0
    start = (newest - length) // step * step + step
    counts: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    q = select(AlertLine.at_ms, Episode.family).join(Episode).where(AlertLine.at_ms >= start)
    for at, family in db().execute(q):
        counts[(at - start) // step][family] += 1
    buckets = [(datetime.fromtimestamp((start + i * step) / 1000, tz=UTC).strftime(fmt), dict(counts.get(i, {})))
               for i in range(length // step)] if newest else []  # fmt: skip
    sources = db().execute(select(Episode.host, func.count()).where(Episode.role == "source").group_by(Episode.host)
                           .order_by(func.count().desc()).limit(TOP)).all()  # fmt: skip
    targets = db().execute(select(Episode.dest_ip, func.count()).group_by(Episode.dest_ip)
                           .order_by(func.count().desc()).limit(TOP)).all()  # fmt: skip
    classes = db().execute(select(JobFlow.predicted, func.count()).group_by(JobFlow.predicted)
                           .order_by(func.count().desc())).all()  # fmt: skip
    labels = db().execute(select(JobFlow.label, func.count()).where(JobFlow.label.is_not(None))
                          .group_by(JobFlow.label).order_by(func.count().desc())).all()  # fmt: skip
    families = db().execute(select(Episode.family, func.count()).group_by(Episode.family)
                            .order_by(func.count().desc())).all()  # fmt: skip
    return render_template("overview.html", chart=charts.stacked(buckets) if buckets else None, span=span,
                           spans=list(SPANS), sources=sources, targets=targets, classes=classes, labels=labels,
                           families=families, bar=_bar)  # fmt: skip


def _bar(n: int, rows: list[Any], width: int = 300) -> int:
    top = max((r[1] for r in rows), default=0) or 1
    return max(1, round(n / top * width))


def register(app: Flask) -> None:
    bp = Blueprint("overview", __name__)
    bp.add_url_rule("/overview", "overview", overview)
    app.register_blueprint(bp)

"""The inbox (and the escalated and archived queues) and the episode page."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, abort, current_app, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from tapwatch.console import actions, queries
from tapwatch.console.charts import timeline
from tapwatch.console.explain import bars
from tapwatch.console.guard import requires
from tapwatch.console.store import COVER_SLACK_MS, Comment, Episode, JobFlow, Role, Triage
from tapwatch.console.web import address, db
from tapwatch.features.errors import BadInputError

FLOWS_SHOWN = 500
QUEUES = {"inbox": Triage.INBOX, "escalated": Triage.ESCALATED, "archived": Triage.ARCHIVED}


@requires(Role.VIEWER)
def queue(name: str = "inbox") -> Any:
    f = queries.EpisodeFilter.of(QUEUES[name], request.args)
    rows, total = queries.episodes(db(), f)
    return render_template(
        "inbox.html", queue=name, rows=rows, total=total, f=f, counts=queries.counts(db()),
        families=queries.families(db()), page_size=queries.PAGE,
    )  # fmt: skip


@requires(Role.ANALYST)
def triage() -> Any:
    try:
        action = actions.parse_action(request.form.get("action", ""))
    except BadInputError as err:
        return render_template("error.html", title="Unknown action", message=str(err)), 400
    ids = request.form.getlist("id")
    actions.triage(db(), ids, action, current_user.name, address())
    back = request.form.get("back", "")
    return redirect(back if back.startswith("/") and not back.startswith("//") else url_for("inbox.inbox"))


def _episode(episode_id: str) -> Episode:
    found = db().get(Episode, episode_id)
    if found is None:
        abort(404)
    return found


@requires(Role.VIEWER)
def episode(episode_id: str) -> Any:
    e = _episode(episode_id)
    comments = db().scalars(select(Comment).where(Comment.episode_id == e.id).order_by(Comment.at_ms)).all()
    ml = e.detail.get("ml", {}) if isinstance(e.detail, dict) else {}
    medians = current_app.config["TAPWATCH_MEDIANS"]
    flows = _flows(e)
    return render_template("episode.html", e=e, ep=e.detail.get("episode", {}), ml=ml, bars=bars(ml, medians),
                           comments=comments, lines=e.alert_lines, flows=flows,
                           timeline=timeline(e, e.alert_lines, flows))  # fmt: skip


def _flows(e: Episode) -> list[JobFlow]:
    """An uploaded episode's flows with the model's verdicts: its host's (as source, or as a flood's victim) within
    its time, give or take a minute (live episodes keep their alert lines, not every flow)."""
    if e.job_id is None:
        return []
    host = JobFlow.dest_ip if e.role == "victim" else JobFlow.src_ip
    within = JobFlow.at_ms.between(e.first_ms - COVER_SLACK_MS, e.last_ms + COVER_SLACK_MS)
    q = select(JobFlow).where(JobFlow.job_id == e.job_id, host == e.host, within)
    return list(db().scalars(q.order_by(JobFlow.at_ms).limit(FLOWS_SHOWN)))


@requires(Role.ANALYST)
def verdict(episode_id: str) -> Any:
    e = _episode(episode_id)
    try:
        actions.set_verdict(db(), e, request.form.get("verdict", ""), current_user.name, address())
    except BadInputError as err:
        return render_template("error.html", title="Unknown verdict", message=str(err)), 400
    return redirect(url_for("inbox.episode", episode_id=e.id))


@requires(Role.ANALYST)
def comment(episode_id: str) -> Any:
    e = _episode(episode_id)
    try:
        actions.comment(db(), e, request.form.get("text", ""), current_user.name, address())
    except BadInputError as err:
        return render_template("error.html", title="Comment refused", message=str(err)), 400
    return redirect(url_for("inbox.episode", episode_id=e.id) + "#comments")


def register(app: Flask) -> None:
    bp = Blueprint("inbox", __name__)
    bp.add_url_rule("/", "root", lambda: redirect(url_for("inbox.inbox")))
    for name in QUEUES:
        bp.add_url_rule(f"/{name}", name, queue, defaults={"name": name})
    bp.add_url_rule("/triage", "triage", triage, methods=["POST"])
    bp.add_url_rule("/episodes/<episode_id>", "episode", episode)
    bp.add_url_rule("/episodes/<episode_id>/verdict", "verdict", verdict, methods=["POST"])
    bp.add_url_rule("/episodes/<episode_id>/comment", "comment", comment, methods=["POST"])
    app.register_blueprint(bp)

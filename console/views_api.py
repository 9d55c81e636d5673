"""The JSON API behind the pages (``docs/console.md``): a session or an API token (``Authorization: Bearer``).

A request authenticated by a token needs no CSRF token (no browser sends it by itself); one authenticated by the
session cookie does, on every POST, like the forms.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, g, jsonify, request
from flask_login import current_user
from flask_wtf.csrf import CSRFProtect

from tapwatch.console import actions, queries
from tapwatch.console.guard import requires
from tapwatch.console.store import Episode, Role, Triage
from tapwatch.console.web import address, db
from tapwatch.features.errors import BadInputError


@requires(Role.VIEWER)
def me() -> Any:
    return jsonify(name=current_user.name, role=current_user.role.value)


@requires(Role.VIEWER)
def list_episodes() -> Any:
    try:
        f = queries.EpisodeFilter.of(Triage(request.args.get("triage", "inbox")), request.args)
    except ValueError:
        return jsonify(error="triage must be inbox, escalated or archived"), 400
    rows, total = queries.episodes(db(), f)
    return jsonify(total=total, page=f.page, page_size=queries.PAGE, episodes=[queries.as_json(e) for e in rows])


@requires(Role.VIEWER)
def get_episode(episode_id: str) -> Any:
    e = db().get(Episode, episode_id)
    if e is None:
        return jsonify(error="no such episode"), 404
    return jsonify(episode=queries.as_json(e), detail=e.detail, lines=[x.line for x in e.alert_lines])


@requires(Role.ANALYST)
def post_triage() -> Any:
    """``{"ids": [...], "action": "archive|escalate|inbox"}`` and/or ``{"id": ..., "verdict": "tp|fp|unsure"}``."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="the body must be a JSON object"), 400
    try:
        changed = 0
        if "action" in body:
            ids = body.get("ids") or []
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise BadInputError("ids", "must be a list of episode ids")
            changed = actions.triage(db(), ids, actions.parse_action(str(body["action"])), current_user.name,
                                     address())  # fmt: skip
        if "verdict" in body:
            e = db().get(Episode, str(body.get("id", "")))
            if e is None:
                return jsonify(error="no such episode"), 404
            actions.set_verdict(db(), e, str(body["verdict"] or ""), current_user.name, address())
    except BadInputError as err:
        return jsonify(error=str(err)), 400
    return jsonify(changed=changed)


def register(app: Flask, csrf: CSRFProtect) -> None:
    bp = Blueprint("api", __name__, url_prefix="/api")

    @bp.before_request
    def _csrf_for_sessions() -> None:
        # Token requests are exempt below; a request riding on the session cookie is checked like a form. Reading
        # current_user loads the user: from the session first, then from a token (which sets g.by_token).
        if request.method == "POST" and current_user.is_authenticated and not g.get("by_token"):
            csrf.protect()

    bp.add_url_rule("/me", "me", me)
    bp.add_url_rule("/episodes", "episodes", list_episodes)
    bp.add_url_rule("/episodes/<episode_id>", "episode", get_episode)
    bp.add_url_rule("/triage", "triage", post_triage, methods=["POST"])
    csrf.exempt(bp)
    app.register_blueprint(bp)

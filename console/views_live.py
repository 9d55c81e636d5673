"""The live page: new alert lines appear without a reload (server-sent events).

``/live/events`` streams every alert line stored after the client's last one (``Last-Event-ID`` on a reconnect,
``after`` on the first), from whatever fills the database: the alert stream (``serve --redis``), uploads, ingest.
A stream ends after ``SSE_SECONDS`` and the browser reconnects, so no thread of the server is held for ever; at most
``MAX_STREAMS`` stream at once (each holds one of the server's threads), and one more is told to retry later.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

from flask import Blueprint, Flask, Response, current_app, render_template, request
from sqlalchemy import func, select

from tapwatch.console.guard import requires
from tapwatch.console.store import AlertLine, Episode, Role
from tapwatch.console.web import db

SSE_SECONDS = 300.0
MAX_STREAMS = 4
"""Streams at once: Waitress serves with 8 threads, and the pages need the rest."""
POLL_S = 1.0
RECENT = 50


def _row(line: AlertLine, e: Episode) -> dict[str, Any]:
    return {"id": line.id, "at_ms": line.at_ms, "state": line.state, "episode": e.id, "signature": e.signature,
            "host": e.host, "severity": e.severity, "flows": (line.line.get("episode") or {}).get("flows"),
            "sensor": e.sensor, "summary": e.summary}  # fmt: skip


@requires(Role.VIEWER)
def live() -> Any:
    rows = db().execute(select(AlertLine, Episode).join(Episode).order_by(AlertLine.id.desc()).limit(RECENT)).all()
    newest = db().scalar(select(func.max(AlertLine.id))) or 0
    return render_template("live.html", rows=[_row(a, e) for a, e in rows], newest=newest)


@requires(Role.VIEWER)
def events() -> Any:
    gate: threading.BoundedSemaphore = current_app.config["TAPWATCH_SSE_GATE"]
    if not gate.acquire(blocking=False):
        return Response("retry: 5000\n\n", 503, mimetype="text/event-stream")
    after = request.headers.get("Last-Event-ID", request.args.get("after", "0"))
    try:
        last = max(0, int(after))
    except ValueError:
        last = 0
    factory, seconds = current_app.config["TAPWATCH_FACTORY"], current_app.config["TAPWATCH_SSE_SECONDS"]

    def stream() -> Iterator[str]:
        nonlocal last
        try:
            end = time.monotonic() + seconds
            yield "retry: 2000\n\n"
            while time.monotonic() < end:
                with factory() as s:
                    found = s.execute(select(AlertLine, Episode).join(Episode).where(AlertLine.id > last)
                                      .order_by(AlertLine.id).limit(200)).all()  # fmt: skip
                for a, e in found:
                    last = a.id
                    yield f"id: {a.id}\nevent: alert\ndata: {json.dumps(_row(a, e))}\n\n"
                if not found:
                    yield ": idle\n\n"  # a comment: keeps proxies from closing an idle stream
                    time.sleep(POLL_S)
        finally:
            gate.release()

    return Response(stream(), mimetype="text/event-stream", headers={"X-Accel-Buffering": "no"})


def register(app: Flask) -> None:
    app.config.setdefault("TAPWATCH_SSE_SECONDS", SSE_SECONDS)
    app.config["TAPWATCH_SSE_GATE"] = threading.BoundedSemaphore(MAX_STREAMS)
    bp = Blueprint("live", __name__)
    bp.add_url_rule("/live", "live", live)
    bp.add_url_rule("/live/events", "events", events)
    app.register_blueprint(bp)

"""Uploads: the form and the job list, a job's progress and per-flow table, its CSV download, deleting it."""

from __future__ import annotations

import csv
import io
from typing import Any

from flask import Blueprint, Flask, Response, abort, current_app, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import asc, desc, func, select

from tapwatch.console import accounts, jobs
from tapwatch.console.guard import requires
from tapwatch.console.store import Job, JobFlow, Role
from tapwatch.console.web import address, db
from tapwatch.features.errors import BadInputError

SORTS = {"time": JobFlow.at_ms, "src": JobFlow.src_ip, "dst": JobFlow.dest_ip, "port": JobFlow.dest_port,
         "family": JobFlow.family, "class": JobFlow.predicted, "score": JobFlow.score}  # fmt: skip
PAGE = 200
FORMULA = ("=", "+", "-", "@", "\t", "\r")


def neutral(cell: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or tab, CR) gets a leading quote."""
    text = "" if cell is None else str(cell)
    return "'" + text if text.startswith(FORMULA) else text


def _job(job_id: int) -> Job:
    found = db().get(Job, job_id)
    if found is None:
        abort(404)
    return found


def _status(job: Job) -> dict[str, Any]:
    return {"id": job.id, "name": job.name, "kind": job.kind, "status": job.status, "progress": round(job.progress, 3),
            "size": job.size, "records": job.records, "flows": job.flows, "alerts": job.alerts, "error": job.error,
            "sensor": job.sensor, "created_ms": job.created_ms, "finished_ms": job.finished_ms}  # fmt: skip


@requires(Role.VIEWER)
def upload_page() -> Any:
    recent = db().scalars(select(Job).order_by(Job.id.desc()).limit(50)).all()
    settings = current_app.config["TAPWATCH_SETTINGS"]
    return render_template("upload.html", jobs=recent, limit_mb=settings.max_upload_mb)


@requires(Role.ANALYST)
def upload_post() -> Any:
    sent = request.files.get("file")
    if sent is None or not sent.filename:
        return render_template("error.html", title="Upload refused", message="upload: choose a file first"), 400
    settings, data = current_app.config["TAPWATCH_SETTINGS"], current_app.config["TAPWATCH_DATA"]
    try:
        job = jobs.submit(db(), settings, data, sent.stream, sent.filename, request.form.get("name", ""),
                          current_user.name, address())  # fmt: skip
    except BadInputError as err:
        status = 503 if "queue is full" in err.problem else 413 if "larger than" in err.problem else 400
        return render_template("error.html", title="Upload refused", message=str(err)), status
    runner = current_app.config.get("TAPWATCH_RUNNER")
    if runner is not None:
        runner.wake.set()
    return redirect(url_for("upload.job", job_id=job.id))


@requires(Role.VIEWER)
def job(job_id: int) -> Any:
    j = _job(job_id)
    sort = request.args.get("sort", "time") if request.args.get("sort") in SORTS else "time"
    order = desc if request.args.get("dir") == "desc" else asc
    family, host = request.args.get("family", "").strip(), request.args.get("host", "").strip()
    q = select(JobFlow).where(JobFlow.job_id == j.id)
    if family:
        q = q.where(JobFlow.family == family)
    if host:
        q = q.where((JobFlow.src_ip == host) | (JobFlow.dest_ip == host))
    total = db().scalar(select(func.count()).select_from(q.subquery())) or 0
    page = max(0, request.args.get("page", 0, type=int) or 0)
    rows = db().scalars(q.order_by(order(SORTS[sort]), JobFlow.id).offset(page * PAGE).limit(PAGE)).all()
    mix = db().execute(select(JobFlow.family, func.count()).where(JobFlow.job_id == j.id)
                       .group_by(JobFlow.family).order_by(func.count().desc())).all()  # fmt: skip
    labels = db().execute(select(JobFlow.label, func.count()).where(JobFlow.job_id == j.id, JobFlow.label.is_not(None))
                          .group_by(JobFlow.label).order_by(func.count().desc())).all()  # fmt: skip
    return render_template("job.html", j=j, rows=rows, total=total, page=page, page_size=PAGE, sort=sort,
                           dir="desc" if order is desc else "asc", family=family, host=host, mix=mix,
                           labels=labels)  # fmt: skip


@requires(Role.VIEWER)
def job_csv(job_id: int) -> Response:
    j = _job(job_id)
    out = io.StringIO()
    w = csv.writer(out)
    w.writerow(["time_ms", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "family", "predicted", "score",
                "label"])  # fmt: skip
    for f in db().scalars(select(JobFlow).where(JobFlow.job_id == j.id).order_by(JobFlow.at_ms, JobFlow.id)):
        w.writerow([neutral(x) for x in (f.at_ms, f.src_ip, f.src_port, f.dest_ip, f.dest_port, f.proto, f.family,
                                         f.predicted, f.score, f.label)])  # fmt: skip
    headers = {"Content-Disposition": f'attachment; filename="tapwatch-job-{j.id}-flows.csv"'}
    return Response(out.getvalue(), mimetype="text/csv", headers=headers)


@requires(Role.ANALYST)
def job_delete(job_id: int) -> Any:
    j = _job(job_id)
    if j.status in jobs.ACTIVE:
        message = "A queued or running job cannot be deleted."
        return render_template("error.html", title="Job busy", message=message), 409
    accounts.audit(db(), current_user.name, address(), "job_delete", f"job {j.id}: {j.name}")
    jobs.remove(db(), j)
    db().commit()
    return redirect(url_for("upload.upload_page"))


@requires(Role.VIEWER)
def job_api(job_id: int) -> Any:
    found = db().get(Job, job_id)
    if found is None:
        return jsonify(error="no such job"), 404
    return jsonify(_status(found))


def register(app: Flask) -> None:
    bp = Blueprint("upload", __name__)
    bp.add_url_rule("/upload", "upload_page", upload_page)
    bp.add_url_rule("/upload", "upload_post", upload_post, methods=["POST"])
    bp.add_url_rule("/jobs/<int:job_id>", "job", job)
    bp.add_url_rule("/jobs/<int:job_id>/flows.csv", "job_csv", job_csv)
    bp.add_url_rule("/jobs/<int:job_id>/delete", "job_delete", job_delete, methods=["POST"])
    bp.add_url_rule("/api/jobs/<int:job_id>", "job_api", job_api)
    app.register_blueprint(bp)

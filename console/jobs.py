"""Upload jobs: accept a file into the bounded queue, process it off the request thread, keep what it found.

A capture runs through ``tapwatch detect`` (the same extractor, model and episode logic as the live path) and a
flows CSV through ``tapwatch score``, each as a child process of the console: a crash of one job cannot take the
console with it, and its memory is returned when it ends. The job's episodes enter the inbox under the sensor name
``upload-<id>``; its flows (each window's newest flow with the model's verdict) fill the job's table.

At most ``max_jobs`` run at once and ``max_queued`` wait; a full queue refuses the upload with a message. A job
still marked running when the console starts again was cut off by the restart, and is queued again.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console import accounts
from tapwatch.console.ingest import LineError, epoch_ms, ingest
from tapwatch.console.settings import ConsoleSettings
from tapwatch.console.store import Episode, Job, JobFlow, now_ms
from tapwatch.console.uploads import Kind, check, refuse
from tapwatch.features.errors import BadInputError
from tapwatch.features.families import Family, family_of_class

log = logging.getLogger(__name__)
ACTIVE = ("queued", "running")
CHUNK = 1 << 20
INSERT_ROWS = 5000


def submit(db: Session, settings: ConsoleSettings, data: Path, stream: IO[bytes], filename: str, name: str,
           owner: str, address: str) -> Job:  # fmt: skip
    """Store an upload as a queued job; :class:`BadInputError` (nothing stored) for a full queue, a file over the
    limit, or content that is not a capture or flows CSV."""
    waiting = db.scalar(select(func.count()).select_from(Job).where(Job.status.in_(ACTIVE))) or 0
    if waiting >= settings.max_jobs + settings.max_queued:
        raise refuse(f"the upload queue is full ({waiting} uploads waiting or running); try again when one finishes")
    tmp = data / "jobs" / f"incoming-{uuid.uuid4().hex}"
    size = 0
    try:
        with tmp.open("xb") as out:
            while chunk := stream.read(CHUNK):
                size += len(chunk)
                if size > settings.max_upload_bytes:
                    raise refuse(f"larger than the limit of {settings.max_upload_mb} MB")
                out.write(chunk)
        if size == 0:
            raise refuse("the file is empty")
        found = check(tmp)
    except BadInputError as err:
        tmp.unlink(missing_ok=True)
        accounts.audit(db, owner, address, "upload", f"{filename}: {err.problem}", ok=False)
        db.commit()
        raise
    job = Job(name=(name.strip() or filename or "upload")[:128], owner=owner, kind=found.kind.value, size=size,
              path="", records=found.records, labelled=found.labelled,
              first_ms=None if found.first_s is None else int(found.first_s * 1000),
              last_ms=None if found.last_s is None else int(found.last_s * 1000))  # fmt: skip
    db.add(job)
    db.flush()
    folder = data / "jobs" / str(job.id)
    folder.mkdir(mode=0o700)
    target = folder / f"input.{found.kind.value}"
    tmp.rename(target)
    job.path = str(target)
    accounts.audit(db, owner, address, "upload", f"job {job.id}: {job.name} ({found.kind.value}, {size} bytes)")
    db.commit()
    return job


def remove(db: Session, job: Job) -> None:
    """Delete a job: its files, its flows and its episodes."""
    shutil.rmtree(Path(job.path).parent, ignore_errors=True) if job.path else None
    db.execute(delete(Episode).where(Episode.job_id == job.id))
    db.delete(job)


def purge(db: Session, retention_days: int, now: int | None = None) -> tuple[int, int]:
    """Delete jobs created, and episodes last seen, more than ``retention_days`` ago: (jobs, episodes)."""
    cut = (now or now_ms()) - retention_days * 86_400_000
    old = db.scalars(select(Job).where(Job.created_ms < cut, Job.status.not_in(ACTIVE))).all()
    for job in old:
        remove(db, job)
    gone = db.execute(delete(Episode).where(Episode.last_ms < cut, Episode.job_id.is_(None)))
    db.commit()
    return len(old), int(getattr(gone, "rowcount", 0) or 0)


class JobRunner:
    """Threads that run queued jobs (see the module docstring)."""

    def __init__(self, settings: ConsoleSettings, factory: sessionmaker[Session], poll_s: float = 1.0) -> None:
        self.settings = settings
        self.factory = factory
        self.poll_s = poll_s
        self.stop = threading.Event()
        self.wake = threading.Event()
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self.factory() as db:  # cut off by a restart: run them again
            db.execute(update(Job).where(Job.status == "running").values(status="queued", progress=0.0))
            db.commit()
        for i in range(self.settings.max_jobs):
            t = threading.Thread(target=self._loop, name=f"tapwatch-console-job-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        atexit.register(self.close)

    def close(self) -> None:
        """Stop taking jobs and end the children this runner started (by PID)."""
        self.stop.set()
        self.wake.set()
        for child in list(self._children.values()):
            if child.poll() is None:
                child.terminate()

    def _loop(self) -> None:
        while not self.stop.is_set():
            job_id = self._claim()
            if job_id is None:
                self.wake.wait(self.poll_s)
                self.wake.clear()
                continue
            try:
                self.run(job_id)
            except Exception:  # a bug in one job must not stop the queue: the job says so, the log has the trace
                log.exception("job %d failed", job_id)
                self._finish(job_id, "failed", "internal error while processing (see the console's log)")

    def _claim(self) -> int | None:
        with self.factory() as db:
            for job_id in db.scalars(select(Job.id).where(Job.status == "queued").order_by(Job.id).limit(4)):
                claimed = db.execute(update(Job).where(Job.id == job_id, Job.status == "queued")
                                     .values(status="running"))  # fmt: skip
                db.commit()
                if getattr(claimed, "rowcount", 0) == 1:
                    return int(job_id)
        return None

    def run(self, job_id: int) -> None:
        """Process one job to its end (done or failed)."""
        with self.factory() as db:
            job = db.get(Job, job_id)
            if job is None:
                return
            kind, src, folder, sensor = Kind(job.kind), Path(job.path), Path(job.path).parent, job.sensor
            scale = (job.first_ms, job.last_ms)
        if kind is Kind.CSV:
            args = ["score", str(src), "-o", str(folder / "scored.csv")]
        else:
            args = ["detect", str(src), "-o", str(folder / "alerts.jsonl"),
                    "--verdicts", str(folder / "verdicts.jsonl"), "--sensor", sensor]  # fmt: skip
        error = self._child(job_id, args, folder, scale)
        if error:
            self._finish(job_id, "failed", error)
            return
        with self.factory() as db:
            rows = _scored_rows(job_id, folder / "scored.csv") if kind is Kind.CSV else \
                _verdict_rows(job_id, folder / "verdicts.jsonl")  # fmt: skip
            flows = _insert(db, rows)
            alerts = 0 if kind is Kind.CSV else _store_alerts(db, job_id, folder / "alerts.jsonl")
            db.execute(update(Job).where(Job.id == job_id).values(flows=flows, alerts=alerts))
            db.commit()
        self._finish(job_id, "done", "")

    def _child(self, job_id: int, args: list[str], folder: Path, scale: tuple[int | None, int | None]) -> str:
        """Run ``tapwatch ARGS``; update the progress while it runs; the error a person reads, or ''."""
        cmd = [sys.executable, "-m", "tapwatch.app", *args]
        with (folder / "stderr.txt").open("wb") as err:
            child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, cwd=folder)
            self._children[job_id] = child
            try:
                while child.poll() is None:
                    if self.stop.wait(self.poll_s):
                        child.terminate()
                        child.wait(30)
                        return "the console stopped while the job ran; it runs again at the next start"
                    self._progress(job_id, folder / "verdicts.jsonl", scale)
            finally:
                self._children.pop(job_id, None)
        if child.returncode == 0:
            return ""
        lines = [x for x in (folder / "stderr.txt").read_text(errors="replace").splitlines() if x.strip()]
        said = next((x for x in reversed(lines) if x.startswith("tapwatch:")), lines[-1] if lines else "")
        return said.removeprefix("tapwatch: ").removeprefix("error: ") or f"exit status {child.returncode}"

    def _progress(self, job_id: int, verdicts: Path, scale: tuple[int | None, int | None]) -> None:
        first, last = scale
        if first is None or last is None or last <= first or not verdicts.exists():
            return
        newest = _last_time(verdicts)
        if newest is None:
            return
        share = min(0.99, max(0.0, (newest - first) / (last - first)))
        with self.factory() as db:
            db.execute(update(Job).where(Job.id == job_id, Job.progress < share).values(progress=share))
            db.commit()

    def _finish(self, job_id: int, status: str, error: str) -> None:
        with self.factory() as db:
            done = {"status": status, "error": error[:2000], "finished_ms": now_ms()}
            db.execute(update(Job).where(Job.id == job_id).values(**done, **({"progress": 1.0} if status == "done"
                                                                              else {})))  # fmt: skip
            db.commit()
        log.info("job %d %s%s", job_id, status, f": {error}" if error else "")


def _last_time(path: Path) -> int | None:
    """The timestamp of the last whole line of a verdicts file (read from its end)."""
    with path.open("rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - 8192))
        lines = fh.read().splitlines()
    for raw in reversed(lines):
        try:
            return epoch_ms(json.loads(raw)["timestamp"])
        except (ValueError, KeyError, TypeError):
            continue
    return None


def _family(cls: str) -> str:
    fam = family_of_class(cls) if cls else Family.BENIGN
    return fam.value if fam is not None else "unknown"


def _insert(db: Session, rows: Iterator[dict[str, Any]]) -> int:
    """Insert job flows in chunks of ``INSERT_ROWS``; return how many."""
    n, chunk = 0, []
    for row in rows:
        chunk.append(row)
        if len(chunk) >= INSERT_ROWS:
            db.execute(insert(JobFlow), chunk)
            n, chunk = n + len(chunk), []
    if chunk:
        db.execute(insert(JobFlow), chunk)
    return n + len(chunk)


def _verdict_rows(job_id: int, path: Path) -> Iterator[dict[str, Any]]:
    """``detect --verdicts``: each window's newest flow with the model's verdict (its family only as evidence)."""
    with path.open() as fh:
        for raw in fh:
            v = json.loads(raw)
            yield {"job_id": job_id, "at_ms": epoch_ms(v["timestamp"]), "src_ip": v["src_ip"],
                   "src_port": int(v["src_port"]), "dest_ip": v["dest_ip"], "dest_port": int(v["dest_port"]),
                   "proto": int(v["proto"]), "family": v["family"] if v["evidence"] else "benign",
                   "predicted": v["predicted"], "score": float(v["score"]), "label": None}  # fmt: skip


def _scored_rows(job_id: int, path: Path) -> Iterator[dict[str, Any]]:
    """``score``'s CSV: each input row with its predicted class and score (and the input's label, if any)."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as fh:
        for raw in csv.DictReader(fh):
            r = {k.strip(): v for k, v in raw.items() if k is not None}
            cls = r.get("predicted_class") or ""
            yield {"job_id": job_id, "at_ms": _csv_time(r.get("Timestamp", "")),
                   "src_ip": r.get("Src IP") or r.get("Source IP") or "", "src_port": _int(r.get("Src Port")),
                   "dest_ip": r.get("Dst IP") or r.get("Destination IP") or "",
                   "dest_port": _int(r.get("Dst Port") or r.get("Destination Port")),
                   "proto": _int(r.get("Protocol")), "family": _family(cls), "predicted": cls,
                   "score": float(r.get("score") or 0.0), "label": r.get("Label") or None}  # fmt: skip


def _store_alerts(db: Session, job_id: int, path: Path) -> int:
    n = 0
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        for raw in fh:
            try:
                n += ingest(db, raw, job_id=job_id) is not None
            except LineError as err:
                log.warning("job %d: alert line refused: %s", job_id, err)
    return n


def _int(text: str | None) -> int:
    try:
        return int(float(text or 0))
    except ValueError:
        return 0


def _csv_time(text: str) -> int:
    try:
        return epoch_ms(text.replace(" ", "T") + ("" if "+" in text else "+00:00"))
    except ValueError:
        return 0

"""Analysts' verdicts as labelled flows (``tapwatch console export-labels``), so the site profile and the next model
learn from them.

For every uploaded capture with episodes an analyst judged (true or false positive), the capture's flows are
extracted again by ``tapwatch flows`` (the sensor's own extractor, kept in the job's folder) and each flow an
episode covers is labelled: the episode's family for a true positive, ``benign`` for a false positive. A flow is
covered when the episode is about its source (or, for a flood, its destination) and the flow falls within the
episode's time, give or take a minute (``COVER_SLACK_MS``: episodes are dated by evidence, flows by their packets).
Flows no judged episode covers are not exported: nobody looked at them.

The file has the lab corpus's columns (``tapwatch flows``' columns, then ``family``, ``unit``, ``scenario``,
``seed``, ``link_profile``, ``episode_id``): ``tapwatch train --lab-corpus FILE`` trains on it, and
``tapwatch learn --flows FILE`` learns a site profile from its benign rows.
"""

from __future__ import annotations

import csv
import gzip
import subprocess
import sys
from collections import defaultdict
from pathlib import Path
from typing import IO

from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.console.store import COVER_SLACK_MS, Episode, Job, Verdict
from tapwatch.features.errors import BadInputError
from tapwatch.features.families import Family

EXTRA = ("family", "unit", "scenario", "seed", "link_profile", "episode_id")


def _flows_of(job: Job) -> Path:
    """The job's flows CSV, extracted once by ``tapwatch flows`` into its folder."""
    out = Path(job.path).parent / "flows.csv"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        proc = subprocess.run([sys.executable, "-m", "tapwatch.app", "flows", job.path, "-o", str(tmp)],
                              capture_output=True, text=True, timeout=3600)  # fmt: skip
        if proc.returncode != 0:
            raise BadInputError(f"job {job.id}", f"tapwatch flows failed: {proc.stderr.strip()[-300:]}")
        tmp.rename(out)
    return out


def _label(row: dict[str, str], judged: list[Episode]) -> Episode | None:
    first, last = int(row["first_seen_ms"]), int(row["last_seen_ms"])
    for e in judged:
        host = row["Dst IP"] if e.role == "victim" else row["Src IP"]
        if host == e.host and first <= e.last_ms + COVER_SLACK_MS and last >= e.first_ms - COVER_SLACK_MS:
            return e
    return None


def export(db: Session, out: IO[str], only: str = "all") -> dict[str, int]:
    """Write the labelled flows to ``out``; return rows per family. ``only``: ``all``, ``benign`` or ``attacks``."""
    judged: dict[int, list[Episode]] = defaultdict(list)
    q = select(Episode).where(Episode.verdict.in_([Verdict.TRUE_POSITIVE, Verdict.FALSE_POSITIVE]),
                              Episode.job_id.is_not(None)).order_by(Episode.first_ms)  # fmt: skip
    for e in db.scalars(q):
        judged[int(e.job_id or 0)].append(e)
    counts: dict[str, int] = defaultdict(int)
    writer: csv.DictWriter[str] | None = None
    for job_id in sorted(judged):
        job = db.get(Job, job_id)
        if job is None or job.kind == "csv" or job.status != "done":
            continue  # a flows CSV has no packets to extract again, and its rows are not the sensor's
        with _flows_of(job).open(newline="") as fh:
            reader = csv.DictReader(fh)
            for row in reader:
                covering = _label(row, judged[job_id])
                if covering is None:
                    continue
                family = covering.family if covering.verdict is Verdict.TRUE_POSITIVE else Family.BENIGN.value
                if only != "all" and (only == "benign") != (family == Family.BENIGN.value):
                    continue
                if writer is None:
                    writer = csv.DictWriter(out, [*(reader.fieldnames or []), *EXTRA])
                    writer.writeheader()
                writer.writerow({**row, "family": family, "unit": f"console-job{job.id}", "scenario": "console",
                                 "seed": job.id, "link_profile": "site", "episode_id": covering.id})  # fmt: skip
                counts[family] += 1
    return dict(counts)


def export_file(db: Session, path: Path, only: str = "all") -> dict[str, int]:
    """:func:`export` into ``path`` (gzip when it ends in .gz); nothing is written when no flow is labelled."""
    tmp = path.with_name(path.name + ".part")
    with gzip.open(tmp, "wt", newline="") if path.suffix == ".gz" else tmp.open("w", newline="") as fh:
        counts = export(db, fh, only)
    if not counts:
        tmp.unlink(missing_ok=True)
        raise BadInputError("export-labels", "no flow to export: no uploaded capture has an episode judged true or "
                            "false positive")  # fmt: skip
    tmp.replace(path)
    return counts

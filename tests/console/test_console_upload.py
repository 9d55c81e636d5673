"""Uploads: a capture and a flows CSV become jobs run by the real job runner (``tapwatch detect`` and ``score`` as
child processes); a wrong, corrupt or too large file and a full queue are refused with their message and leave
nothing behind."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console.jobs import JobRunner
from tapwatch.console.settings import ConsoleSettings
from tapwatch.console.store import AuditEvent, Episode, Job
from tapwatch.console.uploads import Kind, check
from tapwatch.features.errors import BadInputError
from tests.console.conftest import csrf_of, log_in
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"


@pytest.fixture
def runner(settings: ConsoleSettings, factory: sessionmaker[Session]) -> Iterator[JobRunner]:
    r = JobRunner(settings, factory, poll_s=0.2)
    r.start()
    yield r
    r.close()


def upload(client: FlaskClient, content: bytes, filename: str, name: str = "") -> Any:
    token = csrf_of(client, "/upload")
    return client.post("/upload", data={"file": (io.BytesIO(content), filename), "name": name, "csrf_token": token},
                       content_type="multipart/form-data")  # fmt: skip


def wait_done(client: FlaskClient, job_id: int, timeout_s: float = 240) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        status = client.get(f"/api/jobs/{job_id}").json
        if status["status"] in ("done", "failed"):
            return status  # type: ignore[no-any-return]
        assert time.monotonic() < deadline, status
        time.sleep(0.3)


def stored(settings: ConsoleSettings, factory: sessionmaker[Session]) -> tuple[int, list[str]]:
    with factory() as db:
        n = db.scalar(select(func.count()).select_from(Job)) or 0
    return n, sorted(p.name for p in (settings.data / "jobs").iterdir())


def test_a_capture_becomes_a_job_with_its_flows_and_its_episodes_in_the_inbox(
    make_app: Callable[..., Flask], runner: JobRunner, settings: ConsoleSettings, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    client = make_app(runner=runner).test_client()
    log_in(client, "ann")
    r = upload(client, SAMPLE.read_bytes(), "sample.pcap", "the sample capture")
    assert r.status_code == 302 and r.location == "/jobs/1"
    status = wait_done(client, 1)
    assert status["status"] == "done" and status["progress"] == 1.0, status
    assert status["flows"] > 50 and status["alerts"] == 2  # the scan episode's open and close lines
    page = client.get("/jobs/1").get_data(as_text=True)
    assert "Flows by predicted family" in page and "scan" in page and "10.211.0.1" in page
    assert "Network scan" in client.get("/inbox?sensor=upload-1").get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(client.get("/jobs/1/flows.csv").get_data(as_text=True))))
    assert rows[0][:3] == ["time_ms", "src_ip", "src_port"] and len(rows) == status["flows"] + 1
    by_score = client.get("/jobs/1?sort=score&dir=desc").get_data(as_text=True)
    assert by_score.index("scan") < by_score.index("benign")  # sorted: the scan's windows first
    token = csrf_of(client, "/jobs/1")
    assert client.post("/jobs/1/delete", data={"csrf_token": token}).status_code == 302
    assert stored(settings, factory) == (0, [])
    with factory() as db:
        assert db.scalar(select(func.count()).select_from(Episode).where(Episode.job_id.is_not(None))) == 0


def test_refused_uploads_say_why_and_store_nothing(
    make_app: Callable[..., Flask], settings: ConsoleSettings, factory: sessionmaker[Session], tmp_path: Path
) -> None:  # fmt: skip
    client = make_app(max_upload_mb=1, max_jobs=1, max_queued=1).test_client()
    log_in(client, "ann")
    cases = [
        (b"hello, world\n", "notes.txt", 400, "not a pcap, pcapng or CICFlowMeter-style CSV"),
        (SAMPLE.read_bytes()[:5000], "cut.pcap", 400, "corrupt pcap: it ends inside packet"),
        (b"\xd4\xc3\xb2\xa1" + b"\x00" * 20, "empty.pcap", 400, "the pcap holds no packet"),
        (b"\xd4\xc3\xb2\xa1" + b"\x00" * 1_100_000, "big.pcap", 413, "larger than the limit of 1 MB"),
        (b"", "nothing.pcap", 400, "upload: the file is empty"),
    ]
    for content, name, code, message in cases:
        r = upload(client, content, name)
        assert r.status_code == code and message in r.get_data(as_text=True), (name, r.status_code)
        assert stored(settings, factory) == (0, []), name
    small = SAMPLE.read_bytes()
    assert upload(client, small, "a.pcap").status_code == 302  # no runner here: the two stay queued
    assert upload(client, small, "b.pcap").status_code == 302
    r = upload(client, small, "c.pcap")
    assert r.status_code == 503 and "the upload queue is full (2 uploads waiting or running)" in r.get_data(
        as_text=True
    )
    assert stored(settings, factory) == (2, ["1", "2"])
    with factory() as db:
        refused = db.scalars(select(AuditEvent.detail).where(AuditEvent.action == "upload", AuditEvent.ok.is_(False)))
        assert len(refused.all()) == 5


def test_a_flows_csv_is_scored_per_flow_and_its_download_neutralises_formulas(
    make_app: Callable[..., Flask], runner: JobRunner, tmp_path: Path
) -> None:  # fmt: skip
    flows = tmp_path / "flows.csv"
    subprocess.run([sys.executable, "-m", "tapwatch.app", "flows", str(SAMPLE), "-o", str(flows)], check=True,
                   capture_output=True, timeout=300)  # fmt: skip
    lines = flows.read_text().splitlines()
    labelled = [lines[0] + ",Label"] + [
        f"{x},{'=HYPERLINK(1)' if i == 0 else 'BENIGN'}" for i, x in enumerate(lines[1:])
    ]
    client = make_app(runner=runner).test_client()
    log_in(client, "ann")
    assert upload(client, ("\n".join(labelled) + "\n").encode(), "flows.csv").status_code == 302
    status = wait_done(client, 1)
    assert status["status"] == "done" and status["flows"] == len(lines) - 1, status
    page = client.get("/jobs/1").get_data(as_text=True)
    assert "own labels (its attack mix)" in page and "BENIGN" in page
    body = client.get("/jobs/1/flows.csv").get_data(as_text=True)
    assert "'=HYPERLINK(1)" in body and "\n=HYPERLINK" not in body and ",=HYPERLINK" not in body


def test_a_pcapng_is_walked_block_by_block(tmp_path: Path) -> None:
    from scapy.utils import PcapNgWriter, rdpcap

    path = tmp_path / "sample.pcapng"
    packets = rdpcap(str(SAMPLE))
    with PcapNgWriter(str(path)) as w:
        for p in packets:
            w.write(p)
    found = check(path)
    assert found.kind is Kind.PCAPNG and found.records == len(packets)
    assert found.first_s == pytest.approx(float(packets[0].time), abs=1e-3)
    cut = tmp_path / "cut.pcapng"
    cut.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(BadInputError, match="corrupt pcapng: it ends inside the block at byte"):
        check(cut)


def test_analysts_verdicts_export_as_labelled_flows_that_training_and_learn_read(
    make_app: Callable[..., Flask], runner: JobRunner, settings: ConsoleSettings, factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:  # fmt: skip
    from tapwatch.console.labels import export_file
    from tapwatch.models.baseline import benign_records
    from tapwatch.models.training.data_lab import load_lab

    client = make_app(runner=runner).test_client()
    log_in(client, "ann")
    upload(client, SAMPLE.read_bytes(), "sample.pcap")
    assert wait_done(client, 1)["status"] == "done"
    with factory() as db:
        with pytest.raises(BadInputError, match="no flow to export"):
            export_file(db, tmp_path / "none.csv")
        scan = db.scalars(select(Episode).where(Episode.job_id == 1)).one()
        token = csrf_of(client, f"/episodes/{scan.id}")
    assert client.post(f"/episodes/{scan.id}/verdict", data={"verdict": "tp", "csrf_token": token}).status_code == 302
    with factory() as db:
        counts = export_file(db, tmp_path / "labels.csv.gz")
    assert set(counts) == {"scan"} and counts["scan"] > 100  # the scanner's flows (one-packet probes included)
    ds = load_lab([tmp_path / "labels.csv.gz"])  # what `tapwatch train --lab-corpus` reads
    assert set(ds.y.unique()) == {"scan"} and len(ds.y) > 0
    client.post(f"/episodes/{scan.id}/verdict", data={"verdict": "fp", "csrf_token": token})
    with factory() as db:
        counts = export_file(db, tmp_path / "benign.csv", only="benign")
    assert set(counts) == {"benign"}
    assert len(list(benign_records([tmp_path / "benign.csv"]))) == counts["benign"]  # what `learn --flows` reads

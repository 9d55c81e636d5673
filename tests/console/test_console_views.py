"""The hosts and overview pages over a job's flows and episodes (the upload runs through the real runner)."""

from __future__ import annotations

import re
from collections.abc import Callable

from flask import Flask
from sqlalchemy import insert
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console.ingest import ingest
from tapwatch.console.store import Job, JobFlow
from tests.console.conftest import log_in
from tests.support.console import eve_line

T0 = 1_796_119_200_000  # 2026-12-01T10:00:00Z, the test line's hour


def add_flows(factory: sessionmaker[Session]) -> None:
    with factory() as db:
        job = Job(name="t", owner="ann", kind="csv", size=1, path="", records=3, status="done")
        db.add(job)
        db.flush()
        rows = [("10.0.0.9", "10.0.0.2", "bruteforce", "SSH-Patator", 0.97, "SSH-Patator"),
                ("10.0.0.9", "10.0.0.2", "bruteforce", "SSH-Patator", 0.95, "SSH-Patator"),
                ("10.0.0.5", "10.0.0.2", "benign", "BENIGN", 0.01, "BENIGN")]  # fmt: skip
        db.execute(insert(JobFlow), [
            {"job_id": job.id, "at_ms": T0 + i * 1000, "src_ip": s, "src_port": 40000 + i, "dest_ip": d,
             "dest_port": 22, "proto": 6, "family": f, "predicted": c, "score": sc, "label": lab}
            for i, (s, d, f, c, sc, lab) in enumerate(rows)])  # fmt: skip
        later = eve_line("ep-2", timestamp="2026-12-01T13:00:30.000000+0000")
        later["ml"]["alert_id"] = "a-2"
        later["episode"].update(first_seen="2026-12-01T13:00:00.000Z", last_seen="2026-12-01T13:00:30.000Z",
                                max_score=0.5)  # fmt: skip
        ingest(db, later)
        db.commit()


def test_hosts_show_scores_over_time_windows_and_a_windows_flows(
    make_app: Callable[..., Flask], factory: sessionmaker[Session]
) -> None:  # fmt: skip
    add_flows(factory)
    client = make_app().test_client()
    log_in(client, "vic")
    page = client.get("/hosts").get_data(as_text=True)
    row = re.search(r'href="/hosts/10.0.0.9">10.0.0.9</a></td>(.*?)</tr>', page, re.S)
    assert row is not None and row.group(1).count("<rect") == 2  # two one-hour windows with episodes
    assert "<td>2</td><td>bruteforce</td><td>0.980</td><td>2</td>" in row.group(1)
    host = client.get("/hosts/10.0.0.9").get_data(as_text=True)
    assert host.count('href="?window=') == 2 and "2026-12-01 13:00:00Z" in host and "2026-12-01 10:00:00Z" in host
    window = client.get(f"/hosts/10.0.0.9?window={T0}").get_data(as_text=True)
    flows = re.search(r'id="host-flows">(.*?)</table>', window, re.S)
    assert flows is not None and flows.group(1).count("SSH-Patator") == 2 and "BENIGN" not in flows.group(1)
    assert client.get("/hosts/10.9.9.9").status_code == 404


def test_the_overview_charts_alerts_by_family_top_hosts_classes_and_the_attack_mix(
    make_app: Callable[..., Flask], factory: sessionmaker[Session]
) -> None:  # fmt: skip
    add_flows(factory)
    client = make_app().test_client()
    log_in(client, "vic")
    page = client.get("/overview?span=day").get_data(as_text=True)
    chart = re.search(r'id="over-time">(.*?)</svg>', page, re.S)
    assert chart is not None and chart.group(1).count("bruteforce: 1") == 2  # one line at 10:00, one at 13:00
    assert 'href="/hosts/10.0.0.9">10.0.0.9</a></td><td>2</td>' in page
    mix = re.search(r'id="attack-mix">(.*?)</table>', page, re.S)
    assert mix is not None and "SSH-Patator</td><td>2</td>" in mix.group(1) and "BENIGN</td><td>1</td>" in mix.group(1)


def test_the_live_stream_sends_the_lines_after_the_clients_last_and_is_bounded(
    make_app: Callable[..., Flask], factory: sessionmaker[Session]
) -> None:  # fmt: skip
    app = make_app()
    app.config["TAPWATCH_SSE_SECONDS"] = 1.0
    client = app.test_client()
    log_in(client, "vic")
    assert "TAPWATCH Password guessing" in client.get("/live").get_data(as_text=True)
    with factory() as db:
        newer = eve_line("ep-3")
        newer["ml"]["alert_id"] = "a-3"
        ingest(db, newer)
        db.commit()
    body = client.get("/live/events", headers={"Last-Event-ID": "1"}).get_data(as_text=True)
    events = [b for b in body.split("\n\n") if b.startswith("id: ")]
    assert len(events) == 1 and events[0].startswith("id: 2\nevent: alert\n") and '"episode": "ep-3"' in events[0]
    gate = app.config["TAPWATCH_SSE_GATE"]
    for _ in range(4):  # four streams open: the fifth is told to retry
        gate.acquire()
    r = client.get("/live/events")
    assert r.status_code == 503 and "retry: 5000" in r.get_data(as_text=True)


def test_the_stacked_chart_stacks_each_buckets_families_and_keeps_every_time_label_inside() -> None:
    from tapwatch.console.charts import LABEL_PX, stacked

    buckets = [(f"11-{i:02d} 00:00", {"scan": i % 3, "dos": 1}) for i in range(1, 25)]
    chart = stacked(buckets, width=720, height=160)
    assert len(chart.rects) == sum(1 for _, c in buckets for n in c.values() if n)
    assert chart.labels and all(x <= 720 - LABEL_PX for x, _ in chart.labels)
    tallest = max(sum(c.values()) for _, c in buckets)
    column = [r for r in chart.rects if r.x == chart.rects[-1].x]  # the last bucket's stack ends at the bottom
    assert abs(sum(r.height for r in column) - sum(buckets[-1][1].values()) / tallest * 156) < 1e-6
    assert sorted(name for _, name in chart.legend) == ["dos", "scan"]

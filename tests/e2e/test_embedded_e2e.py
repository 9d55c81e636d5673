"""The embedded mode as a user runs it: ``tapwatch detect`` on the sample pcap, the whole pipeline in one process
(no Redis anywhere). ``tapwatch run`` live on loopback: tests/netns/test_embedded_netns.py; the in-process
pipeline's back-pressure and failure handling: tests/unit/test_embedded.py."""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest

from tapwatch.app.embedded import shipped_model
from tests.support.cli import per_class, summary_of, tapwatch
from tests.support.e2e import SAMPLE, e2e_model_spec, expected_windows, read_jsonl
from tests.support.tiny_model import write_tiny_model

SENSOR = "embedded-test"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return write_tiny_model(tmp_path_factory.mktemp("model"), e2e_model_spec()).paths


def test_detect_writes_episodes_with_families_explanations_and_every_verdict(model: tuple[Path, Path],
                                                                             tmp_path: Path) -> None:  # fmt: skip
    out, verdicts = tmp_path / "alerts.jsonl", tmp_path / "verdicts.jsonl"
    proc = tapwatch("detect", str(SAMPLE), "--model", str(model[0]), "-o", str(out), "--sensor", SENSOR,
                    "--verdicts", str(verdicts))  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s = summary_of(err)
    expected = expected_windows([SAMPLE], model[0], SENSOR)
    assert len(read_jsonl(verdicts)) == int(s["windows"]) == len(expected)  # one verdict line per window
    lines = read_jsonl(out)
    assert lines and all(x["event_type"] == "alert" for x in lines)
    by_episode: dict[str, list[str]] = {}
    for x in lines:
        by_episode.setdefault(x["episode"]["id"], []).append(x["episode"]["state"])
        assert x["ml"]["family"] in {"scan", "dos", "bruteforce", "webattack", "botnet"}
        assert x["ml"]["explanation"] and x["ml"]["summary"] and x["alert"]["signature_id"] // 1000 == 9200
    assert all(states[0] == "open" and states[-1] == "close" and len(states) <= 10 for states in by_episode.values())
    scans = [x for x in lines if x["ml"]["family"] == "scan"]
    assert scans and scans[0]["src_ip"] == "10.211.0.1" and scans[-1]["episode"]["ports"] >= 100  # the nmap scan
    assert "volume" in scans[-1]["ml"]["views"]  # one-probe-per-port: the destination view saw it
    assert sum(per_class(s["alerts"]).values()) == len(lines)


def test_detect_per_window_alerts_and_a_summary_that_adds_up(model: tuple[Path, Path], tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    out.write_text("stale line from an earlier run\n")
    # A deadline no busy test machine misses: the budget's first explanations are then always there.
    proc = tapwatch("detect", str(SAMPLE), "--model", str(model[0]), "-o", str(out), "--sensor", SENSOR,
                    "--alert-mode", "flows", env={"TAPWATCH_EXPLAIN_DEADLINE_MS": "20000"})  # fmt: skip
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s = summary_of(err)
    expected = expected_windows([SAMPLE], model[0], SENSOR)
    windows = int(s["windows"])
    assert windows == len(expected) and int(s["flows"].split()[0]) >= windows
    assert per_class(s["verdicts"]) == dict(Counter(expected.classes.values()))
    assert int(s["verdicts"].split(":")[0]) + int(s["dropped"].split(":")[0]) == windows
    assert s["dropped"] == "0"
    alerts = read_jsonl(out)
    assert {a["flow_id"] for a in alerts} == expected.alerting and len(alerts) == len(expected.alerting)
    assert sum(per_class(s["alerts"]).values()) == len(alerts)
    assert per_class(s["alerts"]) == dict(Counter(a["ml"]["class"] for a in alerts))
    explained = [a for a in alerts if a["ml"]["explanation_status"] == "ok"]
    assert f"({len(explained)} explained" in s["alerts"] and explained  # the budget explains the first ones
    assert {a["alert"]["signature"] for a in alerts} >= {"TAPWATCH ML PortScan (tiny-e2e)"}


def test_detect_writes_eve_lines_to_stdout_by_default(model: tuple[Path, Path]) -> None:
    proc = tapwatch("detect", str(SAMPLE), "--model", str(model[0]), "--no-explain")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(e["event_type"] == "alert" for e in lines)
    assert len(lines) == sum(per_class(summary_of(err)["alerts"]).values())


def test_detect_without_a_model_says_what_to_do() -> None:
    proc = tapwatch("detect", str(SAMPLE), "-o", os.devnull)
    _, err = proc.communicate(timeout=60)
    if shipped_model().exists():  # once the deployment model ships, the first README command just works
        assert proc.returncode == 0, err
        assert "windows" in summary_of(err)
    else:
        assert proc.returncode == 2
        assert err.strip().splitlines()[-1].startswith("tapwatch: error: ") and "--model" in err
        assert len(err.strip().splitlines()) == 1


def test_detect_with_a_missing_pcap_exits_2(model: tuple[Path, Path], tmp_path: Path) -> None:
    proc = tapwatch("detect", str(tmp_path / "nope.pcap"), "--model", str(model[0]))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "nope.pcap" in err


def test_the_shipped_model_and_baseline_raise_one_scan_episode_and_nothing_on_the_samples_benign_flows(
    tmp_path: Path,
) -> None:
    """The issue's acceptance on the committed sample: its nmap scan is a scan episode; its benign HTTP and DNS raise
    nothing (before episodes, 8 of its 12 benign flows alerted)."""
    out = tmp_path / "alerts.jsonl"
    proc = tapwatch("detect", str(SAMPLE), "-o", str(out))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = read_jsonl(out)
    assert {x["episode"]["id"] for x in lines} and len({x["episode"]["id"] for x in lines}) == 1
    assert [x["episode"]["state"] for x in lines] == ["open", "close"]
    assert {(x["ml"]["family"], x["src_ip"], x["dest_ip"]) for x in lines} == {("scan", "10.211.0.1", "10.211.0.2")}
    assert lines[-1]["episode"]["ports"] >= 100 and all(x["ml"]["explanation"] for x in lines)


def test_out_of_the_box_detect_writes_nothing_about_the_sample_s_benign_traffic(tmp_path: Path) -> None:
    """The models issue's required line: the shipped model, baseline and profile with no flags raise no line on
    the sample pcap's benign phases (HTTP, DNS); its nmap scan is one scan episode dated inside the scan."""
    out = tmp_path / "alerts.jsonl"
    proc = tapwatch("detect", str(SAMPLE), "-o", str(out))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "model hybrid-lab" in err
    with SAMPLE.with_name("sample-labels.csv").open() as fh:
        phases = [(float(r["start"]), float(r["end"]), r["label"]) for r in csv.DictReader(fh)]
    lines = read_jsonl(out)
    assert lines, "the scan was not detected"
    for x in lines:
        first, last = (datetime.fromisoformat(x["episode"][k].replace("Z", "+00:00")).timestamp()
                       for k in ("first_seen", "last_seen"))  # fmt: skip
        during = [label for start, end, label in phases if start <= first and last <= end]
        assert during == ["nmap-syn-scan"] and x["ml"]["family"] == "scan", (x["episode"], during)

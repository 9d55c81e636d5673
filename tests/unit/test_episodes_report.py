"""The episodes report's rendering: runs looked at while the rules changed are counted apart, and one line of each
family is shown in words (from the lines of an episode that named its attack)."""

from __future__ import annotations

from typing import Any

import pytest

from tapwatch.app.episodes_match import AttackResult
from tapwatch.app.episodes_report import Detect, LabRun, main, render


def close_line(eid: str, family: str) -> dict[str, Any]:
    return {
        "src_ip": "10.0.0.9", "dest_ip": "10.0.0.2", "dest_port": 22, "proto": "TCP",
        "alert": {"signature_id": 9200003, "signature": "TAPWATCH Password guessing",
                  "category": "Attempted User Privilege Gain", "severity": 2},
        "episode": {"id": eid, "state": "close", "key": "source", "host": "10.0.0.9",
                    "first_seen": "2026-12-06T10:00:00.000Z", "last_seen": "2026-12-06T10:01:00.000Z", "flows": 60,
                    "sources": 1, "targets": 1, "top_targets": ["10.0.0.2"], "ports": 1, "lines": 2},
        "ml": {"family": family, "class": "repeated logins to one service", "views": ["volume"],
               "classes": {"repeated logins to one service": 1},
               "explanation": [{"feature": "pair_flows", "value": 60, "weight": 2.0}],
               "summary": "Password guessing from 10.0.0.9: 60 connections to 10.0.0.2 port 22 in 10 s."},
    }  # fmt: skip


def run(name: str, examined: bool, named: bool) -> LabRun:
    eid = "ep-" + name
    result = AttackResult("e1", "bruteforce", "hydra", False, detected=named, named=named,
                          delay_s=1.0 if named else None, lines=2 if named else 0,
                          families=["bruteforce"] if named else [], named_by=[eid] if named else [])  # fmt: skip
    lines = [close_line("ep-" + name, "bruteforce")] if named else []
    return LabRun(name, Detect(name, lines, [], 1000, 1.0, 0), 900, [result], 0, 0, 0, [], "made", examined)


def test_examined_runs_are_counted_apart_and_each_family_has_an_example_line() -> None:
    report = {"command": "x", "machine": "m", "versions": "v", "seconds": 1.0}
    md = render(report, [run("fresh-s9", False, False), run("seen-s2", True, True)], [], [])
    fresh_table, every_table = md.split("Every run, the examined ones included:")
    assert "Runs nobody looked at before the rules were final (`fresh-s9`)" in fresh_table
    assert "| bruteforce | 1 | 0 | 0 |" in fresh_table and "| bruteforce | 2 | 1 | 1 |" in every_table
    assert "`seen-s2`: made; *examined*" in md
    # the only episode that named its attack is in the examined run: that is where the example comes from
    assert "### bruteforce (`seen-s2`)" in md and "summary: Password guessing from 10.0.0.9" in md


def test_an_examined_name_that_is_no_lab_run_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--examined", "nope", "-o", "/nonexistent/x"])
    assert "--examined names no --lab run: nope" in capsys.readouterr().err

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


def test_a_victim_episode_counts_for_attacks_on_that_victim_only_and_a_late_attack_joins_it() -> None:
    """An episode about one victim is no detection of the same attacker's flood on another host; an attack that
    comes while its victim's episode is open joins it (the operator was told when the episode opened)."""
    from tapwatch.app.episodes_match import Attack, match
    from tapwatch.features.families import Family

    def flood(aid: str, victim: str, start_s: int) -> Attack:
        return Attack(aid, Family.DOS, "hping3", frozenset({"10.0.0.9"}), frozenset({victim}), start_s * 1000,
                      (start_s + 30) * 1000, False)  # fmt: skip

    def line(state: str, at: str) -> dict[str, Any]:
        return {"timestamp": at, "src_ip": "10.0.0.9", "dest_ip": "10.0.0.2",
                "episode": {"id": "v2", "state": state, "key": "victim", "host": "10.0.0.2",
                            "first_seen": "1970-01-01T00:01:40.000Z", "last_seen": "1970-01-01T00:05:00.000Z"},
                "ml": {"family": "dos"}}  # fmt: skip

    lines = [line("open", "1970-01-01T00:01:45.000Z"), line("update", "1970-01-01T00:04:00.000Z")]
    attacks = [flood("first", "10.0.0.2", 100), flood("other-host", "10.0.0.3", 110), flood("later", "10.0.0.2", 200)]
    results = {r.attack: r for r in match(lines, attacks, slack_s=150)[0]}
    assert not results["other-host"].detected  # same attacker, same time, another victim
    assert results["first"].detected and not results["first"].joined and results["first"].delay_s == 5.0
    assert results["later"].detected and results["later"].joined and results["later"].delay_s == 40.0

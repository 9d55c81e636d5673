"""deploy/prometheus with Prometheus's own checker: the scrape config and the rule files are valid, every alert and
recording rule has a ``promtool test rules`` case, those cases pass, and they fail when a rule's threshold changes
(so they test the rules, not merely run). promtool comes from Debian's ``prometheus`` package.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.env import REPO, need

PROM = REPO / "deploy" / "prometheus"
RULE_FILES = sorted((PROM / "rules").glob("*.yml"))
TEST_FILES = sorted((PROM / "tests").glob("*.test.yml"))


def promtool(*args: str, cwd: Path = PROM) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    need(tool is not None, "promtool not found (Debian package prometheus)")
    assert tool is not None
    return subprocess.run([tool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def rules(kind: str) -> list[dict[str, Any]]:
    """Every rule of the shipped rule files that has the key ``kind`` (alert or record)."""
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            found += [rule for rule in group["rules"] if kind in rule]
    return found


def test_rule_and_test_files_exist() -> None:
    assert {p.name for p in RULE_FILES} == {"tapwatch-alerts.yml", "tapwatch-recording.yml", "redis-alerts.yml"}
    assert len(TEST_FILES) == 3


def test_promtool_check_config_loads_every_rule_file() -> None:
    done = promtool("check", "config", "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    for path in RULE_FILES:
        assert f"Checking rules/{path.name}" in done.stdout


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", *(str(p.relative_to(PROM)) for p in RULE_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(RULE_FILES)


def test_promtool_test_rules() -> None:
    done = promtool("test", "rules", *(str(p.relative_to(PROM)) for p in TEST_FILES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("SUCCESS") == len(TEST_FILES) and "FAILED" not in done.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    fired: set[str] = set()
    silent: set[str] = set()
    loaded: set[str] = set()
    for path in TEST_FILES:
        doc = yaml.safe_load(path.read_text())
        loaded |= {(path.parent / f).resolve().name for f in doc["rule_files"]}
        for case in doc["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in rules("alert")}
    assert len(names) == len(rules("alert")), "alert names are not unique"
    assert names - fired == set(), "alerts never shown firing in deploy/prometheus/tests"
    assert names - silent == set(), "alerts never shown silent in deploy/prometheus/tests"
    assert loaded == {p.name for p in RULE_FILES}


def test_every_recording_rule_is_tested_and_named_level_metric_operation() -> None:
    exprs = [
        check["expr"]
        for path in TEST_FILES
        for case in yaml.safe_load(path.read_text())["tests"]
        for check in case.get("promql_expr_test", [])
    ]
    for rule in rules("record"):
        level, metric, operation = rule["record"].split(":")
        assert level and metric and operation, rule["record"]
        assert any(rule["record"] in expr for expr in exprs), f"{rule['record']} has no promql_expr_test"


@pytest.mark.parametrize("rule", rules("alert"), ids=lambda r: r["alert"])
def test_alert_style(rule: dict[str, Any]) -> None:
    """awesome-prometheus-alerts' shape: severity, a for: duration, summary and description with value and labels."""
    assert rule["labels"]["severity"] in ("warning", "critical")
    assert "for" in rule
    assert set(rule["annotations"]) == {"summary", "description"}
    assert "$value" in rule["annotations"]["description"]
    if not rule["expr"].startswith("absent("):  # absent() of a comparison has no labels to show
        assert "$labels." in rule["annotations"]["summary"] + rule["annotations"]["description"]


def test_a_changed_threshold_fails_the_rule_tests(tmp_path: Path) -> None:
    """The capture-loss critical threshold moved from 5 % to 50 %: its promtool cases must fail."""
    shutil.copytree(PROM / "rules", tmp_path / "rules")
    shutil.copytree(PROM / "tests", tmp_path / "tests")
    alerts = tmp_path / "rules" / "tapwatch-alerts.yml"
    text = alerts.read_text()
    assert text.count("ratio_rate5m > 0.05") == 1
    alerts.write_text(text.replace("ratio_rate5m > 0.05", "ratio_rate5m > 0.5"))
    done = promtool("test", "rules", "tests/tapwatch-alerts.test.yml", cwd=tmp_path)
    assert done.returncode != 0
    assert "TapwatchCaptureLossCritical" in done.stdout + done.stderr

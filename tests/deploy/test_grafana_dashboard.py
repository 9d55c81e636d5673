"""deploy/grafana: the committed dashboard is what build_dashboard.py generates, it is well formed for Grafana's file
provisioning (unique panel ids, a datasource and targets on every panel, the provisioned datasource's uid), every
expression is valid PromQL (promtool parses it) and reads only catalogued tapwatch series and shipped recording
rules, and the panels the deploy issue asks for are there. Grafana itself is not installed here: its loading of the
files is not exercised.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from tapwatch.features.metric_names import CATALOGUE, series_in
from tests.support.env import REPO, need

GRAFANA = REPO / "deploy" / "grafana"
JSON_FILE = GRAFANA / "dashboards" / "tapwatch.json"


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("build_dashboard", GRAFANA / "build_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(JSON_FILE.read_text())
    return loaded


def expressions() -> list[str]:
    return [t["expr"] for p in dashboard()["panels"] for t in p["targets"]]


def test_committed_json_is_what_the_code_generates() -> None:
    assert JSON_FILE.read_text() == builder().dashboard_json(), "run python deploy/grafana/build_dashboard.py"
    done = subprocess.run([sys.executable, str(GRAFANA / "build_dashboard.py"), "--check"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def test_panels_are_well_formed() -> None:
    doc = dashboard()
    assert doc["uid"] == "tapwatch" and doc["panels"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))
    sources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yml").read_text())
    (source,) = sources["datasources"]
    assert source["type"] == "prometheus"
    for panel in doc["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": source["uid"]}, panel["title"]
        assert panel["targets"], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))
        for target in panel["targets"]:
            assert target["expr"].strip() and target["datasource"] == panel["datasource"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24


def test_dashboard_provider_points_at_a_folder() -> None:
    doc = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "tapwatch.yml").read_text())
    assert doc["apiVersion"] == 1
    (provider,) = doc["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def test_every_tapwatch_name_is_catalogued_and_every_recording_rule_shipped() -> None:
    used = set().union(*(series_in(e) for e in expressions()))
    assert used, "no tapwatch_* name found in the panels"
    assert used - set(CATALOGUE) == set()
    shipped = {
        rule["record"]
        for path in (REPO / "deploy" / "prometheus" / "rules").glob("*.yml")
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    }
    recorded = set().union(*(re.findall(r"\b[a-z]+:[a-z0-9_]+:[a-z0-9_]+\b", e) for e in expressions()))
    assert recorded and recorded <= shipped


def test_every_expression_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel expression as a recording rule (Grafana's $__rate_interval set to 5m)."""
    tool = shutil.which("promtool")
    need(tool is not None, "promtool not found (Debian package prometheus)")
    assert tool is not None
    rules = [{"record": f"panel:expr{i}:check", "expr": e.replace("$__rate_interval", "5m")}
             for i, e in enumerate(expressions())]  # fmt: skip
    path = tmp_path / "panels.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    done = subprocess.run([tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules)} rules found" in done.stdout


def test_the_panels_the_issue_asks_for_are_there() -> None:
    titles = " | ".join(p["title"].lower() for p in dashboard()["panels"])
    for subject in ("packets", "flows", "windows per second, by stage", "drops", "stream lag and pending",
                    "batch size", "latency", "verdicts", "alert lines", "open episodes", "suppressed",
                    "explanation budget", "model and profile", "cpu", "memory"):  # fmt: skip
        assert subject in titles, subject
    joined = "\n".join(expressions())
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes", "tapwatch_model_info",
                 "tapwatch_profile_info", "tapwatch_inference_latency_seconds_bucket"):  # fmt: skip
        assert name in joined, name

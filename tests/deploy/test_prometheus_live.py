"""A real Prometheus (Debian's /usr/bin/prometheus) on loopback scrapes a running ``tapwatch worker``: a tapwatch
metric and a shipped recording rule are read back through its HTTP API, and the shipped process-down and no-worker
rules fire in it once the worker is stopped.

The rules Prometheus loads are the shipped ones: deploy/prometheus/rules/tapwatch-recording.yml as it is, and the
two alerts of rules/tapwatch-alerts.yml copied with their expression, labels and annotations untouched and only
``for:`` shortened (1 minute would make the test slow); the test checks that Prometheus reports the shipped
expression.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.deploy.test_metric_names import MODEL, scrape, stop, tapwatch_process
from tests.support.env import REPO, RedisServer, free_port, need

RULES = REPO / "deploy" / "prometheus" / "rules"
FIRED = ("TapwatchProcessDown", "TapwatchNoWorkerAlive")


def api(port: int, path: str, **params: str) -> Any:
    url = f"http://127.0.0.1:{port}{path}" + ("?" + urllib.parse.urlencode(params) if params else "")
    with urllib.request.urlopen(url, timeout=5) as answer:
        body = json.loads(answer.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(what: str, probe: Callable[[], Any], timeout_s: float = 45) -> Any:
    """Poll ``probe`` until it returns something truthy."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            found = probe()
        except (urllib.error.URLError, ConnectionError):
            found = None
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def shipped_alerts(names: tuple[str, ...]) -> list[dict[str, Any]]:
    doc = yaml.safe_load((RULES / "tapwatch-alerts.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"] if rule.get("alert") in names]


def write_config(tmp: Path, worker_port: int) -> Path:
    rules = tmp / "rules"
    rules.mkdir()
    shutil.copy(RULES / "tapwatch-recording.yml", rules)
    fast = [{**rule, "for": "2s"} for rule in shipped_alerts(FIRED)]
    (rules / "alerts.yml").write_text(yaml.safe_dump({"groups": [{"name": "live", "rules": fast}]}))
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["rules/*.yml"],
        "scrape_configs": [
            {"job_name": "tapwatch-worker", "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[int], int]]:
    """Start Prometheus scraping a worker on the given port; yields a starter returning its HTTP port."""
    binary = shutil.which("prometheus")
    need(binary is not None, "prometheus not found (Debian package prometheus)")
    assert binary is not None
    procs: list[subprocess.Popen[bytes]] = []

    def start(worker_port: int) -> int:
        port = free_port()
        config = write_config(tmp_path, worker_port)
        log = (tmp_path / "prometheus.log").open("wb")
        procs.append(subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
        ))  # fmt: skip
        wait_for("Prometheus ready", lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2))
        return port

    try:
        yield start
    finally:
        for proc in procs:
            stop(proc)


def firing(port: int) -> dict[str, dict[str, str]]:
    """alertname -> labels of the alerts firing now."""
    alerts = api(port, "/api/v1/alerts")["alerts"]
    return {a["labels"]["alertname"]: a["labels"] for a in alerts if a["state"] == "firing"}


def test_prometheus_scrapes_a_worker_and_fires_when_it_stops(
    redis_server: RedisServer, tmp_path: Path, prometheus: Callable[[int], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    worker_port = free_port()
    logs = tmp_path / "logs"
    logs.mkdir()
    cmd = ["worker", "--redis", redis_server.url, "--model", str(MODEL), "--metrics-port", str(worker_port)]
    with tapwatch_process(logs, "worker", *cmd) as worker:
        scrape(worker_port, worker, logs / "worker.log")
        port = prometheus(worker_port)

        def query(expr: str) -> list[dict[str, Any]]:
            result: list[dict[str, Any]] = api(port, "/api/v1/query", query=expr)["result"]
            return result

        (model,) = wait_for("tapwatch_model_info", lambda: query('tapwatch_model_info{job="tapwatch-worker"}'))
        assert model["metric"]["name"] == "hybrid-lab" and model["value"][1] == "1"
        (windows,) = wait_for("windows", lambda: query("tapwatch_inference_windows_total"))
        assert float(windows["value"][1]) == 0.0  # nothing on tapwatch:windows
        (pending,) = wait_for("recording rule", lambda: query("job:tapwatch_inference_pending_windows:max"))
        assert pending["metric"] == {"__name__": "job:tapwatch_inference_pending_windows:max", "job": "tapwatch-worker"}
        time.sleep(3)  # longer than the rules' for: the worker is up, nothing fires
        assert set(firing(port)) & set(FIRED) == set()
        stop(worker)
        alerts = wait_for("alerts firing", lambda: (lambda f: f if set(FIRED) <= set(f) else None)(firing(port)))
    down = alerts["TapwatchProcessDown"]
    assert down["job"] == "tapwatch-worker" and down["instance"] == f"127.0.0.1:{worker_port}"
    assert down["severity"] == "critical" and alerts["TapwatchNoWorkerAlive"]["severity"] == "critical"
    loaded = {r["name"]: r["query"] for g in api(port, "/api/v1/rules")["groups"] for r in g["rules"]}
    for rule in shipped_alerts(FIRED):
        assert loaded[rule["alert"]].split() == rule["expr"].split()  # Prometheus prints the shipped expression

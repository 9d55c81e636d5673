"""Every metric name the Prometheus rules and the Grafana dashboard use is catalogued (features/metric_names.py) and
is served by a real running tapwatch process; the catalogue equals what the metrics modules register; recording
rules are named ``level:metric:operation``.

The live check starts ``tapwatch capture -i lo`` (a BPF filter on a free UDP port, fed a few datagrams), ``tapwatch
worker`` and ``tapwatch alerter`` on the private Redis, and ``tapwatch console serve``, and reads their /metrics. A
labelled family whose children only appear after an event (per-window alerts in flows mode, a malformed verdict, a
suppressed episode) is exposed by its ``# HELP``/``# TYPE`` lines until then: those names
are accepted on their HELP line, and the test names which ones.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.console.stream import ConsoleMetrics
from tapwatch.features.metric_names import CATALOGUE, series_in
from tapwatch.inference.metrics import InferenceMetrics
from tests.support.env import REPO, RedisServer, end, free_port, need

RULES = REPO / "deploy" / "prometheus" / "rules"
DASHBOARD = REPO / "deploy" / "grafana" / "dashboards" / "tapwatch.json"
MODEL = REPO / "models" / "hybrid-lab.onnx"
CARD = REPO / "models" / "hybrid-lab.card.json"
SUFFIX = {"counter": ("_total",), "gauge": ("",), "info": ("_info",), "histogram": ("_bucket", "_sum", "_count")}
EVENT_ONLY = {
    "tapwatch_alerting_alerts_total": "per-window alerts: --alert-mode flows, after the first alert",
    "tapwatch_alerting_dead_lettered_total": "after the first malformed verdict",
    "tapwatch_alerting_episodes_suppressed_total": "after the first suppressed episode",
}
"""Labelled families with no child until an event: served as HELP/TYPE lines only on an idle pipeline."""


def rule_expressions() -> list[str]:
    return [
        rule["expr"]
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
    ]


def panel_expressions() -> list[str]:
    return [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]


def used_names() -> set[str]:
    return set().union(*(series_in(e) for e in rule_expressions() + panel_expressions()))


def registered_series() -> dict[str, str]:
    """Exposed series name -> type, of every family the metrics modules register (``_created`` left out)."""
    registry = CollectorRegistry()
    CaptureMetrics(registry)
    InferenceMetrics(registry)
    AlerterMetrics(registry)
    ConsoleMetrics(registry)  # CaptureMetrics registers tapwatch_build (the worker's and alerter's main do too)
    return {fam.name + s: fam.type for fam in registry.collect() for s in SUFFIX[fam.type]}


def test_catalogue_is_what_the_metrics_modules_register() -> None:
    registered = registered_series()
    assert set(CATALOGUE) == set(registered)
    for name, kind in registered.items():
        assert CATALOGUE[name].kind == kind, name
        assert CATALOGUE[name].meaning.strip(), name


def test_every_tapwatch_name_in_rules_and_panels_is_catalogued() -> None:
    used = used_names()
    assert len(used) > 30
    assert used - set(CATALOGUE) == set()


def test_recording_rules_are_level_metric_operation() -> None:
    shape = re.compile(r"^[a-z][a-z0-9_]*:[a-z][a-z0-9_]*:[a-z][a-z0-9_]*$")
    records = [
        rule["record"]
        for path in sorted(RULES.glob("*.yml"))
        for group in yaml.safe_load(path.read_text())["groups"]
        for rule in group["rules"]
        if "record" in rule
    ]
    assert records
    for name in records:
        assert shape.match(name), name
        level = name.split(":")[0]
        assert level in ("instance", "job"), name


# -- running processes ------------------------------------------------------------------------------------------------


@contextmanager
def tapwatch_process(logs: Path, name: str, *args: str, stdin: str | None = None) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``tapwatch ARGS`` from the repository root, logging to ``logs/NAME.log``; end it by its PID."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
    with (logs / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tapwatch.app", *args], cwd=REPO, env=env,
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
        try:
            yield proc
        finally:
            stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    end(proc)


def scrape(port: int, proc: subprocess.Popen[bytes], log: Path, timeout_s: float = 90) -> str:
    """The process's /metrics text once it answers (it fails if the process exits first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as answer:
                return str(answer.read().decode())
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise AssertionError(f"no /metrics on port {port}: {log.read_text()[-2000:]}")


def served(text: str) -> tuple[set[str], set[str]]:
    """(names with a sample, names with only a HELP line) in an exposition text."""
    samples = {m for m in re.findall(r"^([a-zA-Z_:][\w:]*)(?:\{| )", text, re.M)}
    helps = set(re.findall(r"^# HELP (\S+) ", text, re.M))
    return samples, helps - samples


def console_user(data: Path) -> None:
    data.mkdir(mode=0o700)
    secret = "pw-" + os.urandom(12).hex()
    done = subprocess.run([sys.executable, "-m", "tapwatch.app", "console", "user", "add", "ops", "--role", "admin",
                           "--data-dir", str(data)], input=f"{secret}\n{secret}\n", capture_output=True, text=True,
                          cwd=REPO, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr


def feed_udp(port: int, seconds: float) -> None:
    """A few datagrams a second to 127.0.0.1:PORT (nobody listens), for the live sensor to read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            s.sendto(b"tapwatch metric names test", ("127.0.0.1", port))
            time.sleep(0.1)


def test_names_used_are_served_by_running_processes(redis_server: RedisServer, tmp_path: Path) -> None:
    need(os.geteuid() == 0, "live capture on lo needs root (CAP_NET_RAW)")
    ports = {stage: free_port() for stage in ("capture", "worker", "alerter", "console", "web")}
    udp = free_port(socket.SOCK_DGRAM)
    console_user(tmp_path / "console")
    url = redis_server.url
    commands = {
        "capture": ["capture", "-i", "lo", "--bpf", f"udp and port {udp}", "--redis", url],
        "worker": ["worker", "--redis", url, "--model", str(MODEL)],
        "alerter": ["alerter", "--redis", url, "--card", str(CARD), "--no-stdout"],
        "console": ["console", "serve", "--redis", url, "--port", str(ports["web"]), "--data-dir",
                    str(tmp_path / "console")],
    }  # fmt: skip
    texts: dict[str, str] = {}
    with ExitStack() as stack:
        procs = {
            stage: stack.enter_context(tapwatch_process(tmp_path, stage, *cmd, "--metrics-port", str(ports[stage])))
            for stage, cmd in commands.items()
        }
        for stage, proc in procs.items():
            scrape(ports[stage], proc, tmp_path / f"{stage}.log")
        feed_udp(udp, 2.5)  # the meter refreshes its packet counter each second
        texts = {stage: scrape(ports[stage], proc, tmp_path / f"{stage}.log") for stage, proc in procs.items()}
    sampled: set[str] = set()
    help_only: set[str] = set()
    for text in texts.values():
        s, h = served(text)
        sampled |= s
        help_only |= h
    help_only -= sampled
    used = used_names() | {"process_cpu_seconds_total", "process_resident_memory_bytes"}
    assert used - sampled - help_only == set(), "names used in rules or panels that no process serves"
    assert used & help_only == set(EVENT_ONLY), "names served only as HELP lines are not the expected ones"
    for name in used:  # each served by the process the catalogue names
        if name in CATALOGUE:
            assert name in texts[CATALOGUE[name].process], name
    read = re.search(r"^tapwatch_capture_read_packets_total (\S+)$", texts["capture"], re.M)
    assert read and float(read[1]) > 0, "the live sensor read none of the datagrams"
    assert 'tapwatch_model_info{name="hybrid-lab"' in texts["worker"]


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib must reach 127.0.0.1 directly, whatever proxy the environment names."""
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

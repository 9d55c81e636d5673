"""Build the tapwatch Grafana dashboard (deploy/grafana/dashboards/tapwatch.json) from plain Python dicts.

The dashboard is code so that a change is a reviewable diff and every PromQL expression sits in one place;
tests/deploy/test_grafana_dashboard.py checks that the committed JSON is what this script writes now, and that
every ``tapwatch_*`` name in it is catalogued in features/metric_names.py. No dependency beyond the standard
library: the panels are a few dicts, which grafanalib would not make shorter.

Usage: python deploy/grafana/build_dashboard.py [--check]   (--check: exit 1 if the committed JSON is stale)
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "dashboards" / "tapwatch.json"
DATASOURCE = {"type": "prometheus", "uid": "tapwatch-prometheus"}
"""The uid the provisioned datasource (provisioning/datasources/prometheus.yml) declares."""
RATE = "[$__rate_interval]"
TAPWATCH_JOBS = '{job=~"tapwatch-.*"}'


@dataclass(frozen=True)
class Panel:
    """One panel: its title, unit, (expression, legend) targets and width; ``table`` panels show labels."""

    title: str
    unit: str
    targets: list[tuple[str, str]]
    width: int = 12
    kind: str = "timeseries"
    description: str = ""
    thresholds: list[float] = field(default_factory=list)


def quantiles(bucket: str, legend: str, qs: tuple[float, ...] = (0.5, 0.9, 0.99)) -> list[tuple[str, str]]:
    """histogram_quantile targets of a ``_bucket`` series, all instances together."""
    return [(f"histogram_quantile({q}, sum by (le) (rate({bucket}{RATE})))", f"{legend} p{int(q * 100)}") for q in qs]


def throughput() -> list[Panel]:
    return [
        Panel("Packets per second", "pps", [
            (f"sum by (instance) (rate(tapwatch_capture_read_packets_total{RATE}))", "read {{instance}}"),
            (f"sum by (instance) (rate(tapwatch_capture_packets_total{RATE}))", "in flows {{instance}}"),
        ], width=8),
        Panel("Flows closed per second, by reason", "ops", [
            (f"sum by (reason) (rate(tapwatch_capture_flows_total{RATE}))", "{{reason}}"),
        ], width=8),
        Panel("Windows per second, by stage", "ops", [
            (f"sum(rate(tapwatch_features_windows_total{RATE}))", "capture: produced"),
            (f"sum(rate(tapwatch_bus_sent_windows_total{RATE}))", "capture: sent to the bus"),
            (f"sum(rate(tapwatch_inference_windows_total{RATE}))", "workers: taken"),
            (f"sum(rate(tapwatch_inference_verdicts_total{RATE}))", "workers: verdicts"),
            (f"sum(rate(tapwatch_alerting_verdicts_total{RATE}))", "alerter: verdicts read"),
        ], width=8),
    ]  # fmt: skip


def losses() -> list[Panel]:
    return [
        Panel("Capture loss (kernel drops / packets offered)", "percentunit", [
            ("instance:tapwatch_capture_loss:ratio_rate5m", "{{instance}}"),
        ], width=8, thresholds=[0.03, 0.05], description="Warning at 3 %, critical at 5 % (Security Onion's levels)."),
        Panel("Drops per second, by stage and reason", "ops", [
            (f"sum by (instance) (rate(tapwatch_capture_kernel_drops_total{RATE}))", "capture: kernel {{instance}}"),
            (f"sum by (reason) (rate(tapwatch_bus_dropped_windows_total{RATE}))", "capture: windows {{reason}}"),
            (f"sum by (reason) (rate(tapwatch_bus_dropped_aggregates_total{RATE}))", "capture: aggregates {{reason}}"),
            (f"sum(rate(tapwatch_features_evicted_keys_total{RATE}))", "capture: window keys evicted"),
            (f"sum by (reason) (rate(tapwatch_inference_dead_lettered_windows_total{RATE}))",
             "worker: dead {{reason}}"),
            (f"sum(rate(tapwatch_inference_trimmed_verdicts_total{RATE}))", "worker: verdicts trimmed"),
            (f"sum by (reason) (rate(tapwatch_alerting_dead_lettered_total{RATE}))", "alerter: dead {{reason}}"),
            (f"sum(rate(tapwatch_console_alert_lines_total{{outcome=\"refused\"}}{RATE}))", "console: refused lines"),
        ], width=16),
    ]  # fmt: skip


def bus_and_inference() -> list[Panel]:
    return [
        Panel("Stream lag and pending", "short", [
            ("job:tapwatch_inference_lag_windows:max", "windows: lag (undelivered)"),
            ("job:tapwatch_inference_pending_windows:max", "windows: pending (unacked)"),
            ("max(tapwatch_alerting_verdicts_stream_length)", "verdicts: stream length"),
            ("sum(tapwatch_bus_buffered_windows)", "capture: buffered (Redis away)"),
        ], width=8, description="Lag is NaN (not drawn) on Redis older than 7.0."),
        Panel("Inference batch size", "short", [
            *quantiles("tapwatch_inference_batch_size_windows_bucket", "batch", (0.5, 0.99)),
            (f"sum(rate(tapwatch_inference_batch_size_windows_sum{RATE})) / "
             f"sum(rate(tapwatch_inference_batch_size_windows_count{RATE}))", "batch mean"),
        ], width=8),
        Panel("Inference latency", "s", [
            *quantiles("tapwatch_inference_latency_seconds_bucket", "model"),
            *quantiles("tapwatch_inference_expiry_to_verdict_seconds_bucket", "flow close to verdict", (0.99,)),
        ], width=8),
    ]  # fmt: skip


def detections() -> list[Panel]:
    return [
        Panel("Verdicts per second, by class", "ops", [
            (f"sum by (class) (rate(tapwatch_inference_verdicts_total{RATE}))", "{{class}}"),
        ], width=8),
        Panel("Alert lines per second, by family and severity", "ops", [
            (f"sum by (family, state) (rate(tapwatch_alerting_episode_lines_total{RATE}))", "{{family}} {{state}}"),
            (f"sum by (class, severity) (rate(tapwatch_alerting_alerts_total{RATE}))",
             "{{class}} severity {{severity}}"),
        ], width=8, description="Episode lines (--alert-mode episodes) by family and state; per-window alerts "
                                "(--alert-mode flows) by class and severity."),
        Panel("Open episodes", "short", [("sum(tapwatch_alerting_open_episodes)", "open or pending")], width=8),
        Panel("Suppressed per second, by reason", "ops", [
            (f"sum by (reason) (rate(tapwatch_alerting_suppressed_total{RATE}))", "alerts: {{reason}}"),
            (f"sum by (reason) (rate(tapwatch_alerting_episodes_suppressed_total{RATE}))", "episodes: {{reason}}"),
        ], width=8),
        Panel("Explanation budget", "ops", [
            (f"sum by (reason) (rate(tapwatch_alerting_explanations_skipped_total{RATE}))", "skipped: {{reason}}"),
            (f"sum(rate(tapwatch_alerting_explanation_latency_seconds_count{RATE}))", "explained"),
        ], width=8, description="Alerts sent without an explanation; skipped_budget, skipped_queue_full and "
                                "skipped_deadline: the budget is spent (--explain-per-second, --explain-cpu-share)."),
        Panel("Explanation latency", "s", quantiles("tapwatch_alerting_explanation_latency_seconds_bucket", "LIME"),
              width=8),
    ]  # fmt: skip


def processes() -> list[Panel]:
    return [
        Panel("Model and profile in use", "short", [
            ("tapwatch_model_info", "model"),
            ("tapwatch_profile_info", "profile"),
            ("tapwatch_build_info", "build"),
        ], width=12, kind="table"),
        Panel("Drift: share of novel windows", "percentunit", [
            ("tapwatch_inference_novel_share", "{{instance}}"),
        ], width=12, description="The site profile expects about 0.1 %."),
        Panel("Process CPU", "percentunit", [
            (f"rate(process_cpu_seconds_total{TAPWATCH_JOBS}{RATE})", "{{job}} {{instance}}"),
        ], width=12, description="CPU seconds per second: 1 = one core."),
        Panel("Process memory (resident)", "bytes", [
            (f"process_resident_memory_bytes{TAPWATCH_JOBS}", "{{job}} {{instance}}"),
        ], width=12),
    ]  # fmt: skip


def render(panel: Panel, panel_id: int, x: int, y: int) -> dict[str, Any]:
    """A Grafana panel dict at grid position (x, y), 8 units high."""
    table = panel.kind == "table"
    targets = [
        {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend,
         **({"format": "table", "instant": True} if table else {"range": True})}
        for i, (expr, legend) in enumerate(panel.targets)
    ]  # fmt: skip
    steps: list[dict[str, Any]] = [{"color": "green", "value": None}]
    steps += [{"color": c, "value": v} for c, v in zip(("orange", "red"), panel.thresholds, strict=False)]
    return {
        "id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
        "datasource": DATASOURCE, "gridPos": {"h": 8, "w": panel.width, "x": x, "y": y}, "targets": targets,
        "fieldConfig": {"defaults": {"unit": panel.unit, "thresholds": {"mode": "absolute", "steps": steps}},
                        "overrides": []},
        "options": {"showHeader": True} if table else {"legend": {"displayMode": "list", "placement": "bottom"},
                                                       "tooltip": {"mode": "multi"}},
        **({"transformations": [{"id": "labelsToFields", "options": {}}]} if table else {}),
    }  # fmt: skip


def dashboard() -> dict[str, Any]:
    """The whole dashboard; panels flow left to right, 24 grid units a row."""
    panels, x, y = [], 0, 0
    for panel_id, panel in enumerate(throughput() + losses() + bus_and_inference() + detections() + processes(), 1):
        if x + panel.width > 24:
            x, y = 0, y + 8
        panels.append(render(panel, panel_id, x, y))
        x += panel.width
    return {
        "uid": "tapwatch", "title": "tapwatch", "tags": ["tapwatch", "ids"], "timezone": "browser",
        "editable": True, "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"}, "annotations": {"list": []}, "templating": {"list": []},
        "panels": panels,
    }  # fmt: skip


def dashboard_json() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the committed JSON differs from the code")
    args = parser.parse_args(argv)
    if args.check:
        stale = not OUT.exists() or OUT.read_text() != dashboard_json()
        print(f"{OUT}: {'stale, run build_dashboard.py' if stale else 'up to date'}")
        return 1 if stale else 0
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(dashboard_json())
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

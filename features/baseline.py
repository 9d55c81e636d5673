"""A site baseline: what benign traffic looks like where tapwatch runs (the shared contract of the alerter's
rules, the learner that writes it and, later, the site profile).

It holds the volume view's thresholds (each a high quantile of a count over *benign* buckets, never fitted to
attacks, never under its floor), the benign medians that summaries put beside a value, the services benign
clients poll on a timer, and the window view's opening bars per model and family. JSON, never a pickle;
``python -m tapwatch.models.baseline`` writes it; the shipped one is ``models/site-baseline.json``.

>>> SiteBaseline().threshold("scan_ports")
15.0
"""

from __future__ import annotations

import json
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError

from tapwatch.features.aggregates import View
from tapwatch.features.errors import ConfigError

SHIPPED_BASELINE = "site-baseline.json"
BEACON_CV = 0.3
"""Relative jitter of connection intervals at or under which connections on a timer count as a beacon (a uniform
±50 % jitter is 0.29)."""

FAIL_RATIO = 0.5
SERVICE_SHARE = 0.5

FLOORS: dict[str, float] = {
    "scan_ports": 15, "scan_hosts": 15, "pair_flows": 30, "dos_flows": 500, "dos_packets": 5000,
    "dos_sources": 50, "beacon_min": 8,
}  # fmt: skip
"""The least each threshold may be, whatever the benign traffic (15 distinct ports: Zeek's scan default)."""

SERVICE_RULES = frozenset({"pair_flows", "dos_flows", "dos_packets"})
"""Counts whose thresholds are learned per destination port: 500 HTTPS connections in 10 s are a busy office, 500
SSH logins are password guessing."""


class SiteBaseline(BaseModel):
    """What benign traffic looks like at a site: the volume view's thresholds and benign medians, and the window
    view's opening bars per model and family (JSON; ``python -m tapwatch.models.baseline`` writes it)."""

    schema_version: int = 1
    bucket_s: float = 10.0
    thresholds: dict[str, float] = Field(default_factory=lambda: {**FLOORS, "beacon_cv": BEACON_CV})
    medians: dict[str, dict[str, float]] = Field(default_factory=dict)
    """view -> count -> median over benign buckets (what a summary puts beside a value)."""
    feature_medians: dict[str, float] = Field(default_factory=dict)
    """CIC feature -> median over benign flows (for window-view summaries)."""
    periodic: list[str] = Field(default_factory=list)
    """``host:port`` services benign clients reach on a timer (NTP, monitoring): not beacons."""
    window_open: dict[str, dict[str, int]] = Field(default_factory=dict)
    """model name -> family -> window-view evidence needed within a minute to open an episode: one more than the
    most that benign traffic gave any one host (the window view's false-episode budget)."""
    source: dict[str, Any] = Field(default_factory=dict)
    """What it was learned from: files, sha256s, flows, buckets, budget, command."""

    services: dict[str, dict[str, float]] = Field(default_factory=dict)
    """destination port -> the per-service rules' thresholds (``SERVICE_RULES``) learned for that port; a port the
    benign traffic never used has the floors (heavy use of a service nobody uses is itself the anomaly)."""
    service_medians: dict[str, dict[str, float]] = Field(default_factory=dict)
    """destination port -> the same counts' benign medians."""

    def threshold(self, name: str, port: int | None = None) -> float:
        """The threshold of rule count ``name``; for a per-service count, the one learned for ``port``."""
        if port is not None and name in SERVICE_RULES:
            return float(self.services.get(str(port), {}).get(name, FLOORS[name]))
        return float(self.thresholds.get(name, FLOORS.get(name, 0.0)))

    def median(self, view: View, name: str, port: int | None = None) -> float | None:
        if port is not None and name in SERVICE_RULES:
            v = self.service_medians.get(str(port), {}).get(name)
            return None if v is None else float(v)
        v = self.medians.get(view.value, {}).get(name)
        return None if v is None else float(v)


def load_baseline(path: str | Path) -> SiteBaseline:
    """Read a baseline file; :class:`ConfigError` naming the file and the first problem, on one line."""
    try:
        return SiteBaseline.model_validate(json.loads(Path(path).read_text()))
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "the file"
        raise ConfigError("baseline", f"{path}: {where}: {first['msg']}") from err
    except OSError as err:
        raise ConfigError("baseline", f"{path}: {err.strerror or err}") from err
    except ValueError as err:  # not JSON
        raise ConfigError("baseline", f"{path}: not a JSON site baseline ({err})") from err


def shipped_baseline() -> Path | None:
    """The baseline shipped in the ``tapwatch.models`` package (``site-baseline.json``), if installed."""
    spec = find_spec("tapwatch.models")
    for d in spec.submodule_search_locations or [] if spec else []:
        path = Path(d) / SHIPPED_BASELINE
        if path.is_file():
            return path
    return None

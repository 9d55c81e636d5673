"""The live sensor of a lab run: ``tapwatch run`` on the lab's tap while the scenario plays (acceptance issue).

``python -m lab SCENARIO --live`` wraps the run's traffic in :func:`live_sensor`: the shipped pipeline, out of the
box (the default model, site baseline and profile, no flags beyond the interface and the output), captures on
the tap beside tcpdump and writes alert lines as an operator gets them. Into ``OUT/live/``:

* ``alerts.jsonl``: the EVE lines ``tapwatch run`` wrote;
* ``arrivals.csv``: when each line reached that file, on the wall clock the lab's ``episodes.csv`` uses
  (``alert_id``, ``episode_id``, ``state``, ``arrived``: epoch seconds; the file is read every 0.1 s, so a
  line's arrival is late by at most that);
* ``sensor.log``: its standard error (the summary it prints when it stops);
* ``metrics.txt``: its ``/metrics`` just before it was told to stop (packets read, kernel drops, flows, the
  flow-close-to-verdict histogram...);
* ``sensor.json``: the command, when it was ready, its exit status, the lines, the counters of ``metrics.txt``
  that ``bench/bench_live.py`` reports, and each file's sha256.

The sensor starts before the first benign session and stops (SIGTERM: it scores every open flow and closes its
episodes) after the last; a run whose sensor did not become ready or exited with an error fails, nothing is
scored from it. :mod:`tapwatch.app.acceptance` (``--live RUN``) scores the lines against ``episodes.csv``.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from lab.topo_plan import LabError
from lab.topology import Topology

log = logging.getLogger(__name__)

METRICS_PORT = 9640
READY_S = 120.0
STOP_S = 600.0
POLL_S = 0.1
ARRIVALS = ("alert_id", "episode_id", "state", "arrived")


class Arrivals(threading.Thread):
    """Read new lines of ``alerts`` every :data:`POLL_S` s and write when each arrived to ``out``."""

    def __init__(self, alerts: Path, out: Path) -> None:
        super().__init__(name="live-arrivals", daemon=True)
        self.alerts, self.out = alerts, out
        self.stopping = threading.Event()
        self.lines = 0
        self.unreadable = 0

    def run(self) -> None:
        with self.out.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(ARRIVALS)
            offset, partial = 0, b""
            while True:
                last = self.stopping.is_set()  # one more read after the stop: the sensor's closing lines
                if self.alerts.exists():
                    with self.alerts.open("rb") as src:
                        src.seek(offset)
                        chunk = src.read()
                    offset += len(chunk)
                    now = time.time()
                    *done, partial = (partial + chunk).split(b"\n")
                    for raw in done:
                        self._record(writer, raw, now)
                    fh.flush()
                if last:
                    return
                self.stopping.wait(POLL_S)

    def _record(self, writer: Any, raw: bytes, now: float) -> None:
        if not raw.strip():
            return
        try:
            line = json.loads(raw)
            row = (line["ml"]["alert_id"], line["episode"]["id"], line["episode"]["state"], f"{now:.3f}")
        except (ValueError, KeyError, TypeError):
            self.unreadable += 1  # counted in sensor.json; scoring reads alerts.jsonl itself
            return
        writer.writerow(row)
        self.lines += 1


def _sha256(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def _ready(topo: Topology, proc: subprocess.Popen[Any], ns: str) -> float:
    """Wait until the sensor's ``/readyz`` answers 200 (its capture is open); the seconds it took."""
    probe = [sys.executable, "-c", "import urllib.request as u; "
             f"u.urlopen('http://127.0.0.1:{METRICS_PORT}/readyz', timeout=2)"]  # fmt: skip
    began = time.monotonic()
    while time.monotonic() - began < READY_S:
        if proc.poll() is not None:
            raise LabError(f"the live sensor exited with status {proc.returncode} before it was ready")
        if topo.run_in(ns, probe, timeout=10, check=False).returncode == 0:
            return time.monotonic() - began
        time.sleep(0.5)
    raise LabError(f"the live sensor was not ready within {READY_S:.0f} s")


def _scrape(topo: Topology, ns: str, to: Path) -> None:
    """The sensor's ``/metrics`` into ``to`` (nothing when it does not answer: the run still has its lines)."""
    url = f"http://127.0.0.1:{METRICS_PORT}/metrics"
    probe = [
        sys.executable,
        "-c",
        f"import sys, urllib.request as u; sys.stdout.write(u.urlopen('{url}').read().decode())",
    ]
    res = topo.run_in(ns, probe, timeout=30, check=False)
    if res.returncode == 0:
        to.write_text(res.stdout)
    else:
        log.warning("live sensor: /metrics did not answer before the stop")


COUNTED = (
    "tapwatch_capture_read_packets_total",
    "tapwatch_capture_kernel_drops_total",
    "tapwatch_capture_packets_total",
    "tapwatch_features_windows_total",
    "tapwatch_inference_verdicts_total",
)
LATENCY = "tapwatch_inference_expiry_to_verdict_seconds"


def counters(path: Path) -> dict[str, Any]:
    """The counters of ``COUNTED`` (summed over labels) and the flow-close-to-verdict histogram's buckets."""
    if not path.exists():
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, Any] = {name: 0.0 for name in COUNTED}
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            if sample.name in out:
                out[sample.name] += sample.value
            elif sample.name == LATENCY + "_bucket":
                buckets[sample.labels["le"]] = buckets.get(sample.labels["le"], 0.0) + sample.value
    out[LATENCY] = buckets
    return out


@contextlib.contextmanager
def live_sensor(topo: Topology, out: Path, extra: tuple[str, ...] = ()) -> Iterator[Path]:
    """Run ``tapwatch run`` on the tap for the block (see the module docstring); yield ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    alerts, ns = out / "alerts.jsonl", topo.tap.netns
    # a capture buffer asked for in the environment goes on the command line, so that sensor.json says which
    buffer = os.environ.get("TAPWATCH_CAPTURE_BUFFER_MIB")
    extra = (*extra, "--capture-buffer", buffer) if buffer else extra
    argv = [sys.executable, "-m", "tapwatch.app", "run", "--interface", topo.tap.iface, "--sensor", "lab-live",
            "--metrics-port", str(METRICS_PORT), "-o", str(alerts), *extra]  # fmt: skip
    began = time.time()
    with (out / "sensor.log").open("w") as err:
        proc = topo.start_in(ns, argv, stderr=err)
        tail = Arrivals(alerts, out / "arrivals.csv")
        tail.start()
        status: int | None = None
        try:
            ready_s = _ready(topo, proc, ns)
            time.sleep(1.0)  # the meter's packet socket opens a moment after the capture thread starts
            log.info("live sensor ready after %.1f s (pid %s)", ready_s, proc.pid)
            yield out
        finally:
            if proc.poll() is None:
                _scrape(topo, ns, out / "metrics.txt")
                proc.send_signal(signal.SIGTERM)
            try:
                status = proc.wait(timeout=STOP_S)
            except subprocess.TimeoutExpired:
                log.error("live sensor: no exit %.0f s after SIGTERM; stopping it", STOP_S)
                status = topo.stop(proc)
            if proc in topo.procs:
                topo.procs.remove(proc)
            tail.stopping.set()
            tail.join(timeout=30)
    record = {
        "command": argv, "started": round(began, 3), "ready_s": round(ready_s, 2), "exit_status": status,
        "lines": tail.lines, "unreadable_lines": tail.unreadable, "stopped": round(time.time(), 3),
        "metrics": counters(out / "metrics.txt"),
        "sha256": {p.name: _sha256(p) for p in (alerts, out / "arrivals.csv", out / "sensor.log")},
    }  # fmt: skip
    (out / "sensor.json").write_text(json.dumps(record, indent=1) + "\n")
    if status != 0:
        raise LabError(f"the live sensor exited with status {status}: see {out / 'sensor.log'}")

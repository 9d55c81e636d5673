#!/usr/bin/env python3
"""Service benchmark: windows/s and latency of ``tapwatch worker`` + ``tapwatch alerter`` on Redis, against ONNX
Runtime alone, in one run. A benchmark, not a test: run it by hand on a quiet machine::

    python bench/bench_service.py [--model models/hybrid-cic.onnx] [--windows 5000] [--latency-s 10] [--profile]

What it does, with the best model available (``--model``; else the shipped ``models/hybrid-cic.onnx``; else the
tiny test model of :mod:`tests.support.tiny_model`, which says little about a real model's overhead):

1. Windows: real flows of ``capture/samples/sample.pcap`` and of the largest Ethernet pcaps of
   ``../shared/pcaps``, windowed with the model card (the sensor's :class:`Windower`), cycled to ``--windows``.
2. ONNX Runtime alone: the same model, batch and intra-op threads as the worker, on those windows.
3. A private ``redis-server`` (AOF on, ``appendfsync everysec``) on a free loopback port; then for 1 and 2
   workers (separate processes, as deployed) and one alerter (``-o`` file and the Redis sink):
   * throughput: the services start and are frozen (SIGSTOP); the stream is filled with every window; they are
     thawed at once; windows/s = windows / (time the last verdict was handled by the alerter − thaw time);
     the workers' rate is the same up to their last verdict. CPU time per process comes from /proc.
   * latency at half that end-to-end rate: a rate-limited producer stamps each window's newest flow end and
     expiry with the time it sends it, one XADD per window, and renames its hosts at every pass over the windows
     (new hosts, so episodes keep opening); expiry → verdict is ``Verdict.decided_at_ms`` minus the stamp. An
     episode's open line names the flow end of the window that opened it: verdict → open line is the line's entry
     id on ``tapwatch:alerts`` minus that window's verdict's entry id on ``tapwatch:verdicts`` (both Redis's
     clock), expiry → open line the same entry id minus the stamp.
4. With ``--profile``, the worker loop and then the alerter loop (no explanations) also run in this process
   under cProfile on the same Redis, and the functions that take their time are listed.
   The table also counts the services' Redis commands per window (INFO commandstats), which do not depend
   on the machine's load.
5. The Markdown table is printed and written to ``bench/out/bench_service.md`` (gitignored).

Overhead = 1 − (end-to-end windows/s with 1 worker ÷ ONNX Runtime alone). The issue's targets (2 cores):
overhead ≤ 30 %; at half the sustained rate, p99 expiry → verdict ≤ 100 ms and p99 evidence → open line ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import redis
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.features.schema import WindowEntry
from tapwatch.features.window import Windower
from tapwatch.inference.model import Model, load_model

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
SHARED = (REPO / ".." / "shared" / "pcaps").resolve()
SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- machine, processes, Redis ---------------------------------------------------------------------------------


def machine_info() -> dict[str, str]:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())  # fmt: skip
    import onnxruntime

    redis_v = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.split()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs",
        "system": f"{platform.system()} {platform.release()}, Python {platform.python_version()}, "
        f"onnxruntime {onnxruntime.__version__}, redis {next((w[2:] for w in redis_v if w.startswith('v=')), '?')}",
        "load": load_average(),
    }


def load_average() -> str:
    return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of one process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs, to tell how much of the machine other jobs took."""
    vals = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + vals[4]
    return float(sum(vals) - idle), float(sum(vals))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A private redis-server on a free loopback port, AOF on (everysec), in a temporary directory."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.dir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.client = redis.Redis.from_url(self.url)
        self.start()

    def start(self) -> None:
        """Start it (again, after :meth:`stop`: same port, same folder, so the append-only file is read back)."""
        args = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
                "--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM: Redis writes and syncs its append-only file, then exits."""
        self.proc.terminate()
        self.proc.wait(30)


PORT_LINE = re.compile(rb"serving /metrics /livez /readyz on http://[^:\s]+:(\d+)")


class Service:
    """``python -m tapwatch.app <argv>`` with the given environment; our child, stopped by its PID.

    Its metrics port is one the service takes itself (``--metrics-port 0``) and logs: a port chosen here could be
    taken by another process before the service binds it."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        base = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
        cmd = [sys.executable, "-m", "tapwatch.app", *argv, "--metrics-port", "0"]
        self._log_from = log.stat().st_size if log.exists() else 0  # a log may hold earlier incarnations' lines
        with log.open("ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env={**base, **(env or {})})
        self.log = log
        self._port = 0

    @property
    def port(self) -> int:
        """The metrics port this incarnation said it took; 0 until it has."""
        if not self._port and self.log.exists():
            with self.log.open("rb") as fh:
                fh.seek(self._log_from)
                found = PORT_LINE.search(fh.read())
            self._port = int(found.group(1)) if found else 0
        return self._port

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.log.name}: exited {self.proc.returncode}: {self.log.read_text()[-2000:]}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status == 200
        except OSError:
            return False

    def metric(self, name: str) -> float:
        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def wait(cond: Any, timeout_s: float, what: str, step_s: float = 0.02) -> float:
    """Poll until ``cond()``; return the wall-clock time it first held."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(step_s)
    return time.time()


# -- windows ---------------------------------------------------------------------------------------------------


def pick_pcaps(limit: int) -> list[Path]:
    found = [SAMPLE]
    manifest = SHARED / "MANIFEST.csv"
    if manifest.exists():
        rows = [r for r in csv.DictReader(manifest.open()) if r["linktype"] == "1"]
        rows.sort(key=lambda r: -int(r["packets"]))
        found += [SHARED / r["file"] for r in rows[:limit] if (SHARED / r["file"]).exists()]
    return found


def base_windows(model: Model, pcaps: list[Path]) -> list[WindowEntry]:
    """One window per flow of each pcap (each read on its own, keys do not mix across files)."""
    out: list[WindowEntry] = []
    for p in pcaps:
        windower = Windower(model.card)
        source = PcapSource([str(p)], CaptureConfig(sensor="bench"), CaptureMetrics(CollectorRegistry()))
        try:
            out += [windower.add(r) for r in source]
        except Exception as err:  # a pcap NFStream cannot read is skipped, not fatal for a benchmark
            print(f"  skipped {p.name}: {err}", file=sys.stderr)
    return out


class Feeder:
    """Window entries with a fresh newest-flow stamp per send (the tensor bytes are encoded once)."""

    def __init__(self, windows: list[WindowEntry]) -> None:
        self.windows = windows
        self.fields = [w.encode() for w in windows]
        self.i = 0

    def next(self, now_ms: int, fresh: bool = False) -> dict[str, str | bytes]:
        """The next window; ``fresh``: its host renamed at each pass over the windows (new hosts, so episodes keep
        opening) and its flow ended at ``now_ms`` (the time an episode line names)."""
        k, cycle = self.i % len(self.windows), self.i // len(self.windows)
        self.i += 1
        if fresh:
            return window_at(self.fields[k], self.i, cycle, now_ms, ended_ago_ms=0)
        meta = dataclasses.replace(self.windows[k].flow, flow_id=self.i, expired_at_ms=now_ms)
        return {**self.fields[k], "flow": meta.to_json()}


def window_at(base: dict[str, Any], flow_id: int, cycle: int, now_ms: int, ended_ago_ms: int = 100) -> dict[str, Any]:
    """A window's fields to send again: its own flow id, its hosts renamed for pass ``cycle``, its flow ended
    ``ended_ago_ms`` before ``now_ms`` and expired at ``now_ms``."""
    flow = json.loads(base["flow"])
    key = base["key"]
    for side in ("src_ip", "dst_ip"):
        if flow[side] == key:
            flow[side] = renamed(key, cycle)
    end = now_ms - ended_ago_ms
    length = max(0, flow["last_seen_ms"] - flow["first_seen_ms"])
    flow.update(flow_id=flow_id, last_seen_ms=end, first_seen_ms=end - length, expired_at_ms=now_ms)
    return {**base, "key": renamed(key, cycle), "flow": json.dumps(flow, separators=(",", ":"))}


def renamed(host: str, cycle: int) -> str:
    """``a.b.c.d`` as ``10.n.c.d`` for pass ``cycle`` (new hosts, new episodes); other keys get a suffix."""
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):
        return f"10.{cycle % 250 + 1}.{parts[2]}.{parts[3]}"
    return f"{host}-{cycle}"


# -- measurements ----------------------------------------------------------------------------------------------


def ort_alone(model: Model, windows: list[WindowEntry], batch: int, seconds: float = 3.0) -> tuple[float, float]:
    """Windows/s of ``model.predict`` on full batches (median of 3 runs of ``seconds``), and its CPU ms per window
    (this process's CPU time, which other jobs on the machine disturb much less than wall time)."""
    x = np.stack([w.tensor for w in windows])
    batches = [x[i : i + batch] for i in range(0, len(x) - batch + 1, batch)] or [x]
    model.predict(batches[0])
    rates, cpu_ms = [], []
    for _ in range(3):
        n, start, cpu0, k = 0, time.perf_counter(), time.process_time(), 0
        while time.perf_counter() - start < seconds:
            n += len(model.predict(batches[k % len(batches)]))
            k += 1
        rates.append(n / (time.perf_counter() - start))
        cpu_ms.append((time.process_time() - cpu0) * 1000 / n)
    return statistics.median(rates), statistics.median(cpu_ms)


def redis_calls(client: redis.Redis) -> dict[str, int]:
    """Calls per Redis command so far (INFO commandstats), to count the services' commands per window."""
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in client.info("commandstats").items()}


def calls_per_window(run: dict[str, Any], n: int) -> str:
    """The services' Redis commands per window, the busiest first (the bench's own polling excluded)."""
    skip = {"xinfo", "xinfo|groups", "xinfo|stream", "info", "ping"}
    calls = {k: v for k, v in run["redis_calls"].items() if k not in skip and v > 0}
    top = sorted(calls.items(), key=lambda kv: -kv[1])[:5]
    return f"{sum(calls.values()) / n:.2f} (" + ", ".join(f"{k} {v / n:.2f}" for k, v in top) + ")"


def group_done(client: redis.Redis, stream: str, group: str, total: int) -> bool:
    try:
        info = [g for g in client.xinfo_groups(stream) if g["name"].decode() == group]
    except redis.ResponseError:
        return False
    if not info or info[0]["pending"]:
        return False
    read = info[0].get("entries-read")
    if read is not None:
        return bool(read >= total)
    # Redis reports no entries-read when it cannot tell: compare the group's last id with the stream's.
    s = client.xinfo_stream(stream)
    # Redis 6.2 has neither entries-read nor entries-added: every entry was added before this is asked.
    return bool(info[0]["last-delivered-id"] == s["last-generated-id"] and s.get("entries-added", total) >= total)


@dataclasses.dataclass
class Stack:
    """One alerter and N workers on a Redis, for one configuration."""

    workers: list[Service]
    alerter: Service
    redis: RedisServer

    @property
    def all(self) -> list[Service]:
        return [*self.workers, self.alerter]

    def stop(self) -> None:
        for s in self.all:
            s.stop()


@dataclasses.dataclass(frozen=True)
class Setup:
    """One measured configuration: how many workers, and whether the alerter explains (its default) or not."""

    workers: int
    explain: bool

    @property
    def label(self) -> str:
        return f"{self.workers} worker{'s' if self.workers > 1 else ''}" + ("" if self.explain else ", --no-explain")


def start_stack(r: RedisServer, args: argparse.Namespace, setup: Setup, tmp: Path) -> Stack:
    r.client.flushall()
    n_workers = setup.workers
    tag = f"{n_workers}{'' if setup.explain else 'n'}"
    common = ["--redis", r.url]
    workers = [Service(["worker", *common, "--model", str(args.model), "--batch-size", str(args.batch),
                        "--threads", str(args.threads), "--consumer", f"w{i}", "--reload-poll", "0"],
                       tmp / f"worker{tag}-{i}.log") for i in range(n_workers)]  # fmt: skip
    explain = [] if setup.explain else ["--no-explain"]
    alerter = Service(["alerter", *common, "--card", str(args.card), "-o", str(tmp / f"alerts{tag}.jsonl"),
                       "--consumer", "a1", *explain], tmp / f"alerter{tag}.log")  # fmt: skip
    stack = Stack(workers, alerter, r)
    for s in stack.all:
        wait(s.ready, 60, f"{s.log.name} ready", 0.1)
    return stack


def throughput(stack: Stack, feeder: Feeder, n: int) -> dict[str, Any]:
    client = stack.redis.client
    for s in stack.all:
        s.proc.send_signal(signal.SIGSTOP)
    now = int(time.time() * 1000)
    for start in range(0, n, 500):
        pipe = client.pipeline(transaction=False)
        for _ in range(min(500, n - start)):
            pipe.xadd("tapwatch:windows", feeder.next(now))
        pipe.execute()
    pids = {"worker": [w.proc.pid for w in stack.workers], "alerter": [stack.alerter.proc.pid],
            "redis": [stack.redis.proc.pid]}  # fmt: skip

    def cpu() -> dict[str, float]:
        return {k: sum(cpu_s(p) for p in v) for k, v in pids.items()}

    cmds0 = redis_calls(client)
    cpu0, busy0 = cpu(), machine_busy()
    t0 = time.time()
    for s in stack.all:
        s.proc.send_signal(signal.SIGCONT)
    t_workers = wait(lambda: group_done(client, "tapwatch:windows", "workers", n), 900, "workers")
    cpu_w = cpu()
    t_alerter = wait(lambda: group_done(client, "tapwatch:verdicts", "alerters", n), 900, "alerter")
    cpu_a, busy1 = cpu(), machine_busy()
    cmds = {k: v - cmds0.get(k, 0) for k, v in redis_calls(client).items()}
    wall, wall_w = t_alerter - t0, t_workers - t0
    ort_s = sum(w.metric("tapwatch_inference_latency_seconds_sum") for w in stack.workers)
    k = len(stack.workers)
    return {
        "e2e": n / wall, "workers_rate": n / wall_w, "alerts": client.xlen("tapwatch:alerts"),
        "cpu_ms": {p: (cpu_a[p] - cpu0[p]) * 1000 / n for p in pids},
        "cpu": {"worker": (cpu_w["worker"] - cpu0["worker"]) / wall_w / k,
                "alerter": (cpu_a["alerter"] - cpu0["alerter"]) / wall,
                "redis": (cpu_a["redis"] - cpu0["redis"]) / wall},
        "ort_share": ort_s / (wall_w * k),
        "explain_s": stack.alerter.metric("tapwatch_alerting_explanation_latency_seconds_sum"),
        "explained": stack.alerter.metric("tapwatch_alerting_explanation_latency_seconds_count"), "wall": wall,
        "machine_busy": (busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]),
        "redis_calls": cmds,
        "others_cores": (busy1[0] - busy0[0]) / CLK_TCK / wall - sum(cpu_a[p] - cpu0[p] for p in pids) / wall,
    }  # fmt: skip


def latency(stack: Stack, feeder: Feeder, rate: float, seconds: float) -> dict[str, Any]:
    """Send at ``rate`` windows/s for ``seconds``; percentiles of expiry → verdict, verdict → open line and expiry
    → open line (ms)."""
    client = stack.redis.client
    base_windows_read = client.xinfo_stream("tapwatch:windows").get("entries-added", 0)
    base_verdicts = client.xinfo_stream("tapwatch:verdicts").get("entries-added", 0)
    sent: dict[str, int] = {}
    explained0 = stack.alerter.metric("tapwatch_alerting_explanation_latency_seconds_count")
    total = int(rate * seconds)
    start = time.time()
    i = 0
    while i < total:
        due = start + i / rate
        now = time.time()
        if now < due:
            time.sleep(due - now)
        pipe = client.pipeline(transaction=False)
        stamps = []
        while i < total and start + i / rate <= time.time():  # behind schedule: send what is due at once
            stamp = int(time.time() * 1000)
            pipe.xadd("tapwatch:windows", feeder.next(stamp, fresh=True))
            stamps.append(stamp)
            i += 1
        for eid, stamp in zip(pipe.execute(), stamps, strict=True):
            sent[eid.decode()] = stamp
    offered = total / (time.time() - start)
    wait(lambda: group_done(client, "tapwatch:windows", "workers", base_windows_read + total), 120, "workers")
    wait(lambda: group_done(client, "tapwatch:verdicts", "alerters", base_verdicts + total), 120, "alerter")
    to_verdict = []
    first = next(iter(sent))
    for _, f in client.xrange("tapwatch:verdicts", min=first):
        if f[b"window_id"].decode() in sent:
            to_verdict.append(int(f[b"at"]) - json.loads(f[b"flow"])["expired_at_ms"])
    # an open line names its episode's newest evidence time: the flow end of the window that opened it, which
    # this run stamped with the send time; the verdict of that window is the first verdict of that flow end
    verdict_ms: dict[int, int] = {}
    for eid, f in client.xrange("tapwatch:verdicts", min=first):
        if f[b"window_id"].decode() in sent:
            end = json.loads(f[b"flow"])["last_seen_ms"]
            verdict_ms.setdefault(end, int(eid.decode().split("-")[0]))
    to_open, from_verdict = [], []
    explained = stack.alerter.metric("tapwatch_alerting_explanation_latency_seconds_count") - explained0
    for eid, f in client.xrange("tapwatch:alerts", min=first):
        eve = json.loads(f[b"eve"])
        if eve.get("episode", {}).get("state") != "open":
            continue
        end = iso_ms(eve["episode"]["last_seen"])
        at = int(eid.decode().split("-")[0])
        if end in verdict_ms:
            to_open.append(at - end)
            from_verdict.append(at - verdict_ms[end])
    return {"offered": offered, "verdict": pct(to_verdict), "open": pct(to_open), "verdict_open": pct(from_verdict),
            "n_open": len(to_open), "n_explained": int(explained), "load": load_average()}  # fmt: skip


def iso_ms(text: str) -> int:
    """Milliseconds since the epoch of an episode line's ``2017-07-07T11:52:45.123Z``."""
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp() * 1000 + 0.5)


def pct(values: list[int]) -> tuple[float, float, float]:
    if not values:
        return (float("nan"),) * 3
    a = np.asarray(values, dtype=np.float64)
    return float(np.percentile(a, 50)), float(np.percentile(a, 99)), float(a.max())


# -- report ----------------------------------------------------------------------------------------------------


def limits(run: dict[str, Any], setup: Setup) -> str:
    cpu = run["cpu"]
    alerter_bound = run["e2e"] < 0.8 * run["workers_rate"]
    parts = [
        f"the workers verdicted at {run['workers_rate']:.0f}/s, each at {cpu['worker']:.0%} of a core "
        f"(ONNX Runtime {run['ort_share']:.0%} of its wall time; the rest is Python: Redis client, decoding, "
        "verdict encoding)",
        f"the alerter finished at {run['e2e']:.0f}/s at {cpu['alerter']:.0%} of a core"
        + (f", {run['explained']:.0f} LIME explanations taking {run['explain_s']:.1f} s" if run["explained"] else ""),
        f"redis {cpu['redis']:.0%}",
        f"the machine {run['machine_busy']:.0%} busy, other processes taking {run['others_cores']:.1f} cores",
    ]
    if alerter_bound and cpu["alerter"] > 0.85:
        verdict = "the alerter's CPU (per-verdict decoding and evidence, per-line EVE JSON and file write" + (
            ", LIME explanations of the episodes it opens)" if run["explained"] else ")"
        )
    elif alerter_bound:
        verdict = "the alerter, waiting on Redis (a transaction per batch, a write per line) while the machine is busy"
    elif run["machine_busy"] > 0.9:
        verdict = "CPU: both cores busy (workers, alerter, Redis, and other processes)"
    else:
        verdict = "the workers"
    return f"{verdict}: " + "; ".join(parts)


def profile_worker(r: RedisServer, model: Model, feeder: Feeder, n: int, top: int = 12) -> list[str]:
    """cProfile of the worker loop in this process on the same Redis: where a window's time goes."""
    import cProfile
    import io
    import pstats

    from tapwatch.bus.streams import RedisBus
    from tapwatch.inference.config import WorkerConfig
    from tapwatch.inference.metrics import InferenceMetrics
    from tapwatch.inference.worker import Worker

    r.client.flushall()
    now = int(time.time() * 1000)
    for start in range(0, n, 500):
        pipe = r.client.pipeline(transaction=False)
        for _ in range(min(500, n - start)):
            pipe.xadd("tapwatch:windows", feeder.next(now))
        pipe.execute()
    worker = Worker(RedisBus(r.url), model, WorkerConfig(block_ms=1, consumer="profile"),
                    InferenceMetrics(CollectorRegistry()))  # fmt: skip
    prof = cProfile.Profile()
    started, done = time.perf_counter(), 0
    prof.enable()
    while (k := worker.run_once()) > 0:
        done += k
    prof.disable()
    wall = time.perf_counter() - started
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    body = [ln for ln in out.getvalue().splitlines() if ln.strip()][-top - 1 :]
    return [f"Worker loop in-process, profiled: {done / wall:.0f} windows/s under cProfile; top functions by own time:",
            "", "```", *body, "```"]  # fmt: skip


def profile_alerter(r: RedisServer, args: argparse.Namespace, tmp: Path, top: int = 12) -> list[str]:
    """cProfile of the alerter loop (no explanations, ``-o`` file and the Redis sink) in this process, on the
    verdicts :func:`profile_worker` left on the stream."""
    import cProfile
    import io
    import pstats

    from tapwatch.alerting.metrics import AlerterMetrics
    from tapwatch.alerting.service import build_alerter
    from tapwatch.alerting.settings import AlerterSettings
    from tapwatch.bus.streams import RedisBus

    settings = AlerterSettings(redis_url=r.url, card=str(args.card), explain=False, block_ms=1,
                               alert_file=str(tmp / "profile-alerts.jsonl"), alerter_consumer="profile")  # fmt: skip
    alerter = build_alerter(settings, RedisBus(r.url), AlerterMetrics(CollectorRegistry()))
    prof = cProfile.Profile()
    started, done = time.perf_counter(), 0
    prof.enable()
    while (k := alerter.run_once()) > 0:
        done += k
    prof.disable()
    wall = time.perf_counter() - started
    alerter.close()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(top)
    body = [ln for ln in out.getvalue().splitlines() if ln.strip()][-top - 1 :]
    head = (f"Alerter loop in-process, profiled (no explanations): {done / wall:.0f} verdicts/s under cProfile, "
            f"{r.client.xlen('tapwatch:alerts')} alerts; top functions by own time:")  # fmt: skip
    return [head, "", "```", *body, "```"]


def ceiling(run: dict[str, Any], setup: Setup, cores: int = 2) -> float:
    """Windows/s the measured CPU per window allows on ``cores`` idle cores: the least of all cores over all the
    CPU, one core per worker over the workers', and, without explanations (then its loop is its one busy
    thread), one core over the alerter's."""
    ms = run["cpu_ms"]
    total = ms["worker"] + ms["alerter"] + ms["redis"]
    bounds = [cores * 1000 / total, setup.workers * 1000 / ms["worker"]]
    if not setup.explain:
        bounds.append(1000 / ms["alerter"])
    return float(min(bounds))


def report(args: argparse.Namespace, info: dict[str, str], which: str, mix: str, ort: float, ort_ms: float,
           runs: dict[Setup, dict[str, Any]], lat: dict[Setup, dict[str, Any]]) -> str:  # fmt: skip
    ks = list(runs)

    def row(name: str, fn: Any) -> str:
        return f"| {name} | " + " | ".join(fn(k) for k in ks) + " |"

    def ms(t: tuple[float, float, float]) -> str:
        return f"{t[0]:.0f} / {t[1]:.0f} (max {t[2]:.0f})"

    def one(k: Setup, text: str) -> str:
        return text if k.workers == 1 else "—"

    lines = [
        "# tapwatch service benchmark", "",
        f"Model: {which}. Batch {args.batch}, {args.threads} ONNX Runtime thread(s) per worker; {args.windows} "
        f"windows per throughput run ({mix}). Redis: private redis-server, AOF on (appendfsync everysec). "
        "Workers and the alerter are separate processes (`tapwatch worker`, `tapwatch alerter -o FILE` with the "
        "Redis sink, default settings otherwise: explanations at most 10/s, 0.25 CPU-s/s, 200 ms deadline).", "",
        f"Machine: {info['cpu']}; {info['system']}. Before: {info['load']}; after: {info['load_after']}.", "",
        "| | " + " | ".join(k.label for k in ks) + " |",
        "|---|" + "---|" * len(ks),
        row("windows/s end to end (stream → workers → alerter done)", lambda k: f"{runs[k]['e2e']:.0f}"),
        row("windows/s through the workers (last verdict)", lambda k: f"{runs[k]['workers_rate']:.0f}"),
        row("ONNX Runtime alone, same model, batch and threads, windows/s", lambda k: one(k, f"{ort:.0f}")),
        row("overhead = 1 − end to end ÷ ORT alone", lambda k: one(k, f"{1 - runs[k]['e2e'] / ort:.0%}")),
        row("same, workers only (1 − verdicts/s ÷ ORT alone)",
            lambda k: one(k, f"{1 - runs[k]['workers_rate'] / ort:.0%}")),
        row("CPU ms per window: ONNX Runtime alone / all workers / alerter / redis",
            lambda k: f"{ort_ms:.3f} / " + " / ".join(f"{runs[k]['cpu_ms'][p]:.3f}"
                                                      for p in ("worker", "alerter", "redis"))),
        row("CPU overhead of the workers = 1 − ORT alone ÷ workers, per window (load-independent)",
            lambda k: f"{1 - ort_ms / runs[k]['cpu_ms']['worker']:.0%}"),
        row("CPU-bound ceiling on 2 idle cores from those CPU costs, windows/s (see ceiling())",
            lambda k: f"{ceiling(runs[k], k):.0f}"),
        row("alerts in the throughput run", lambda k: str(runs[k]["alerts"])),
        row(f"latency run: offered windows/s ({'fixed' if args.rate else '½ of end to end'})",
            lambda k: f"{lat[k]['offered']:.0f}"),
        row("expiry → verdict, ms p50 / p99", lambda k: ms(lat[k]["verdict"])),
        row("verdict that opens an episode → its open line on `tapwatch:alerts`, ms p50 / p99",
            lambda k: ms(lat[k]["verdict_open"])),
        row("expiry of the flow that opens an episode → its open line, ms p50 / p99", lambda k: ms(lat[k]["open"])),
        row("open lines (explained by LIME) in the latency run",
            lambda k: f"{lat[k]['n_open']} ({lat[k]['n_explained']})"),
        row("CPU, % of one core: each worker / alerter / redis",
            lambda k: " / ".join(f"{runs[k]['cpu'][p]:.0%}" for p in ("worker", "alerter", "redis"))),
        row("Redis commands per window in the throughput run, scripts' inner commands included (top 5)",
            lambda k: calls_per_window(runs[k], args.windows)),
        row("load average after the latency run", lambda k: lat[k]["load"].removeprefix("load average ")),
        "", "What limits the rate:", "",
        *[f"- {k.label}: {limits(runs[k], k)}." for k in ks],
    ]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, help="ONNX model [shipped models/hybrid-cic.onnx, else the tiny one]")
    ap.add_argument("--card", type=Path, help="its card [NAME.card.json or NAME.json beside it]")
    ap.add_argument("--windows", type=int, default=5_000, help="windows per throughput run")
    ap.add_argument("--latency-s", type=float, default=10.0, help="seconds of the rate-limited latency run")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--pcaps", type=int, default=40, help="largest Ethernet pcaps of ../shared to take flows from")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument(
        "--explain",
        choices=["both", "on", "off"],
        default="both",
        help="measure with the alerter's LIME explanations on (its default), off, or both",
    )
    ap.add_argument("--profile", action="store_true", help="also profile the worker loop (cProfile, in-process)")
    ap.add_argument("--out", type=Path, default=OUT / "bench_service.md", help="the Markdown report")
    ap.add_argument("--rate", type=float, help="latency run rate, windows/s [half the measured end-to-end rate]")
    args = ap.parse_args()
    info = machine_info()
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    shipped = REPO / "models" / "hybrid-cic.onnx"
    which = None
    if args.model is None and shipped.exists():
        args.model = shipped
    if args.model is None:
        from tests.support.tiny_model import write_tiny_model

        args.model, args.card = write_tiny_model(tmp / "model", window_length=10).paths
        which = "the tiny test model of tests.support.tiny_model (no shipped model found)"
    model = load_model(args.model, args.card, args.threads)
    args.card = args.card or model.card_path
    if which is None:
        shipped_note = ", the shipped deployment model" if args.model.resolve() == shipped.resolve() else ""
        which = f"{model.card.name} {model.card.version} ({args.model}{shipped_note})"
    print(f"model: {which}", file=sys.stderr)
    windows = base_windows(model, pick_pcaps(args.pcaps))
    over = float(np.mean(1 - model.predict(np.stack([w.tensor for w in windows]))[:, model.benign_index]
                         >= model.threshold))  # fmt: skip
    mix = f"{len(windows)} distinct windows from real pcaps, {over:.0%} over the threshold, cycled"
    print(f"windows: {mix}", file=sys.stderr)
    ort, ort_ms = ort_alone(model, windows, args.batch)
    print(f"ONNX Runtime alone: {ort:.0f} windows/s, {ort_ms:.3f} CPU ms per window", file=sys.stderr)
    r = RedisServer(tmp)
    runs: dict[Setup, dict[str, Any]] = {}
    lat: dict[Setup, dict[str, Any]] = {}
    modes = {"both": [True, False], "on": [True], "off": [False]}[args.explain]
    setups = [Setup(k, e) for e in modes for k in args.workers]
    try:
        for setup in setups:
            stack = start_stack(r, args, setup, tmp)
            try:
                runs[setup] = throughput(stack, Feeder(windows), args.windows)
                print(f"{setup.label}: {runs[setup]['e2e']:.0f} windows/s end to end", file=sys.stderr)
                lat[setup] = latency(stack, Feeder(windows), args.rate or runs[setup]["e2e"] / 2, args.latency_s)
                print(f"{setup.label}: latency {lat[setup]}", file=sys.stderr)
            finally:
                stack.stop()
        prof = []
        if args.profile:
            prof = profile_worker(r, model, Feeder(windows), args.windows)
            prof += ["", *profile_alerter(r, args, tmp)]
    finally:
        r.stop()
    info["load_after"] = load_average()
    text = report(args, info, which, mix, ort, ort_ms, runs, lat)
    if prof:
        text += "\n" + "\n".join(prof) + "\n"
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

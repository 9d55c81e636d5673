#!/usr/bin/env python3
"""Kills and restarts at load (issue 17): every window gets a verdict, no alert line twice, no episode lost.

    python bench/faults.py [--seconds 120] [--out docs/faults.md]

Real processes on a private Redis (``redis-server``, AOF on): a sensor, two ``tapwatch worker``, one ``tapwatch
alerter`` (episodes) and ``tapwatch console serve --redis`` (the console's consumer of ``tapwatch:alerts``). The
sensor is this script run as a process of its own (``--sensor``): it writes windows of real pcaps through the
sensor's own :class:`~tapwatch.bus.publish.Publisher`, paced, each with a flow id of its own, its hosts renamed at
every pass over the windows and its flow times moved to the wall clock, so that episodes open and close during the
run. (``tapwatch capture`` itself reads a pcap as fast as it can; its kill is ``tests/unit/test_meter_process.py``:
the meter ends with it.)

1. **Capacity**: a backlog of windows is put on the stream; the windows/s of the whole pipeline draining it (the
   workers, then the alerter: the last verdict read and nothing pending in either group) is C.
2. **Load** at C/2 for ``--seconds``, and at fixed points of it, each stage killed and started again one second
   later, as a supervisor would: ``SIGKILL`` of the sensor, of one worker, of the alerter and of the console, and
   Redis restarted (``SIGTERM``, which writes its append-only file, and started again on the same port and files).
3. **Recovery**: the load stops; every group catches up with nothing pending, and every episode goes quiet and closes.

Then the checks, from the streams (never trimmed here), the console's database and the processes' counters: every
window on the stream has a verdict or a dead letter; no alert line was written twice (two lines identical but for
their ``alert_id``), on the stream or in the alert file; every episode has exactly one open line and one close line,
and none was open twice at once for one host and family; the console stored every line of the stream once; and,
after the last restart, each counter grew by what its stream grew. The report (Markdown, with the machine and load
averages) is printed and written to ``--out``; the exit status is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_service import RedisServer, base_windows, free_port, pick_pcaps, wait, window_at  # noqa: E402
from bench.benchlib import machine  # noqa: E402
from bench.overload import Proc, caught_up  # noqa: E402
from tapwatch.bus.publish import Publisher, PublisherConfig  # noqa: E402
from tapwatch.bus.streams import ALERTS_STREAM, DEAD_STREAM, VERDICTS_STREAM, WINDOWS_STREAM, RedisBus  # noqa: E402

MODEL = REPO / "models" / "hybrid-lab.onnx"
CAPACITY_WINDOWS = 2_000
UNBOUNDED = 10_000_000  # the streams' MAXLEN here: nothing is trimmed, so the checks can read everything
EVENTS = (("sensor", 0.15), ("worker", 0.30), ("alerter", 0.45), ("redis", 0.60), ("console", 0.75))


# -- the sensor (a process of its own) ---------------------------------------------------------------------------


def write_windows(path: Path, pcaps: int) -> int:
    """The windows of the ``pcaps`` largest Ethernet pcaps, as JSON lines (bytes in base64); how many."""
    from tapwatch.inference.model import load_model

    windows = base_windows(load_model(MODEL), pick_pcaps(pcaps))
    with path.open("w") as out:
        for w in windows:
            fields = w.encode()
            raw = [k for k, v in fields.items() if isinstance(v, bytes)]
            text = {k: base64.b64encode(v).decode() if isinstance(v, bytes) else v for k, v in fields.items()}
            out.write(json.dumps({**text, "_bytes": raw}) + "\n")
    return len(windows)


def read_windows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_text().splitlines():
        d = json.loads(line)
        raw = set(d.pop("_bytes"))
        out.append({k: base64.b64decode(v) if k in raw else v for k, v in d.items()})
    return out


def sensor_main(args: argparse.Namespace) -> int:
    """Publish windows at ``--rate`` until SIGTERM (then flush and write the counts) or SIGKILL."""
    windows = read_windows(args.windows)
    pub = Publisher(RedisBus(args.sensor), PublisherConfig(stream=WINDOWS_STREAM, maxlen=UNBOUNDED, batch=64))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    start, i, first = time.monotonic(), 0, args.incarnation * 10_000_000
    while not stop.is_set():
        due = int((time.monotonic() - start) * args.rate)
        now_ms = int(time.time() * 1000)
        while i < due:
            cycle = args.incarnation * 50 + i // len(windows)
            pub.publish(window_at(windows[i % len(windows)], first + i + 1, cycle, now_ms))
            i += 1
        time.sleep(0.005)
    pub.close()
    args.counts.write_text(json.dumps(pub.counts.__dict__))
    return 0


# -- the harness -------------------------------------------------------------------------------------------------


@dataclass
class Run:
    """The processes of one run and their incarnations (a kill and a start make a new one)."""

    tmp: Path
    redis: RedisServer
    windows: Path
    rate: float = 0.0
    started: dict[str, int] = field(default_factory=Counter)
    procs: dict[str, Any] = field(default_factory=dict)
    events: list[tuple[float, str, str]] = field(default_factory=list)
    sensor_counts: list[dict[str, int]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return {"TAPWATCH_CLAIM_IDLE_MS": "2000", "TAPWATCH_CLAIM_INTERVAL_S": "1",
                "TAPWATCH_VERDICTS_MAXLEN": str(UNBOUNDED), "TAPWATCH_ALERTS_STREAM_MAXLEN": str(UNBOUNDED),
                "TAPWATCH_CONSOLE_CLAIM_IDLE_MS": "2000", "TAPWATCH_CONSOLE_SECRET_KEY": "k" * 48,
                "TAPWATCH_STATS_INTERVAL_S": "1"}  # fmt: skip

    def start(self, name: str) -> Any:
        n = self.started[name] = self.started[name] + 1
        log = self.tmp / f"{name}.log"
        url = self.redis.url
        if name == "sensor":
            counts = self.tmp / f"sensor-{n}.json"
            cmd = [sys.executable, str(Path(__file__)), "--sensor", url, "--rate", str(self.rate), "--windows",
                   str(self.windows), "--incarnation", str(n), "--counts", str(counts)]  # fmt: skip
            with log.open("ab") as err:
                proc: Any = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        elif name.startswith("worker"):
            proc = Proc(["worker", "--redis", url, "--model", str(MODEL), "--consumer", f"{name}-{n}",
                         "--reload-poll", "0"], log, self.env())  # fmt: skip
        elif name == "alerter":
            proc = Proc(["alerter", "--redis", url, "--card", str(MODEL.with_suffix(".card.json")), "-o",
                         str(self.tmp / "alerts.jsonl"), "--consumer", f"alerter-{n}", "--quiet", "5",
                         "--reload-poll", "0"], log, self.env())  # fmt: skip
        else:
            proc = Proc(["console", "serve", "--redis", url, "--data-dir", str(self.tmp / "console"), "--port",
                         str(free_port())], log, self.env())  # fmt: skip
        self.procs[name] = proc
        return proc

    def kill(self, name: str, t: float) -> None:
        """SIGKILL (Redis: a restart with SIGTERM) and start again one second later."""
        if name == "redis":
            self.redis.stop()
            self.events.append((t, name, "SIGTERM, started again after 1 s"))
            time.sleep(1.0)
            self.redis.start()
            return
        proc = self.procs[name]
        p = proc if isinstance(proc, subprocess.Popen) else proc.proc
        p.send_signal(signal.SIGKILL)
        p.wait(30)
        self.events.append((t, name if name != "worker" else "worker1", "SIGKILL, started again after 1 s"))
        time.sleep(1.0)
        self.start(name)

    def ready(self, name: str) -> None:
        """Wait for ``/readyz``; a process that exits or never gets ready fails the run, with its log."""
        proc = self.procs[name]
        try:
            wait(lambda: proc.status() == 200 or proc.proc.poll() is not None, 120, f"{name} ready", 0.1)
        except TimeoutError as err:
            raise TimeoutError(f"{err}; its log ends:\n{self._said(proc)}") from err
        if proc.proc.poll() is not None:
            raise RuntimeError(f"{name} exited {proc.proc.poll()}; its log ends:\n{self._said(proc)}")

    @staticmethod
    def _said(proc: Any) -> str:
        return str(proc.log.read_text(errors="replace")[-3000:]) if proc.log.exists() else "(no log)"


def console_user(data: Path) -> None:
    password = secrets.token_urlsafe(18)
    subprocess.run([sys.executable, "-m", "tapwatch.app", "console", "user", "add", "ops", "--role", "admin",
                    "--data-dir", str(data)], input=f"{password}\n{password}\n", text=True, check=True,
                   capture_output=True)  # fmt: skip


def everything(client: Any, stream: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    out: list[Any] = []
    last = "-"
    while True:
        batch = client.xrange(stream, min=last, max="+", count=10_000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            return out
        out += batch
        last = batch[-1][0].decode()


def counters(run: Run) -> dict[str, float]:
    """The counters of the processes running now, and the streams' lengths read just before and just after them
    (``*_stream`` and ``*_stream_then``: under load the scrapes take a while, and the streams grow meanwhile)."""
    c = run.redis.client
    then = {"verdicts_stream_then": c.xlen(VERDICTS_STREAM), "alerts_stream_then": c.xlen(ALERTS_STREAM)}
    w = sum(run.procs[n].metric("tapwatch_inference_verdicts_total") for n in ("worker1", "worker2"))
    d = sum(run.procs[n].metric("tapwatch_inference_dead_lettered_windows_total") for n in ("worker1", "worker2"))
    lines = run.procs["alerter"].metric("tapwatch_alerting_episode_lines_total")
    stored = run.procs["console"].metric("tapwatch_console_alert_lines_total", {"outcome": "stored"})
    return {"verdicts": w, "worker_dead": d, "episode_lines": lines, "console_read": stored, **then,
            "verdicts_stream": c.xlen(VERDICTS_STREAM), "alerts_stream": c.xlen(ALERTS_STREAM)}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="length of the load (default 120)")
    ap.add_argument("--share", type=float, default=0.5, help="load as a share of the measured capacity (0.5)")
    ap.add_argument("--pcaps", type=int, default=12, help="largest Ethernet pcaps of ../shared for windows")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "faults.md", help="the Markdown report")
    ap.add_argument("--sensor", help=argparse.SUPPRESS)  # the sensor process: its Redis URL
    ap.add_argument("--rate", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--windows", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--incarnation", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--counts", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.sensor:
        return sensor_main(args)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="tapwatch-faults-") as d:
        tmp = Path(d)
        n_windows = write_windows(tmp / "windows.jsonl", args.pcaps)
        (tmp / "redis").mkdir()
        run = Run(tmp, RedisServer(tmp / "redis"), tmp / "windows.jsonl")
        console_user(tmp / "console")
        try:
            result = exercise(run, args)
        finally:
            for name, proc in run.procs.items():
                if name != "sensor":
                    proc.stop()
            run.redis.stop()
    text, ok = report(args, n_windows, run, result, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if ok else 1


def exercise(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """Capacity, the load with its kills, the recovery; what the checks read."""
    for name in ("worker1", "worker2", "alerter", "console"):
        run.start(name)
    for name in ("worker1", "worker2", "alerter", "console"):
        run.ready(name)
    client = run.redis.client
    windows = read_windows(run.windows)
    pipe = client.pipeline(transaction=False)
    now_ms = int(time.time() * 1000)
    for i in range(CAPACITY_WINDOWS):
        pipe.xadd(WINDOWS_STREAM, window_at(windows[i % len(windows)], i + 1, 0, now_ms))
    start = time.monotonic()
    pipe.execute()
    wait(lambda: caught_up(client, WINDOWS_STREAM, "workers") and caught_up(client, VERDICTS_STREAM, "alerters"),
         300, "capacity drain", 0.01)  # fmt: skip
    capacity = CAPACITY_WINDOWS / (time.monotonic() - start)
    run.rate = args.share * capacity
    print(f"capacity {capacity:.0f} windows/s; load {run.rate:.0f}/s for {args.seconds:.0f} s", file=sys.stderr)
    sensor = run.start("sensor")
    start = time.monotonic()
    last_event = 0.0
    before_last: dict[str, float] = {}
    for name, at in EVENTS:
        time.sleep(max(0.0, start + at * args.seconds - time.monotonic()))
        run.kill("worker1" if name == "worker" else name, round(time.monotonic() - start, 1))
        last_event = time.monotonic()
    for name in ("worker1", "worker2", "alerter", "console"):
        run.ready(name)
    time.sleep(2.0)  # claims of what the killed consumers held (claim idle 2 s) are under way
    before_last = counters(run)
    time.sleep(max(0.0, start + args.seconds - time.monotonic()))
    sensor = run.procs["sensor"]
    sensor.send_signal(signal.SIGTERM)
    sensor.wait(60)
    loaded_s = time.monotonic() - start
    t0 = time.monotonic()
    groups = ((WINDOWS_STREAM, "workers"), (VERDICTS_STREAM, "alerters"), (ALERTS_STREAM, "console"))
    wait(lambda: all(caught_up(client, s, g) for s, g in groups), 600, "recovery", 0.2)
    recovered_s = time.monotonic() - t0
    wait(lambda: run.procs["alerter"].metric("tapwatch_alerting_open_episodes") == 0, 120, "episodes closed", 0.5)
    wait(lambda: caught_up(client, ALERTS_STREAM, "console"), 120, "console caught up", 0.2)
    time.sleep(1.0)
    after = counters(run)
    recovered = run.procs["alerter"].metric("tapwatch_alerting_episode_lines_recovered_total")
    run.sensor_counts = [json.loads(p.read_text()) for p in sorted(run.tmp.glob("sensor-*.json"))]
    return {"capacity": capacity, "loaded_s": loaded_s, "recovered": recovered, "recovered_s": recovered_s,
            "since_last_s": time.monotonic() - last_event, "before_last": before_last, "after": after,
            "windows": everything(client, WINDOWS_STREAM), "verdicts": everything(client, VERDICTS_STREAM),
            "alerts": everything(client, ALERTS_STREAM), "dead": everything(client, DEAD_STREAM),
            "file": [json.loads(ln) for ln in (run.tmp / "alerts.jsonl").read_text().splitlines() if ln.strip()],
            "console": console_lines(run.tmp / "console")}  # fmt: skip


def console_lines(data: Path) -> list[str]:
    """The alert ids the console stored, one per stored line."""
    with sqlite3.connect(data / "console.db") as db:
        return [row[0] for row in db.execute("SELECT alert_id FROM alert_lines")]


def same_update(line: dict[str, Any]) -> str:
    """The line without its ``alert_id``: two lines equal so are one episode update written twice."""
    ml = dict(line.get("ml", {}))
    ml.pop("alert_id", None)
    return json.dumps({**line, "ml": ml}, sort_keys=True)


def episode_checks(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """Open and close lines per episode, and overlaps of two episodes of one host and family."""
    states: dict[str, Counter[str]] = defaultdict(Counter)
    spans: dict[tuple[str, str], list[tuple[int, int]]] = defaultdict(list)
    first: dict[str, int] = {}
    for n, line in enumerate(lines):
        ep = line.get("episode", {})
        eid, state = str(ep.get("id")), str(ep.get("state"))
        states[eid][state] += 1
        first.setdefault(eid, n)
        if state == "close":
            spans[(str(ep.get("host")), str(line.get("ml", {}).get("family")))].append((first[eid], n))
    overlaps = 0
    for s in spans.values():
        s.sort()
        overlaps += sum(1 for a, b in itertools.pairwise(s) if b[0] < a[1])
    return {"episodes": len(states), "open_once": sum(1 for c in states.values() if c["open"] == 1),
            "close_once": sum(1 for c in states.values() if c["close"] == 1), "overlaps": overlaps,
            "states": Counter(k for c in states.values() for k in c.elements())}  # fmt: skip


def report(args: argparse.Namespace, n_windows: int, run: Run, r: dict[str, Any],
           load_before: str) -> tuple[str, bool]:  # fmt: skip
    windows = [eid.decode() for eid, _ in r["windows"]]
    per_window = Counter(f[b"window_id"].decode() for _, f in r["verdicts"])
    dead = {f.get(b"dead_entry_id", b"").decode() for _, f in r["dead"]
            if f.get(b"dead_stream", b"") == WINDOWS_STREAM.encode()}  # fmt: skip
    missing = [w for w in windows if per_window[w] == 0 and w not in dead]
    twice = sum(1 for w in windows if per_window[w] > 1)
    stream_lines = [json.loads(f[b"eve"]) for _, f in r["alerts"]] if r["alerts"] else []
    dup_stream = len(stream_lines) - len({same_update(x) for x in stream_lines})
    ids = [x.get("ml", {}).get("alert_id") for x in stream_lines]
    # the file: an update under two alert ids is a line made twice; one id twice, a line written again (the
    # alerter died after the file had it and before the stream did: its outbox still held it)
    by_update: dict[str, set[str]] = defaultdict(set)
    for x in r["file"]:
        by_update[same_update(x)].add(str(x.get("ml", {}).get("alert_id")))
    dup_file = sum(len(v) - 1 for v in by_update.values())
    again_file = len(r["file"]) - len({str(x.get("ml", {}).get("alert_id")) for x in r["file"]})
    eps = episode_checks(stream_lines)
    stored = Counter(r["console"])
    b, a = r["before_last"], r["after"]
    grew = {k: a[k] - b[k] for k in ("verdicts", "episode_lines", "console_read")}
    # what a stream grew since the counters were read: between its growth since just after and since just before
    between = {s: (a[f"{s}_stream"] - b[f"{s}_stream"], a[f"{s}_stream"] - b[f"{s}_stream_then"])
               for s in ("verdicts", "alerts")}  # fmt: skip

    def within(n: float, s: str, batch: int) -> bool:
        """In the bracket, give or take the batch a process had written and not yet counted when it was read."""
        return between[s][0] - batch <= n <= between[s][1] + batch

    def shown(s: str) -> str:
        low, high = between[s]
        return f"{low:,.0f}" if low == high else f"{low:,.0f}-{high:,.0f}"

    sent = sum(c["sent"] for c in run.sensor_counts)
    checks = {
        "every window on the stream has a verdict or a dead letter": not missing,
        "no alert line written twice on tapwatch:alerts": dup_stream == 0 and len(set(ids)) == len(ids),
        "no episode update made twice in the alert file (every incarnation of the alerter appends)": dup_file == 0,
        "the alert file has every line of the stream": set(ids) <= {x.get("ml", {}).get("alert_id")
                                                                    for x in r["file"]},
        "every episode has exactly one open line and one close line": eps["open_once"] == eps["close_once"]
        == eps["episodes"] > 0,
        "no two episodes of one host and family open at once": eps["overlaps"] == 0,
        "the console stored every line of the stream exactly once": set(stored) == set(ids)
        and all(v == 1 for v in stored.values()),
        "after the last restart, the workers' verdicts counter grew by what tapwatch:verdicts grew":
            within(grew["verdicts"], "verdicts", 2 * 64),
        "after the last restart, the alerter's episode lines counter grew by what tapwatch:alerts grew":
            within(grew["episode_lines"], "alerts", 1),
        "after the last restart, the console's stored lines counter grew by what tapwatch:alerts grew":
            within(grew["console_read"], "alerts", 128),
    }  # fmt: skip
    lines = [
        "# Kills and restarts at load",
        "",
        f"Command: `python bench/faults.py --seconds {args.seconds:g} --share {args.share:g} --pcaps {args.pcaps}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {machine()}. "
        f"Load average before {load_before}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        f"Two workers and one alerter (episodes, quiet 5 s), the console reading `tapwatch:alerts`, Redis (AOF "
        f"everysec). Together they drained a backlog of {CAPACITY_WINDOWS:,} windows at **{r['capacity']:,.0f} "
        f"windows/s** (through the workers and the alerter); "
        f"{n_windows:,} windows of {args.pcaps} pcaps sent at **{run.rate:,.0f}/s** ({args.share:g}x) for "
        f"{r['loaded_s']:.0f} s by a sensor process, its hosts renamed at every pass. Claims after 2 s idle.",
        "",
        "| at s | stage | what |",
        "|---:|---|---|",
        *(f"| {t:.1f} | {name} | {what} |" for t, name, what in run.events),
        "",
        "| | value |",
        "|---|---:|",
        f"| windows on the stream (the capacity backlog and the sensor's) | {len(windows):,} |",
        f"| sent by the sensor's incarnations that ended by SIGTERM (the killed one's counts died with it) | "
        f"{sent:,} |",
        f"| windows with a verdict / with more than one (at least once: a killed worker's batch again) | "
        f"{sum(1 for w in windows if per_window[w]):,} / {twice:,} |",
        f"| windows dead-lettered / with neither | {len(dead):,} / {len(missing):,} |",
        f"| alert lines on tapwatch:alerts / in the alert file | {len(stream_lines):,} / {len(r['file']):,} |",
        f"| of them the same episode update twice, stream / file | {dup_stream} / {dup_file} |",
        f"| lines in the file written again under their alert id (the alerter died between file and stream) | "
        f"{again_file} |",
        f"| lines written by an alerter from the outbox of one that died "
        f"(`tapwatch_alerting_episode_lines_recovered_total`) | {r['recovered']:.0f} |",
        f"| episodes / with one open line / with one close line | {eps['episodes']:,} / {eps['open_once']:,} / "
        f"{eps['close_once']:,} |",
        f"| lines by state | {', '.join(f'{k} {v:,}' for k, v in sorted(eps['states'].items()))} |",
        f"| lines stored by the console / alert ids stored twice | {len(stored):,} / "
        f"{sum(1 for v in stored.values() if v > 1)} |",
        f"| recovery after the load stopped: every group caught up, nothing pending | {r['recovered_s']:.1f} s |",
        "",
        f"After the last restart, {r['since_last_s']:.0f} s before the end (counters of the processes then "
        "running, read at load; a stream's growth since then lies between its growth since just after and since "
        "just before the counters were read; a check allows the batch a process may have written and not yet "
        "counted: 64 verdicts per worker, 1 line, 128 console lines):",
        "",
        "| counter | grew | its stream | grew |",
        "|---|---:|---|---:|",
        f"| workers' `tapwatch_inference_verdicts_total` | {grew['verdicts']:,.0f} | tapwatch:verdicts | "
        f"{shown('verdicts')} |",
        f"| alerter's `tapwatch_alerting_episode_lines_total` | {grew['episode_lines']:,.0f} | tapwatch:alerts | "
        f"{shown('alerts')} |",
        f'| console\'s `tapwatch_console_alert_lines_total{{outcome="stored"}}` | {grew["console_read"]:,.0f} | '
        f"tapwatch:alerts | {shown('alerts')} |",
        "",
        "| check | held |",
        "|---|---|",
        *(f"| {k} | {'yes' if v else '**NO**'} |" for k, v in checks.items()),
        "",
    ]
    if missing:
        lines += [f"Windows with no verdict (first 10): {', '.join(missing[:10])}", ""]
    return "\n".join(lines), all(checks.values())


if __name__ == "__main__":
    sys.exit(main())

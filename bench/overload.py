#!/usr/bin/env python3
"""Ten times more windows than the workers can take (issue 17): bounded memory, counted drops, readiness, recovery.

    python bench/overload.py [--seconds 180] [--factor 10] [--out docs/overload.md]

Real processes on a private Redis (``redis-server``, AOF on): one ``tapwatch worker`` (with
``TAPWATCH_READY_MAX_LAG``) and one ``tapwatch alerter``, the deployment model. This script is the sensor: it
writes windows of real pcaps through the sensor's own :class:`~tapwatch.bus.publish.Publisher` (batched XADD,
the stream bounded by ``XTRIM MAXLEN ~``, every trimmed entry counted as dropped with reason ``trimmed``).

1. **Capacity**: a backlog of windows is put on the stream at once; the worker's windows/s draining it is C.
2. **Overload**: windows offered at ``factor`` × C for ``seconds``. Every second: the RSS of each process (and
   Redis's ``used_memory``), the stream's length, the worker's lag gauge and ``/readyz`` status.
3. **Recovery**: the load stops; the time until the workers' and the alerters' groups have no lag and nothing
   pending.

Then the accounting, from the processes' own counters and Redis: every window offered was sent (or counted as
dropped by the publisher), every window the workers read has a verdict or a dead letter, the windows trimmed
before any worker read them are no more than the publisher counted as trimmed, and nothing is left pending.
The report (Markdown, with the machine and load averages) is printed and written to ``--out``; the exit status
is 1 when a check fails.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_service import Feeder, RedisServer, Service, base_windows, pick_pcaps, wait  # noqa: E402
from bench.benchlib import machine  # noqa: E402
from tapwatch.bus.publish import Publisher, PublisherConfig  # noqa: E402
from tapwatch.bus.streams import VERDICTS_STREAM, WINDOWS_STREAM, RedisBus  # noqa: E402
from tapwatch.inference.model import load_model  # noqa: E402

MODEL = REPO / "models" / "hybrid-lab.onnx"
PAGE = os.sysconf("SC_PAGE_SIZE")
CAPACITY_WINDOWS = 3_000
POOL = 20_000


class Proc(Service):
    """A service with its ``/readyz`` status and labelled metrics, stopped by its PID (:meth:`Service.stop`)."""

    def status(self) -> int:
        """``/readyz``'s HTTP status (0 when it does not answer)."""
        try:
            return int(urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2).status)
        except urllib.error.HTTPError as err:
            return int(err.code)
        except OSError:
            return 0

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5).read().decode()
        return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
                   if s.name == name and all(s.labels.get(k) == v for k, v in (labels or {}).items()))  # fmt: skip


def rss_mb(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


def group(client: Any, stream: str, name: str) -> dict[str, Any]:
    for g in client.xinfo_groups(stream):
        if g["name"].decode() == name:
            return dict(g)
    return {}


@dataclass
class Samples:
    rows: list[dict[str, float]] = field(default_factory=list)

    def peak(self, key: str, part: slice = slice(None)) -> float:
        values = [r[key] for r in self.rows[part]]
        return max(values) if values else float("nan")


def capacity(client: Any, feeder: Feeder, n: int) -> float:
    """Windows/s the worker drains from a backlog of ``n`` put on the stream at once."""
    pipe = client.pipeline(transaction=False)
    for _ in range(n):
        pipe.xadd(WINDOWS_STREAM, feeder.next(int(time.time() * 1000)))
    pipe.execute()
    start = time.monotonic()
    last = client.xinfo_stream(WINDOWS_STREAM)["last-generated-id"]

    def drained() -> bool:
        g = group(client, WINDOWS_STREAM, "workers")
        return bool(g.get("last-delivered-id") == last and g.get("pending") == 0)

    wait(drained, 300, "drain", 0.01)
    return n / (time.monotonic() - start)


def overload(args: argparse.Namespace, client: Any, url: str, feeder: Feeder, rate: float,
             procs: dict[str, Any], worker: Proc) -> tuple[Publisher, Samples]:  # fmt: skip
    """Offer ``rate`` windows/s through the sensor's publisher for ``args.seconds``; a thread samples every second."""
    pub = Publisher(RedisBus(url), PublisherConfig(stream=WINDOWS_STREAM, maxlen=args.maxlen, batch=64))
    samples = Samples()
    done = threading.Event()
    start = time.monotonic()

    def sample() -> None:
        sampler = redis.Redis.from_url(url)
        while not done.wait(1.0):
            row = {f"rss_{k}": rss_mb(p) for k, p in procs.items()}
            row.update(t=time.monotonic() - start, stream=sampler.xlen(WINDOWS_STREAM), ready=worker.status(),
                       lag=worker.metric("tapwatch_inference_lag_windows"),
                       redis_mb=sampler.info("memory")["used_memory"] / 2**20)  # fmt: skip
            samples.rows.append(row)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    # Entries made before the clock starts (distinct flow ids, cycled): the sensor's cost of making windows is
    # not what is measured here, and a producer slower than the offered rate would not overload anything.
    stamp = int(time.time() * 1000)
    pool = [feeder.next(stamp) for _ in range(POOL)]
    i = 0
    while (now := time.monotonic()) - start < args.seconds:
        due = int((now - start) * rate)
        while i < due:
            pub.publish(pool[i % POOL])
            i += 1
        time.sleep(0.002)
    pub.close()
    done.set()
    thread.join()
    return pub, samples


def caught_up(client: Any, stream: str, name: str) -> bool:
    """The group has the stream's last entry and nothing pending (Redis 7 leaves "lag" unknown once entries were
    trimmed unread, and inexact after a restart). A stream not made yet has nothing to catch up with."""
    if not client.exists(stream):
        return True
    g, last = group(client, stream, name), client.xinfo_stream(stream)["last-generated-id"]
    return bool(g.get("pending") == 0 and g.get("last-delivered-id") == last)


def stream_mb(client: Any) -> dict[str, float]:
    """``MEMORY USAGE`` of each stream, MB (at the end of the run every bounded stream is at its bound)."""
    names = (WINDOWS_STREAM, VERDICTS_STREAM, "tapwatch:alerts", "tapwatch:dead", "tapwatch:aggregates")
    return {n: (client.memory_usage(n, samples=0) or 0) / 2**20 for n in names}


def recovery(client: Any, timeout_s: float) -> float:
    """Seconds until both groups have no lag and nothing pending."""
    start = time.monotonic()

    def done() -> bool:
        return caught_up(client, WINDOWS_STREAM, "workers") and caught_up(client, VERDICTS_STREAM, "alerters")

    wait(done, timeout_s, "recovery", 0.2)
    return time.monotonic() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=180.0, help="length of the overload (default 180)")
    ap.add_argument("--factor", type=float, default=10.0, help="offered rate over the worker's capacity (10)")
    ap.add_argument("--maxlen", type=int, default=20_000, help="the windows stream's bound (MAXLEN ~)")
    ap.add_argument("--verdicts-maxlen", type=int, default=20_000, help="the verdicts stream's bound (the worker's)")
    ap.add_argument("--ready-max-lag", type=int, default=5_000, help="the worker's TAPWATCH_READY_MAX_LAG")
    ap.add_argument("--pcaps", type=int, default=20, help="largest Ethernet pcaps of ../shared for windows")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "overload.md", help="the Markdown report")
    args = ap.parse_args(argv)
    load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
    model = load_model(MODEL)
    feeder = Feeder(base_windows(model, pick_pcaps(args.pcaps)))
    with tempfile.TemporaryDirectory(prefix="tapwatch-overload-") as d:
        tmp = Path(d)
        r = RedisServer(tmp)
        common = ["--redis", r.url]
        worker = Proc(["worker", *common, "--model", str(MODEL), "--consumer", "w1", "--reload-poll", "0"],
                      tmp / "worker.log", {"TAPWATCH_READY_MAX_LAG": str(args.ready_max_lag),
                                           "TAPWATCH_STATS_INTERVAL_S": "1",
                                           "TAPWATCH_VERDICTS_MAXLEN": str(args.verdicts_maxlen)})  # fmt: skip
        alerter = Proc(["alerter", *common, "--card", str(MODEL.with_suffix(".card.json")), "-o",
                        str(tmp / "alerts.jsonl"), "--consumer", "a1"], tmp / "alerter.log", {})  # fmt: skip
        procs = {"worker": worker.proc.pid, "alerter": alerter.proc.pid, "redis": r.proc.pid, "sensor": os.getpid()}
        try:
            for p in (worker, alerter):
                wait(lambda p=p: p.status() == 200, 60, "ready", 0.1)
            cap = capacity(r.client, feeder, CAPACITY_WINDOWS)
            rate = args.factor * cap
            print(
                f"capacity {cap:.0f} windows/s; offering {rate:.0f} windows/s for {args.seconds:.0f} s", file=sys.stderr
            )
            pub, samples = overload(args, r.client, r.url, feeder, rate, procs, worker)
            offered_s = args.seconds
            read_at_stop = worker.metric("tapwatch_inference_windows_total") - CAPACITY_WINDOWS
            recovered_s = recovery(r.client, 600)
            asked = time.time()
            try:
                ready_again_s = wait(lambda: worker.status() == 200, 30, "ready again", 0.1) - asked
            except TimeoutError:
                print("not ready again:", group(r.client, WINDOWS_STREAM, "workers"),
                      worker.metric("tapwatch_inference_lag_windows"), file=sys.stderr)  # fmt: skip
                ready_again_s = math.nan
            counts = {
                "worker_read": worker.metric("tapwatch_inference_windows_total"),
                "verdicts": worker.metric("tapwatch_inference_verdicts_total"),
                "verdicts_trimmed": worker.metric("tapwatch_inference_trimmed_verdicts_total"),
                "alerter_read": alerter.metric("tapwatch_alerting_verdicts_total"),
                "alerter_dead": alerter.metric("tapwatch_alerting_dead_lettered_total"),
                "streams_mb": stream_mb(r.client),
                "ready_again_s": ready_again_s,
                "read_at_stop": read_at_stop,
                "dead": worker.metric("tapwatch_inference_dead_lettered_windows_total"),
                "alerter_pending": group(r.client, VERDICTS_STREAM, "alerters").get("pending"),
                "worker_pending": group(r.client, WINDOWS_STREAM, "workers").get("pending"),
                "ready_after": worker.status(),
                "rss_after": {k: rss_mb(p) for k, p in procs.items()},
            }
        finally:
            worker.stop()
            alerter.stop()
            r.stop()
    text, ok = report(args, cap, rate, offered_s, pub, samples, recovered_s, counts, load_before)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0 if ok else 1


def report(args: argparse.Namespace, cap: float, rate: float, seconds: float, pub: Publisher, s: Samples,
           recovered_s: float, c: dict[str, Any], load_before: str) -> tuple[str, bool]:  # fmt: skip
    n = pub.counts
    capacity_windows = CAPACITY_WINDOWS
    read_in_overload = c["worker_read"] - capacity_windows
    unread_trimmed = n.sent - read_in_overload
    not_ready = sum(1 for r in s.rows if r["ready"] == 503)
    first, last = slice(0, max(1, len(s.rows) // 5)), slice(-max(1, len(s.rows) // 5), None)
    verdicts_unread = c["verdicts"] - c["alerter_read"]
    achieved = n.produced / seconds
    took = c["read_at_stop"] / seconds  # what the worker took while it shared the machine with the overload
    streams = sum(c["streams_mb"].values())
    redis_bound = s.peak("redis_mb", slice(0, 1)) + 1.25 * streams  # empty Redis + every stream at its bound
    checks = {
        f"windows offered at {args.factor:g}x what the worker took meanwhile (within 20%)": achieved
        >= 0.8 * args.factor * took,
        "every window offered was sent or counted as dropped (publisher)": n.produced
        == n.sent + n.dropped_buffer_full + n.dropped_unreachable,
        "every window the worker read has a verdict or a dead letter": c["verdicts"] + c["dead"] == c["worker_read"],
        "windows trimmed unread <= windows the publisher counted as trimmed": 0 <= unread_trimmed <= n.trimmed,
        "verdicts the alerter never read <= verdicts the worker counted as trimmed": 0 <= verdicts_unread
        <= c["verdicts_trimmed"],
        "nothing pending in either group after recovery": c["worker_pending"] == 0 and c["alerter_pending"] == 0,
        "/readyz reported the lag (503) during the overload, and 200 once it was gone": not_ready > 0,
        "worker, alerter and sensor memory: last fifth within 20% (+16 MB) of the first": all(
            s.peak(k, last) <= 1.2 * s.peak(k, first) + 16 for k in ("rss_worker", "rss_alerter", "rss_sensor")
        ),
        "Redis memory within its streams' bounds (1.25 x their size when full, over an empty Redis)": s.peak(
            "redis_mb"
        ) <= redis_bound,
    }  # fmt: skip
    lines = [
        "# Overload: ten times what the workers can take",
        "",
        f"Command: `python bench/overload.py --seconds {args.seconds:g} --factor {args.factor:g} --maxlen {args.maxlen}"
        f" --verdicts-maxlen {args.verdicts_maxlen} --ready-max-lag {args.ready_max_lag}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Machine: {machine()}. "
        f"Load average before {load_before}, after {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        f"One worker (capacity measured on a backlog of {capacity_windows:,} windows: **{cap:,.0f} windows/s**), one "
        f"alerter, Redis; windows offered at **{rate:,.0f}/s** ({args.factor:g}x) for {seconds:g} s through the "
        f"sensor's publisher, the stream bounded at {args.maxlen:,} entries.",
        "",
        "| | value |",
        "|---|---:|",
        f"| windows offered (publisher produced) | {n.produced:,} ({achieved:,.0f}/s: {achieved / took:.1f}x what "
        f"the worker took meanwhile, {achieved / cap:.1f}x its capacity alone) |",
        f"| windows the worker took during the overload | {c['read_at_stop']:,.0f} ({took:,.0f}/s) |",
        f"| sent to the stream | {n.sent:,} |",
        f"| dropped by the publisher, buffer full / Redis unreachable | {n.dropped_buffer_full:,} / "
        f"{n.dropped_unreachable:,} |",
        f'| trimmed by the stream bound (`tapwatch_bus_dropped_windows_total{{reason="trimmed"}}`) | {n.trimmed:,} |',
        f"| of them never read by a worker | {unread_trimmed:,.0f} |",
        f"| read by the worker (the overload and the recovery) | {read_in_overload:,.0f} |",
        f"| verdicts / dead letters (all of the run) | {c['verdicts']:,.0f} / {c['dead']:,.0f} |",
        f"| verdicts trimmed by the verdicts bound ({args.verdicts_maxlen:,}; "
        f"`tapwatch_inference_trimmed_verdicts_total`) | {c['verdicts_trimmed']:,.0f} |",
        f"| verdicts read by the alerter / never read / dead-lettered | {c['alerter_read']:,.0f} / "
        f"{verdicts_unread:,.0f} / {c['alerter_dead']:,.0f} |",
        f"| seconds with /readyz 503 (lag over {args.ready_max_lag:,}) / sampled | {not_ready} / {len(s.rows)} |",
        f"| recovery after the load stopped: both groups caught up, nothing pending | {recovered_s:.1f} s |",
        f"| then /readyz 200 again after | {c['ready_again_s']:.1f} s |",
        "",
        "| process | peak RSS MB, first fifth | peak RSS MB, last fifth | after recovery |",
        "|---|---:|---:|---:|",
    ]
    for k in ("worker", "alerter", "redis", "sensor"):
        lines.append(f"| {k} | {s.peak('rss_' + k, first):.0f} | {s.peak('rss_' + k, last):.0f} | "
                     f"{c['rss_after'][k]:.0f} |")  # fmt: skip
    lines += [f"| Redis used_memory (bound {redis_bound:.0f}: its streams at the end {streams:.0f}) | "
              f"{s.peak('redis_mb', first):.0f} | {s.peak('redis_mb', last):.0f} | |", "",
              "| check | held |", "|---|---|", *(f"| {k} | {'yes' if v else '**NO**'} |" for k, v in checks.items()),
              ""]  # fmt: skip
    return "\n".join(lines), all(checks.values())


if __name__ == "__main__":
    sys.exit(main())

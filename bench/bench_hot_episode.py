#!/usr/bin/env python3
"""Several alerters on one verdict stream: how their episode transactions fare when verdicts hit one hot episode.

    python bench/bench_hot_episode.py [--verdicts 6000] [--alerters 1 2] [--repeat 3] [--out FILE]
    bench/at_commit.sh COMMIT python bench/bench_hot_episode.py --out FILE   # the same on an earlier commit's code

A flood makes every verdict evidence about one victim: one episode key, which every alerter of the consumer group
``alerters`` changes in its optimistic transactions (WATCH, read, MULTI/EXEC). Two shapes of load, each on a fresh
private ``redis-server`` (AOF everysec):

* **hot**: every verdict a ``DoS Hulk`` window against one victim (one episode);
* **spread**: port-scan windows from 200 sources (200 episodes).

The alerters are :class:`~tapwatch.alerting.episode_alerter.EpisodeAlerter` s in this process, one thread each (as
``tapwatch alerter`` runs its verdict loop), reading batches of 64 with a file sink, no explanations. For each:
verdicts/s until the group has nothing left (median of ``--repeat`` runs), the Redis transactions (EXEC) and reads
they took, and the evidence the episodes counted against the verdicts sent (more: a batch handed again after a
transaction gave up, at-least-once). The table (Markdown, with the machine) is printed and written to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(1, str(REPO))  # after PYTHONPATH: bench/at_commit.sh puts an earlier commit's tapwatch first


from bench.bench_service import RedisServer, load_average  # noqa: E402
from bench.benchlib import machine  # noqa: E402
from tapwatch.bus.state import RedisStateStore  # noqa: E402
from tapwatch.bus.streams import VERDICTS_STREAM, RedisBus  # noqa: E402
from tests.support.alerting import redis_episode_alerter, verdict  # noqa: E402

T0 = 1_700_000_000_000


def verdicts(shape: str, n: int) -> list[Any]:
    if shape == "hot":
        return [verdict(i, 0.97, classes=("BENIGN", "DoS Hulk"), src=f"10.9.{i % 200}.{i % 250 + 1}",
                        dst="10.0.0.2", last_seen_ms=T0 + i) for i in range(n)]  # fmt: skip
    return [verdict(i, 0.97, classes=("BENIGN", "PortScan"), src=f"10.8.0.{i % 200 + 1}", dst="10.0.0.2",
                    last_seen_ms=T0 + i) for i in range(n)]  # fmt: skip


def once(shape: str, n: int, k: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="bench-hot-"))
    r = RedisServer(tmp)
    try:
        bus = RedisBus(r.url)
        sent = verdicts(shape, n)
        for i in range(0, n, 500):
            bus.add_many(VERDICTS_STREAM, [v.encode() for v in sent[i : i + 500]])
        alerters = [redis_episode_alerter(r.url, tmp / f"a{j}.jsonl", alerter_consumer=f"a{j}", read_count=64)
                    for j in range(k)]  # fmt: skip
        before = {c: int(v["calls"]) for c, v in r.client.info("commandstats").items()}
        stop = threading.Event()
        start = time.perf_counter()
        threads = [threading.Thread(target=a.verdict_loop.run, args=(stop,)) for a in alerters]
        for t in threads:
            t.start()
        while True:
            g = r.client.xinfo_groups(VERDICTS_STREAM)
            if g and g[0]["lag"] == 0 and g[0]["pending"] == 0:
                break
            time.sleep(0.01)
        wall = time.perf_counter() - start
        stop.set()
        for t in threads:
            t.join(30)
        calls = {c.removeprefix("cmdstat_"): int(v["calls"]) - before.get(c, 0)
                 for c, v in r.client.info("commandstats").items()}  # fmt: skip
        store = RedisStateStore(bus.client)
        counted = sum(int((store.get(key) or {}).get("evidence", 0)) for key in store.keys())  # noqa: SIM118
        return {"rate": n / wall, "exec": calls.get("exec", 0), "reads": calls.get("get", 0) + calls.get("mget", 0),
                "counted": counted}  # fmt: skip
    finally:
        r.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--verdicts", type=int, default=6000)
    ap.add_argument("--alerters", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "bench_hot_episode.md")
    args = ap.parse_args()
    import tapwatch.bus.state as state

    code = "a transaction per batch (apply_many)" if hasattr(state.RedisStateStore, "apply_many") else (
        "a transaction per piece of evidence")  # fmt: skip
    rows = []
    for shape in ("hot", "spread"):
        for k in args.alerters:
            runs = [once(shape, args.verdicts, k) for _ in range(args.repeat)]
            mid = sorted(runs, key=lambda x: x["rate"])[len(runs) // 2]
            over = max(x["counted"] for x in runs) - args.verdicts
            rows.append(f"| {shape} | {k} | {statistics.median(x['rate'] for x in runs):.0f} | {mid['exec']:.0f} | "
                        f"{mid['reads']:.0f} | {over:.0f} |")  # fmt: skip
            print(rows[-1], file=sys.stderr)
    at = os.environ.get("TAPWATCH_CODE_AT")
    command = (f"bench/at_commit.sh {at} " if at else "") + (
        f"python bench/bench_hot_episode.py --verdicts {args.verdicts} --alerters "
        f"{' '.join(map(str, args.alerters))} --repeat {args.repeat}")  # fmt: skip
    text = "\n".join([
        "# Alerters on one hot episode", "",
        f"Command: `{command}`; the alerter's episode state: {code}.", "",
        f"Machine: {machine()}. {load_average().capitalize()}.", "",
        f"{args.verdicts} verdicts on `tapwatch:verdicts`, read in batches of 64 by each alerter (a thread each, "
        "no explanations, a file sink). hot: every verdict about one flood victim (one episode); spread: 200 "
        "scanning sources (200 episodes). Median of the runs; transactions and reads of the median run.", "",
        "| load | alerters | verdicts/s | transactions (EXEC) | state reads (GET, MGET) | evidence counted twice |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]) + "\n"  # fmt: skip
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()

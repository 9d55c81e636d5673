#!/usr/bin/env python3
"""Live capture under the lab's floods: packets offered, captured and dropped, flow close to verdict (issue 16).

    sudo python -m lab ci-short --live --seed 17 --profile lan --out runs/live-s17
    python bench/bench_live.py runs/live-s17 [RUN...] [--out docs/bench/live.md]

Each RUN is a lab run made with ``--live``: ``tapwatch run`` out of the box on the lab's tap beside tcpdump,
while the scenario's clients and attacks play (``lab/live_sensor.py`` keeps its ``/metrics`` from just before the
stop). Offered: the packets tcpdump captured at the same tap (``run.json``; its own kernel drops beside). Captured
and dropped: tapwatch's ``tapwatch_capture_read_packets_total`` and ``tapwatch_capture_kernel_drops_total``. The
latency quantiles come from ``tapwatch_inference_expiry_to_verdict_seconds`` (the upper bound of the bucket each
falls in: a quantile is at most that). The floods are the run's ``dos`` episodes (``episodes.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.benchlib import machine  # noqa: E402

LATENCY = "tapwatch_inference_expiry_to_verdict_seconds"
TARGET_DROPS, TARGET_P99_S = 0.001, 2.0


def quantile(buckets: dict[str, float], q: float) -> float:
    """The upper bound of the histogram bucket holding quantile ``q`` (inf when it is past the last bound).

    >>> quantile({"0.1": 50.0, "1.0": 99.0, "+Inf": 100.0}, 0.5), quantile({"0.1": 50.0, "+Inf": 100.0}, 0.99)
    (0.1, inf)
    """
    bounds = sorted(((float(k), v) for k, v in buckets.items()), key=lambda kv: kv[0])
    total = bounds[-1][1] if bounds else 0.0
    for bound, count in bounds:
        if total and count >= q * total:
            return bound
    return math.nan


def row(run: Path) -> dict[str, Any]:
    meta = json.loads((run / "run.json").read_text())
    sensor = json.loads((run / "live" / "sensor.json").read_text())
    m = sensor.get("metrics") or {}
    if not m:
        raise SystemExit(
            f"{run}: the live sensor's metrics are missing (a run made before lab/live_sensor.py kept them)"
        )
    with (run / "episodes.csv").open() as fh:
        floods = [e for e in csv.DictReader(fh) if e.get("family") == "dos"]
    read, drops = m["tapwatch_capture_read_packets_total"], m["tapwatch_capture_kernel_drops_total"]
    buckets = m[LATENCY]
    argv = [str(a) for a in sensor.get("command", [])]
    buffer = argv[argv.index("--capture-buffer") + 1] if "--capture-buffer" in argv else "default"
    buffer = {"0": "libpcap's 2 MiB", "default": "default"}.get(buffer, f"{buffer} MiB")
    return {
        "run": run.name, "profile": meta.get("link_profile", "?"), "buffer": buffer,
        "offered": meta["capture"]["packets"], "tcpdump_drops": meta["capture"].get("kernel_dropped", 0),
        "read": read, "drops": drops, "drop_share": drops / (read + drops) if read + drops else 0.0,
        "windows": m["tapwatch_features_windows_total"], "verdicts": m["tapwatch_inference_verdicts_total"],
        "p50": quantile(buckets, 0.5), "p90": quantile(buckets, 0.9), "p99": quantile(buckets, 0.99),
        "floods": ", ".join(e["tool"] + (" (spoofed)" if e.get("spoofed") == "1" else "") for e in floods) or "none",
    }  # fmt: skip


def render(rows: list[dict[str, Any]], runs: list[str]) -> str:
    lines = [
        "# Live capture under the lab's floods",
        "",
        f"Command: `python bench/bench_live.py {' '.join(runs)}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())};"
        " each run made by `sudo python -m lab SCENARIO --live --seed N --profile P --out DIR` (with"
        " `TAPWATCH_CAPTURE_BUFFER_MIB=N`: `tapwatch run --capture-buffer N`, the capture buffer column).",
        "",
        f"Machine: {machine()}. Load average now {' '.join(f'{x:.2f}' for x in os.getloadavg())}.",
        "",
        f"Targets: tapwatch's kernel drops under {TARGET_DROPS:.1%} of the packets (none, ideally), flow close to "
        f"verdict p99 at most {TARGET_P99_S:g} s.",
        "",
        "| run | link | capture buffer | floods | offered (tcpdump) | tcpdump drops | tapwatch read "
        "| tapwatch kernel drops | share | windows | verdicts | close → verdict p50 / p90 / p99 s | targets |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        ok = r["drop_share"] <= TARGET_DROPS and r["p99"] <= TARGET_P99_S
        lines.append(
            f"| {r['run']} | {r['profile']} | {r['buffer']} | {r['floods']} | {r['offered']:,} | "
            f"{r['tcpdump_drops']:,} | "
            f"{r['read']:,.0f} | {r['drops']:,.0f} | {r['drop_share']:.3%} | {r['windows']:,.0f} | "
            f"{r['verdicts']:,.0f} | {r['p50']:g} / {r['p90']:g} / {r['p99']:g} | {'met' if ok else 'missed'} |"
        )
    return "\n".join([*lines, ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("runs", nargs="+", type=Path, help="lab run folders made with --live")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "live.md", help="the Markdown report")
    args = ap.parse_args(argv)
    text = render([row(r) for r in args.runs], [str(r) for r in args.runs])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

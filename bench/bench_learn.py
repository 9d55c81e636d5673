"""How long ``tapwatch learn`` takes per hour of a busy office's traffic (the models issue's target: one hour of the
lab's office-day in at most 10 minutes on 2 cores), against the site-baseline learner alone, in the same run.

    /work/venv/bin/python bench/bench_learn.py --flows lab/corpus/runs/office-day-none-s1/flows.csv --flows ...

For 1, 2, ... of the given flows CSVs (the lab's office-day runs: about 50 benign flows per second), it runs, as a
user would, ``tapwatch learn --flows ...`` (poisoning check, baseline, family thresholds, novelty model) and
``python -m tapwatch.models.baseline --flows ... --model ...`` (the baseline alone), each in a fresh interpreter,
and prints wall time, seconds per hour of traffic (the profile card's time span) and the ratio between the two.
The machine may be shared: the load average is printed before and after. The report is written to
``bench/out/bench_learn.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TARGET_S_PER_HOUR = 600.0


def timed(argv: list[str]) -> float:
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr[-1500:]}")
    return time.monotonic() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--flows", action="append", required=True, help="an office-day flows CSV (repeat)")
    p.add_argument("--model", default=str(REPO / "models" / "hybrid-lab.onnx"))
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out" / "bench_learn.md")
    args = p.parse_args(argv)
    exe = Path(sys.executable).with_name("tapwatch")
    rows = []
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="bench-learn-") as tmp:
        for n in range(1, len(args.flows) + 1):
            given = [x for f in args.flows[:n] for x in ("--flows", f)]
            profile = Path(tmp) / f"p{n}.json"
            learn_s = timed([str(exe), "learn", *given, "--model", args.model, "-o", str(profile)])
            base_s = timed([sys.executable, "-m", "tapwatch.models.baseline", *given, "--model", args.model, "-o",
                            str(Path(tmp) / f"b{n}.json")])  # fmt: skip
            card = json.loads(profile.read_text())["card"]
            hours = card["span_s"] / 3600
            rows.append((n, card["flows"], hours, learn_s, learn_s / hours, base_s, learn_s / base_s))
    load_after = os.getloadavg()
    lines = [
        "# `tapwatch learn`: seconds per hour of office-day traffic", "",
        f"Target: at most {TARGET_S_PER_HOUR:.0f} s per hour on 2 cores. Load average before "
        f"{load_before[0]:.1f}, after {load_after[0]:.1f} ({os.cpu_count()} cores).", "",
        "| files | benign flows | hours of traffic | learn, s | learn, s per hour | baseline alone, s "
        "| learn / baseline |",
        "|---|---|---|---|---|---|---|",
        *(f"| {n} | {flows:,} | {h:.2f} | {ls:.0f} | {lph:.0f} | {bs:.0f} | {r:.1f} |"
          for n, flows, h, ls, lph, bs, r in rows),
    ]  # fmt: skip
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

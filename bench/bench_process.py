#!/usr/bin/env python3
"""Whole processes against a bare NFStream loop, start-up included: issue 16's required target.

    python bench/bench_process.py PCAP [--repeat 5] [--out docs/bench/process.md]

Each run is a fresh process started the way a user starts it, timed from ``exec`` to exit:

* ``bare``: ``python -c 'for f in NFStreamer(source=PCAP, statistical_analysis=True): pass'``, the anchor;
* ``flows``: ``tapwatch flows PCAP -o FILE`` (every CIC feature of every flow, as CSV);
* ``detect``: ``tapwatch detect PCAP -o FILE`` out of the box (shipped model, profile, explanations on);
* ``detect-pure``, ``flows-pure`` (``--pure``): the same with ``TAPWATCH_PURE_PYTHON=1`` (no compiled meter).

The runs alternate (bare, flows, detect, bare, ...) so that each configuration sees the same machine, and
the report gives medians with [min–max], each median's ratio to bare's (the target: at most 2x, stretch 1x),
the peak RSS of the largest process of each run (``wait4``), and the load average before and after. The
Markdown is printed and written to ``--out``. Every ``tapwatch`` run must exit 0; its flows and alert lines are
counted, so a run that silently did less would show.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.benchlib import machine

REPO = Path(__file__).resolve().parents[1]
TARGET, STRETCH = 2.0, 1.0
BARE = "import sys\nfrom nfstream import NFStreamer\nn = 0\nfor f in NFStreamer(source=sys.argv[1], statistical_analysis=True):\n    n += 1\nprint(n)\n"  # noqa: E501


def commands(name: str, pcap: str, out: Path) -> tuple[list[str], dict[str, str]]:
    """The argv and extra environment of one configuration."""
    tapwatch = str(Path(sys.executable).with_name("tapwatch"))
    pure = {"TAPWATCH_PURE_PYTHON": "1"} if name.endswith("-pure") else {}
    base = name.removesuffix("-pure")
    if base == "bare":
        return [sys.executable, "-c", BARE, pcap], {}
    if base == "flows":
        return [tapwatch, "flows", pcap, "-o", str(out / "flows.csv")], pure
    return [tapwatch, "detect", pcap, "-o", str(out / "alerts.jsonl")], pure


def run_once(name: str, pcap: str, out: Path) -> dict[str, Any]:
    """One fresh process: wall time, and from ``wait4`` the peak RSS of it and its reaped children (the meter)."""
    argv, extra = commands(name, pcap, out)
    with (out / "stdout").open("w+b") as so, (out / "stderr").open("w+b") as se:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, env={**os.environ, **extra}, stdout=so, stderr=se)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        so.seek(0)
        se.seek(0)
        stdout, stderr = so.read(), se.read()
    if proc.returncode != 0:
        raise SystemExit(f"{name} exited {proc.returncode}: {stderr.decode(errors='replace')[-2000:]}")
    return {"wall": wall, "count": _count(name, stdout, out), "rss_mb": usage.ru_maxrss / 1024}


def _count(name: str, stdout: bytes, out: Path) -> int:
    base = name.removesuffix("-pure")
    if base == "bare":
        return int(stdout.split()[-1])
    if base == "flows":
        with (out / "flows.csv").open("rb") as fh:
            return sum(1 for _ in fh) - 1
    with (out / "alerts.jsonl").open("rb") as fh:
        return sum(1 for _ in fh)


def precompile() -> None:
    """Byte-compile tapwatch's modules first, as ``pip install`` does: an editable checkout run with
    PYTHONDONTWRITEBYTECODE would otherwise compile every module at every start (bare NFStream's are compiled)."""
    import importlib.util

    for name in ("features", "bus", "capture", "inference", "alerting", "models", "app", "console"):
        spec = importlib.util.find_spec(f"tapwatch.{name}")
        for folder in (spec.submodule_search_locations or []) if spec else []:
            subprocess.run([sys.executable, "-m", "compileall", "-q", folder], check=True, stdout=subprocess.DEVNULL)


def measure(names: list[str], pcap: str, repeat: int) -> dict[str, list[dict[str, Any]]]:
    results: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory(prefix="bench-process-") as tmp:
        out = Path(tmp)
        for i in range(repeat):
            for name in names:
                r = run_once(name, pcap, out)
                results[name].append(r)
                print(f"  run {i + 1}/{repeat} {name:12s} {r['wall']:7.2f} s  count {r['count']}", file=sys.stderr)
    return results


def packet_count(pcap: str) -> int:
    """Packet records in the capture (capinfos is not needed: NFStream's own count of packets read)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return -1
    res = subprocess.run([tcpdump, "-nn", "-r", pcap, "-q"], capture_output=True, check=False)
    return res.stdout.count(b"\n")


def commit() -> str:
    git = ["git", "-C", str(REPO), "describe", "--always", "--dirty"]
    return subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} [{min(values):.2f}–{max(values):.2f}]"


def render(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], facts: dict[str, Any]) -> str:
    bare = statistics.median(r["wall"] for r in results["bare"])
    lines = [
        "# Whole processes against a bare NFStream loop",
        "",
        f"Command: `python bench/bench_process.py {args.pcap} --repeat {args.repeat}"
        f"{' --pure' if args.pure else ''}` at commit {facts['commit']}, {facts['date']}"
        + (f"; the code measured: {args.code}." if args.code else "."),
        "",
        f"Machine: {facts['machine']}. Load average before {facts['load_before']}, after {facts['load_after']}.",
        "",
        f"Capture: `{Path(args.pcap).name}`, {facts['packets']:,} packets, {facts['bytes'] / 1e6:.1f} MB.",
        "",
        "Wall time of a fresh process from start to exit, start-up included; runs alternate; medians [min–max] of "
        f"{args.repeat}. Ratio: the median over bare NFStream's (target ≤ {TARGET:g}, stretch ≤ {STRETCH:g}).",
        "",
        "| run | command | wall s | ratio to bare | target | peak RSS MB | output |",
        "|---|---|---:|---:|---|---:|---|",
    ]
    what = {"bare": "flows", "flows": "CSV rows", "detect": "alert lines"}
    for name, rs in results.items():
        base = name.removesuffix("-pure")
        med = statistics.median(r["wall"] for r in rs)
        ratio = med / bare
        verdict = "anchor" if base == "bare" else ("met" if ratio <= TARGET else "missed")
        if base != "bare" and ratio <= STRETCH:
            verdict = "stretch met"
        argv, extra = commands(name, "PCAP", Path("OUT"))
        shown = " ".join(f"{k}={v}" for k, v in extra.items()) + " " if extra else ""
        shown += "tapwatch " + " ".join(argv[1:]) if base != "bare" else "NFStreamer(statistical_analysis=True) loop"
        counts = sorted({r["count"] for r in rs})
        lines.append(
            f"| {name} | `{shown.strip()}` | {_spread([r['wall'] for r in rs])} | {ratio:.2f} | {verdict} | "
            f"{max(r['rss_mb'] for r in rs):.0f} | {'/'.join(map(str, counts))} {what[base]} |"
        )
    lines += ["", "Peak RSS: the largest of the process and its reaped children (NFStream's meter), from `wait4`; "
              "the largest over the runs.", ""]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("pcap", help="the capture (about 140k packets for the issue's target)")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each configuration (default 5)")
    ap.add_argument("--pure", action="store_true", help="also run flows and detect without the compiled meter")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "bench" / "process.md", help="the Markdown report")
    ap.add_argument("--code", help="what code ran, when not this checkout (e.g. 'COMMIT via bench/at_commit.sh')")
    args = ap.parse_args(argv)
    names = ["bare", "flows", "detect"] + (["flows-pure", "detect-pure"] if args.pure else [])
    facts: dict[str, Any] = {"commit": commit(), "machine": machine(), "load_before": load(),
                             "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                             "packets": packet_count(args.pcap), "bytes": Path(args.pcap).stat().st_size}  # fmt: skip
    precompile()
    results = measure(names, args.pcap, args.repeat)
    facts["load_after"] = load()
    text = render(args, results, facts)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()

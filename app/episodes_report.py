"""``python -m tapwatch.app.episodes_report``: what an operator receives, on traffic that shaped nothing.

For each held-out lab run (``--lab DIR``: a run folder with ``capture.pcap``, ``episodes.csv``, ``flows.csv``)
and each real benign capture (``--pcaps MANIFEST.csv``: the rows of category ``normal`` and ``normal-ics``),
it runs ``tapwatch detect`` exactly as a user would (``--verdicts`` beside the alerts) and measures:

* per lab attack (a row of ``episodes.csv`` that is not benign): detected (an alert line whose episode involves
  the attacker, or the victim for a flood, within the attack's time plus ``--slack``), family named correctly,
  time from the attack's start to its first alert line, alert lines of the episodes it raised;
* false alert lines and false episodes (lines matching no attack) per 1,000 benign flows, with Wilson 95 %
  intervals; lab and real captures apart;
* *before*: what the per-window alerter of the previous release wrote, one line per window over the threshold
  (counted from the same run's verdicts).

Nothing is tuned here: the shipped model and site baseline are used as installed. Writes Markdown and JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from statistics import median
from typing import Any

from tapwatch.features.families import ATTACK_FAMILIES, Family

SLACK_S = 150.0
"""Lines up to this long after an attack's end still belong to it: flows expire up to the idle timeout late."""


@dataclass(frozen=True)
class Attack:
    id: str
    family: Family
    tool: str
    attackers: frozenset[str]
    victims: frozenset[str]
    start_ms: int
    end_ms: int
    spoofed: bool


@dataclass
class Detect:
    """One ``tapwatch detect`` run: its lines, and the windows over the threshold (what the per-window alerter of
    the previous release wrote: src, dst, packet time in ms)."""

    pcap: str
    lines: list[dict[str, Any]]
    over: list[tuple[str, str, int]]
    flows: int
    seconds: float
    code: int

    @property
    def windows_over(self) -> int:
        return len(self.over)


@dataclass
class AttackResult:
    attack: str
    family: str
    tool: str
    spoofed: bool
    detected: bool = False
    named: bool = False
    delay_s: float | None = None
    lines: int = 0
    families: list[str] = field(default_factory=list)


def read_attacks(path: Path) -> list[Attack]:
    out = []
    with path.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if row["family"] == Family.BENIGN.value:
                continue
            out.append(Attack(row["episode_id"], Family(row["family"]), row["tool"],
                              frozenset(row["attacker"].split()), frozenset(row["victims"].split()),
                              int(float(row["start"]) * 1000), int(float(row["end"]) * 1000),
                              row.get("spoofed", "0") == "1"))  # fmt: skip
    return out


def flow_counts(flows_csv: Path) -> tuple[int, dict[str, int]]:
    """Benign flows, and flows per episode id (an attack without flows was not captured: the lab's capture budget
    ran out before it, or the tool failed)."""
    per: dict[str, int] = {}
    benign = 0
    with flows_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            per[row.get("episode_id", "")] = per.get(row.get("episode_id", ""), 0) + 1
            benign += row.get("family", "benign") == "benign"
    return benign, per


def run_detect(pcap: Path, out: Path, reuse: bool = False) -> Detect:
    """``tapwatch detect PCAP -o alerts --verdicts verdicts`` as a user runs it; its summary gives the flows.

    With ``reuse``, the outputs of an earlier run in ``out`` are read instead (a report re-rendered from the same
    code); the committed report is generated without it."""
    out.mkdir(parents=True, exist_ok=True)
    alerts, verdicts, summary = out / "alerts.jsonl", out / "verdicts.jsonl", out / "summary.txt"
    t0 = time.monotonic()
    code = 0
    if not (reuse and summary.exists()):
        exe = Path(sys.executable).with_name("tapwatch")
        proc = subprocess.run([str(exe), "detect", str(pcap), "-o", str(alerts), "--verdicts", str(verdicts)],
                              capture_output=True, text=True, timeout=6 * 3600, check=False)  # fmt: skip
        if proc.returncode not in (0, 2):
            raise RuntimeError(f"detect {pcap} exited {proc.returncode}: {proc.stderr[-2000:]}")
        summary.write_text(proc.stderr)
        code = proc.returncode
    text = summary.read_text()
    flows = next((int(line.split()[1]) for line in text.splitlines() if line.strip().startswith("flows")), 0)
    lines = [json.loads(x) for x in alerts.read_text().splitlines()] if alerts.exists() else []
    over = []
    for row in (json.loads(x) for x in verdicts.read_text().splitlines()) if verdicts.exists() else ():
        if row["score"] >= row["threshold"]:
            over.append((row["src_ip"], row["dest_ip"], _ms(row["timestamp"].replace("+0000", "+00:00"))))
    return Detect(str(pcap), lines, over, flows, time.monotonic() - t0, code)


def false_windows(over: list[tuple[str, str, int]], attacks: list[Attack], slack_s: float) -> int:
    """Windows over the threshold whose newest flow belongs to no attack (an attacker's, or to a victim of a flood,
    within the attack's time plus the slack): the previous release's false alerts on a lab run."""

    def attack_flow(src: str, dst: str, t: int) -> bool:
        return any(a.start_ms <= t <= a.end_ms + slack_s * 1000 and (src in a.attackers or dst in a.attackers
                   or (a.family is Family.DOS and dst in a.victims)) for a in attacks)  # fmt: skip

    return sum(1 for src, dst, t in over if not attack_flow(src, dst, t))


def _ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000)


def _involves(line: dict[str, Any], a: Attack) -> bool:
    ep = line["episode"]
    hosts = {ep["host"], line["src_ip"], line["dest_ip"]}
    if ep["key"] == "victim":
        return ep["host"] in a.victims or bool(hosts & a.attackers)
    return ep["host"] in a.attackers


def match(lines: list[dict[str, Any]], attacks: list[Attack], slack_s: float) -> tuple[list[AttackResult], int, int]:
    """Per attack results, false lines and false episodes (lines whose episode matches no attack)."""
    by_episode: dict[str, list[dict[str, Any]]] = {}
    for line in lines:
        by_episode.setdefault(line["episode"]["id"], []).append(line)
    results = {a.id: AttackResult(a.id, a.family.value, a.tool, a.spoofed) for a in attacks}
    false_lines = false_eps = 0
    for ep_lines in by_episode.values():
        first, last = _ms(ep_lines[0]["episode"]["first_seen"]), _ms(ep_lines[-1]["episode"]["last_seen"])
        owners = [a for a in attacks if _involves(ep_lines[0], a)
                  and first <= a.end_ms + slack_s * 1000 and last >= a.start_ms]  # fmt: skip
        if not owners:
            false_lines += len(ep_lines)
            false_eps += 1
            continue
        fam = ep_lines[0]["ml"]["family"]
        named = [a for a in owners if a.family.value == fam]
        # An episode may cover several attacks on one host (a scan, then another scan): each of its family is
        # credited, with all the episode's lines (an upper bound per attack); else the one it overlaps most.
        credited = named or [max(owners, key=lambda a: min(last, a.end_ms) - max(first, a.start_ms))]
        times = sorted(_ms(x["timestamp"].replace("+0000", "+00:00")) for x in ep_lines)
        for owner in credited:
            r = results[owner.id]
            r.detected = True
            r.named = r.named or fam == owner.family.value
            r.families.append(fam)
            r.lines += len(ep_lines)
            # the first line the operator got once the attack had begun (an open episode may only update later)
            after = [t for t in times if t >= owner.start_ms]
            delay = (after[0] - owner.start_ms) / 1000 if after else 0.0
            r.delay_s = delay if r.delay_s is None else min(r.delay_s, delay)
    return list(results.values()), false_lines, false_eps


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95 % interval of a rate k/n.

    >>> [round(x, 4) for x in wilson(0, 1000)]
    [0.0, 0.0038]
    """
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return (max(0.0, c - h), min(1.0, c + h))


def per_k(k: int, n: int) -> str:
    lo, hi = wilson(k, n)
    return f"{1000 * k / n:.2f} [{1000 * lo:.2f}, {1000 * hi:.2f}]" if n else "n/a"


@dataclass
class LabRun:
    name: str
    detect: Detect
    benign_flows: int
    results: list[AttackResult]
    false_lines: int
    false_episodes: int
    false_before: int
    not_captured: list[str]


def lab_run(run: Path, work: Path, slack_s: float, reuse: bool) -> LabRun:
    d = run_detect(run / "capture.pcap", work / run.name, reuse)
    attacks = read_attacks(run / "episodes.csv")
    benign, per_episode = flow_counts(run / "flows.csv")
    results, fl, fe = match(d.lines, attacks, slack_s)
    before = false_windows(d.over, attacks, slack_s)
    missing = [a.id for a in attacks if not per_episode.get(a.id)]
    kept = [r for r in results if r.attack not in missing]
    return LabRun(run.name, d, benign, kept, fl, fe, before, missing)


def manifest_rows(manifest: Path, categories: set[str], limit: int | None) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["category"] in categories]
    return rows[:limit] if limit else rows


def _family_table(runs: list[LabRun]) -> list[str]:
    out = [
        "| family | attacks | detected | named correctly | time to first line, s (median, max) | "
        "lines per attack (median, max) | spoofed or one-probe attacks detected |",
        "|---|---|---|---|---|---|---|",
    ]
    for fam in ATTACK_FAMILIES:
        rs = [r for run in runs for r in run.results if r.family == fam.value]
        if not rs:
            continue
        det = [r for r in rs if r.detected]
        delays = [r.delay_s for r in det if r.delay_s is not None]
        lines = [r.lines for r in det]
        spoof = [r for r in rs if r.spoofed]
        out.append(
            f"| {fam.value} | {len(rs)} | {len(det)} | {sum(r.named for r in rs)} | "
            + (f"{median(delays):.1f}, {max(delays):.1f}" if delays else "-")
            + " | " + (f"{median(lines):g}, {max(lines)}" if lines else "-")
            + f" | {sum(r.detected for r in spoof)} of {len(spoof)} |"
        )  # fmt: skip
    return out


def _attack_rows(runs: list[LabRun]) -> list[str]:
    out = [
        "| run | attack | tool | family | detected as | lines | first line after, s |",
        "|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        for r in run.results:
            fams = ", ".join(sorted(set(r.families))) or "**missed**"
            delay = f"{r.delay_s:.1f}" if r.delay_s is not None else "-"
            out.append(f"| {run.name} | {r.attack} | {r.tool}{' (spoofed)' if r.spoofed else ''} | {r.family} | "
                       f"{fams} | {r.lines} | {delay} |")  # fmt: skip
    return out


def _false_rows(name: str, lines: int, episodes: int, before: int, flows: int) -> str:
    return (f"| {name} | {flows:,} | {before:,} ({per_k(before, flows)}) | {lines:,} ({per_k(lines, flows)}) | "
            f"{episodes:,} ({per_k(episodes, flows)}) |")  # fmt: skip


Attacks = list[tuple[dict[str, str], Detect]]


def render(report: dict[str, Any], runs: list[LabRun], real: list[Detect], attacks: Attacks) -> str:
    md = ["# Episodes: what an operator receives", "",
          f"Generated by `{report['command']}`; do not edit by hand. Shipped model and site baseline as installed; "
          "nothing here was tuned on these runs or captures.", "",
          f"- Machine: {report['machine']}; wall time {report['seconds']:.0f} s.",
          f"- Versions: {report['versions']}.",
          "- Lab runs (held out: none shaped the model, the baseline or the rules): "
          + ", ".join(f"`{r.name}`" for r in runs) + ".",
          "- *Before*: the previous release's alerter wrote one line per window over the threshold; counted from "
          "the same run's `--verdicts`.", "",
          "## Lab attacks, per family", ""]  # fmt: skip
    md += _family_table(runs)
    md += [
        "",
        "## False alert lines per 1,000 benign flows (Wilson 95 % interval)",
        "",
        "| traffic | benign flows | before: lines | after: lines | after: episodes |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        md.append(_false_rows(f"lab `{run.name}` (benign flows of the run)", run.false_lines, run.false_episodes,
                              run.false_before, run.benign_flows))  # fmt: skip
    n = sum(d.flows for d in real)
    fl = sum(len(d.lines) for d in real)
    fe = sum(len({x["episode"]["id"] for x in d.lines}) for d in real)
    md.append(_false_rows(f"{len(real)} real benign captures", fl, fe, sum(d.windows_over for d in real), n))
    md += [
        "",
        "Lab *before* counts every window over the threshold in the run, attack windows included (the lab's "
        "benign flows are most of them); lab *after* counts only lines whose episode matches no attack.",
        "",
    ]
    noisy = sorted((d for d in real if d.lines), key=lambda d: -len(d.lines))[:10]
    if noisy:
        md += [
            "Real benign captures with alert lines:",
            "",
            "| capture | flows | lines | families |",
            "|---|---|---|---|",
        ]
        md += [f"| `{Path(d.pcap).name}` | {d.flows} | {len(d.lines)} | "
               f"{', '.join(sorted({x['ml']['family'] for x in d.lines}))} |" for d in noisy]  # fmt: skip
    if attacks:
        md += [
            "",
            "## Real attack captures (no per-flow labels: what each raised)",
            "",
            "| capture | description | flows | episodes | families | lines |",
            "|---|---|---|---|---|---|",
        ]
        for row, d in attacks:
            fams = ", ".join(sorted({x["ml"]["family"] for x in d.lines})) or "none"
            md.append(f"| `{row['file']}` | {row['description'][:70]} | {d.flows} | "
                      f"{len({x['episode']['id'] for x in d.lines})} | {fams} | {len(d.lines)} |")  # fmt: skip
    gone = [f"`{r.name}`: {', '.join(r.not_captured)}" for r in runs if r.not_captured]
    if gone:
        md += [
            "",
            "Attacks left out because the run's capture holds no flow of theirs (the lab's packet budget ran "
            "out first, or the tool failed): " + "; ".join(gone) + ".",
        ]
    md += ["", "## Every lab attack", "", *_attack_rows(runs)]
    return "\n".join(md) + "\n"


def _versions() -> str:
    from importlib.metadata import version

    return ", ".join(f"{p} {version(p)}" for p in ("tapwatch", "onnxruntime", "nfstream", "numpy"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tapwatch.app.episodes_report", description=__doc__.split("\n")[0])
    p.add_argument("--lab", type=Path, action="append", default=[], help="held-out lab run folder (repeat)")
    p.add_argument("--pcaps", type=Path, help="MANIFEST.csv of real captures (../shared/pcaps/MANIFEST.csv)")
    p.add_argument("--limit", type=int, help="at most this many captures per category (a short run)")
    p.add_argument("--slack", type=float, default=SLACK_S)
    p.add_argument("--work", type=Path, default=Path("/tmp/tapwatch-episodes-report"))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--reuse", action="store_true", help="re-read detect outputs already in --work (same code)")
    p.add_argument("-o", "--out", type=Path, default=Path("models/reports/episodes"))
    args = p.parse_args(argv)
    t0 = time.monotonic()
    runs = [lab_run(run, args.work / "lab", args.slack, args.reuse) for run in args.lab]
    real: list[Detect] = []
    attacks: list[tuple[dict[str, str], Detect]] = []
    if args.pcaps:
        base = args.pcaps.parent
        benign = manifest_rows(args.pcaps, {"normal", "normal-ics"}, args.limit)
        bad = manifest_rows(args.pcaps, {"attack"}, args.limit)
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            real = list(pool.map(lambda r: run_detect(base / r["file"], args.work / "real" / r["file"], args.reuse),
                                 benign))  # fmt: skip
            attacks = list(zip(bad, pool.map(lambda r: run_detect(base / r["file"], args.work / "attack" / r["file"],
                                                                  args.reuse), bad), strict=True))  # fmt: skip
    report = {"command": "python -m tapwatch.app.episodes_report " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores, {platform.python_version()}",
              "versions": _versions(), "seconds": time.monotonic() - t0}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(render(report, runs, real, attacks))
    data = {**report, "lab": [{"name": r.name, "benign_flows": r.benign_flows, "false_lines": r.false_lines,
                               "false_episodes": r.false_episodes, "before_windows_over": r.detect.windows_over,
                               "before_false": r.false_before,
                               "flows": r.detect.flows, "detect_seconds": r.detect.seconds,
                               "attacks": [asdict(a) for a in r.results],
                               "not_captured": r.not_captured} for r in runs],
            "real_benign": [{"pcap": d.pcap, "flows": d.flows, "lines": len(d.lines), "before": d.windows_over}
                            for d in real],
            "real_attack": [{"pcap": d.pcap, "flows": d.flows, "lines": len(d.lines),
                             "families": sorted({x["ml"]["family"] for x in d.lines})}
                            for _, d in attacks]}  # fmt: skip
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

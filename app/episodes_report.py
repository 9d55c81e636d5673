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

Nothing is tuned here: the shipped model and site baseline are used as installed. A run named with
``--examined NAME`` was looked at while the rules were changed (a miss diagnosed on it): the report counts it
apart, and the headline table holds only the runs nobody looked at. One line of each family is printed in the
words an analyst reads first (the examples of ``docs/alerts.md``). Writes Markdown and JSON.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import median
from typing import Any

from tapwatch.app.episodes_match import (
    AttackResult,
    false_windows,
    ms,
    per_k,
    read_attacks,
    score_run,
)
from tapwatch.features.families import ATTACK_FAMILIES

SLACK_S = 150.0
"""Lines up to this long after an attack's end still belong to it: flows expire up to the idle timeout late."""


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


def run_detect(pcap: Path, out: Path, reuse: bool = False, extra: tuple[str, ...] = ()) -> Detect:
    """``tapwatch detect PCAP -o alerts --verdicts verdicts`` as a user runs it; its summary gives the flows.

    With ``reuse``, the outputs of an earlier run in ``out`` are read instead (a report re-rendered from the same
    code); the committed report is generated without it."""
    out.mkdir(parents=True, exist_ok=True)
    alerts, verdicts, summary = out / "alerts.jsonl", out / "verdicts.jsonl", out / "summary.txt"
    t0 = time.monotonic()
    code = 0
    if not (reuse and summary.exists()):
        exe = Path(sys.executable).with_name("tapwatch")
        proc = subprocess.run([str(exe), "detect", str(pcap), "-o", str(alerts), "--verdicts", str(verdicts), *extra],
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
            over.append((row["src_ip"], row["dest_ip"], ms(row["timestamp"].replace("+0000", "+00:00"))))
    return Detect(str(pcap), lines, over, flows, time.monotonic() - t0, code)


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
    made: str = ""
    """How the run was made and how it is held out (from its run.json)."""
    examined: bool = False
    """Looked at while the rules were changed (``--examined``)."""

    @property
    def credited(self) -> set[str]:
        """Ids of the episodes that named an attack of the run by its family."""
        return {e for r in self.results for e in r.named_by}


def lab_run(
    run: Path, work: Path, slack_s: float, reuse: bool, examined: bool = False, extra: tuple[str, ...] = ()
) -> LabRun:
    d = run_detect(run / "capture.pcap", work / run.name, reuse, extra)
    s = score_run(run, d.lines, slack_s)
    before = false_windows(d.over, read_attacks(run / "episodes.csv"), slack_s)
    return LabRun(run.name, d, s.benign_flows, s.results, s.false_lines, s.false_episodes, before, s.not_captured,
                  provenance(run), examined)  # fmt: skip


def provenance(run: Path) -> str:
    """Scenario, seed, profile and capture of a lab run, and what holds it out from the baseline's training runs."""
    try:
        info = json.loads((run / "run.json").read_text())
    except (OSError, ValueError):
        return "no run.json"
    seed, profile = info.get("seed"), info.get("profile") or info.get("link_profile")
    held = [w for w, ok in (("seed", seed != 1), ("profile", profile not in ("none", "lan")),
                            ("scenario", info.get("scenario") != "office-day")) if ok]  # fmt: skip
    cap = info.get("capture", {})
    budget = "; the capture's packet budget ran out before the end" if cap.get("budget_reached") else ""
    return (
        f"{info.get('scenario')}, seed {seed}, profile {profile}, {info.get('seconds', 0):.0f} s; held out by "
        f"{', '.join(held) or 'nothing'}{budget}"
    )


def manifest_rows(manifest: Path, categories: set[str], limit: int | None) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["category"] in categories]
    return rows[:limit] if limit else rows


def _family_table(runs: list[LabRun]) -> list[str]:
    out = [
        "| family | attacks | detected | named correctly | time to first line, s (median, max) | "
        "lines per attack (median, max) | of them spoofed: detected |",
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


def _shipped() -> dict[str, str]:
    """What ``detect`` ran with: the shipped model (name, version, training data) and the baseline's sources."""
    from tapwatch.app.embedded import shipped_model
    from tapwatch.features.baseline import load_baseline, shipped_baseline
    from tapwatch.features.card import card_path_for, load_card
    from tapwatch.features.profile import load_profile, profile_path_for

    card = load_card(card_path_for(shipped_model()))
    profile = profile_path_for(shipped_model())
    if profile.is_file():  # the model's default profile holds the baseline detect uses
        p = load_profile(profile)
        files = p.card.data
        where = (f"the default site profile `{profile.name}` (rule `{p.rule.kind.value}`), learned on the benign flows "
                 f"of ")  # fmt: skip
    else:
        path = shipped_baseline()
        files = load_baseline(path).source.get("files", []) if path else []
        where = "the benign flows of "
    return {"model": f"`{card.name}` {card.version}, trained on `{card.training_data.dataset}`",
            "baseline": where + (", ".join(f"`{f['path']}`" for f in files) or "nothing recorded")}  # fmt: skip


def render(report: dict[str, Any], runs: list[LabRun], real: list[Detect], attacks: Attacks) -> str:
    md = ["# Episodes: what an operator receives", "",
          f"Generated by `{report['command']}`; do not edit by hand. Shipped model and site baseline as installed; "
          "no threshold was fitted to these runs or captures, and rules were changed only after looking at the "
          "runs marked *examined* (counted apart below).", "",
          f"- Machine: {report['machine']}; wall time {report['seconds']:.0f} s.",
          f"- Versions: {report['versions']}.",
          f"- Model: {report.get('model', 'not recorded')}.",
          f"- Site baseline: {report.get('baseline', 'files not recorded')}.",
          "- Lab runs (none shaped the model or the site baseline; *examined*: looked at while the rules were "
          "changed, so counted apart):",
          *(f"  - `{r.name}`: {r.made}{'; *examined*' if r.examined else ''}" for r in runs),
          "- *Before*: the alerter before episodes wrote one line per window over the threshold; counted from "
          "the same run's `--verdicts` (same model).", "",
          "## Lab attacks, per family", ""]  # fmt: skip
    fresh = [r for r in runs if not r.examined]
    if fresh and len(fresh) < len(runs):
        md += [f"Runs nobody looked at before the rules were final ({', '.join(f'`{r.name}`' for r in fresh)}):",
               "", *_family_table(fresh), "", "Every run, the examined ones included:", ""]  # fmt: skip
    md += _family_table(runs)
    md += [
        "",
        "## False alert lines per 1,000 benign flows (Wilson 95 % interval)",
        "",
        "| traffic | benign flows | before: lines | after: lines | after: episodes |",
        "|---|---|---|---|---|",
    ]
    for run in runs:
        seen = ", *examined*" if run.examined else ""
        md.append(_false_rows(f"lab `{run.name}` (benign flows of the run{seen})", run.false_lines, run.false_episodes,
                              run.false_before, run.benign_flows))  # fmt: skip
    n = sum(d.flows for d in real)
    fl = sum(len(d.lines) for d in real)
    fe = sum(len({x["episode"]["id"] for x in d.lines}) for d in real)
    md.append(_false_rows(f"{len(real)} real benign captures", fl, fe, sum(d.windows_over for d in real), n))
    md += [
        "",
        "A lab line (or window, before) is false when it matches no attack of its run: an episode about an "
        "attacker, or about a flood's victim, within the attack's time and the slack after it. Every line on a "
        "real benign capture is false. The lab's benign clients are busy (office-day: about 50 flows per "
        "second), so per 1,000 flows the lab is kinder than a quiet network would be.",
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
    md += ["", "## One line of each family", "",
           "The `close` line of an episode that named a real attack of its run (a run nobody examined first, where "
           "one has it), abridged to the fields an analyst reads first.", ""]  # fmt: skip
    md += _examples(sorted(runs, key=lambda r: r.examined))
    return "\n".join(md) + "\n"


def _examples(runs: list[LabRun]) -> list[str]:
    out: list[str] = []
    for fam in ATTACK_FAMILIES:
        found = next(((run, line) for run in runs for line in run.detect.lines
                      if line["ml"]["family"] == fam.value and line["episode"]["state"] == "close"
                      and line["episode"]["id"] in run.credited), None)  # fmt: skip
        if found is not None:
            out += [f"### {fam.value} (`{found[0].name}`)", "", "```", *abridged(found[1]), "```", ""]
    return out


def abridged(x: dict[str, Any]) -> list[str]:
    """An alert line in the words an analyst reads first."""
    e, ml, a = x["episode"], x["ml"], x["alert"]
    expl = ", ".join(f"{c['feature']}={c['value']:g} (w {c['weight']:.3g})" for c in ml["explanation"][:3])
    return [
        f"src_ip {x['src_ip']} -> dest_ip {x['dest_ip']}:{x['dest_port']} {x['proto']}",
        f'alert: {a["signature_id"]} "{a["signature"]}", {a["category"]}, severity {a["severity"]}',
        f"episode: {e['key']} {e['host']}, {e['first_seen']} .. {e['last_seen']}, flows {e['flows']}, "
        f"sources {e['sources']}, targets {e['targets']} (busiest {', '.join(e.get('top_targets', [])[:3])}), "
        f"ports {e['ports']}, lines {e['lines']}",
        f"ml: class {ml['class']!r}, views {ml['views']}, classes {list(ml['classes'])}",
        f"explanation: {expl}",
        f"summary: {ml['summary']}",
    ]


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
    p.add_argument(
        "--examined",
        action="append",
        default=[],
        metavar="NAME",
        help="a --lab run looked at while the rules were changed: counted apart (repeat)",
    )
    p.add_argument("-o", "--out", type=Path, default=Path("models/reports/episodes"))
    args = p.parse_args(argv)
    t0 = time.monotonic()
    unknown = sorted(set(args.examined) - {run.name for run in args.lab})
    if unknown:
        p.error(f"--examined names no --lab run: {', '.join(unknown)}")
    runs = [lab_run(run, args.work / "lab", args.slack, args.reuse, run.name in args.examined) for run in args.lab]
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
              "versions": _versions(), "seconds": time.monotonic() - t0, **_shipped()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(render(report, runs, real, attacks))
    data = {**report, "lab": [{"name": r.name, "examined": r.examined, "benign_flows": r.benign_flows,
                               "false_lines": r.false_lines,
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

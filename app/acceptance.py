"""The acceptance report: what the default model, rules and profile do on traffic that shaped none of them, and with
a site profile learned on another part of the same network's benign traffic.

``python -m tapwatch.app.acceptance --episodes models/reports/episodes.json --episodes-work DIR --site-learn RUN
... --fresh RUN ... --pcaps ../shared/pcaps/MANIFEST.csv --cic models/reports/cic-ids2017.json -o
models/reports/acceptance`` writes ``acceptance.md`` and ``.json``. Rates carry Wilson 95 % intervals.

* **Lab families, offline**: from the episodes report (``--episodes``), on its runs nobody looked at before the
  rules were final: attacks detected and named by their family, time to the first line, lines per attack.
* **False alert lines per 1,000 benign flows**, out of the box (the episodes report) and with a site profile:
  - lab: a profile learned (``tapwatch learn``) on the benign flows of ``--site-learn`` runs (other seeds and
    link profiles of the same lab network), then ``detect --profile`` on the ``--fresh`` runs;
  - real captures: the benign captures of the manifest split in two halves by a hash of their path; a profile
    learned on each half scores the other, so every capture is scored by a profile that never saw it.
* **Lab families, live** (``--live RUN``, a run made with ``python -m lab SCENARIO --live``): the lines
  ``tapwatch run`` wrote on the lab's tap during the scenario, timed by when each reached the alert file.
* **Alert shapes** of a SYN flood, a scan and slowloris: lines and episode sizes (flows, sources, ports) from the
  lab runs' alert lines (``--episodes-work``, the episodes report's ``--work``).
* **CIC-IDS2017**: the evaluation reports' time split and the original-release feature subset, every model; the
  models trained with the lab's flows (``--cic-lab``) when their evaluation exists.

Nothing is fitted here: profiles are learned only on benign traffic that is not scored with them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tapwatch.app.episodes_match import score_run, wilson
from tapwatch.app.episodes_report import SLACK_S, lab_run, manifest_rows, run_detect

GOAL_OUT_OF_BOX = 1.0
GOAL_PROFILE = 0.1
GOAL_DETECTED = 0.95
GOAL_FIRST_S = 5.0
SHAPES = {"SYN flood": ("hping3", "dos", " -S "), "scan": ("nmap", "scan", ""), "slowloris": ("slowloris", "dos", "")}
"""Name -> (tool, family, a word of its command line): hping3 also floods with UDP and ICMP."""


def rate(k: int, n: int, per: float = 1.0) -> dict[str, Any]:
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "value": k / n * per if n else None, "low": lo * per, "high": hi * per}


def fmt(r: dict[str, Any], digits: int = 2) -> str:
    if r["value"] is None:
        return f"{r['k']} of {r['n']}"
    return f"{r['k']} of {r['n']}: {r['value']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]"


def learn(inputs: Sequence[str | Path], out: Path, flags: Sequence[str] = (), reuse: bool = False) -> dict[str, Any]:
    """``tapwatch learn`` as a user runs it; the profile's card."""
    if not (reuse and out.exists()):
        exe = Path(sys.executable).with_name("tapwatch")
        proc = subprocess.run(
            [str(exe), "learn", *map(str, inputs), *flags, "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=6 * 3600,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"learn exited {proc.returncode}: {proc.stderr[-2000:]}")
    card: dict[str, Any] = json.loads(out.read_text())["card"]
    return card


def lab_families(episodes: dict[str, Any]) -> dict[str, Any]:
    """Per family, over the runs not examined: attacks, detected, named, first-line delays, lines."""
    return family_table([a for run in episodes["lab"] if not run["examined"] for a in run["attacks"]])


def family_table(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per family of ``rows`` (:class:`~tapwatch.app.episodes_match.AttackResult` as dicts): attacks, detected,
    named, first-line delays, lines."""
    out: dict[str, Any] = {}
    for fam in sorted({a["family"] for a in rows}):
        mine = [a for a in rows if a["family"] == fam]
        delays = [a["delay_s"] for a in mine if a["delay_s"] is not None]
        lines = [a["lines"] for a in mine if a["detected"]]
        out[fam] = {
            "detected": rate(sum(a["detected"] for a in mine), len(mine)),
            "named": rate(sum(a["named"] for a in mine), len(mine)),
            "first_s": {
                "median": round(statistics.median(delays), 1) if delays else None,
                "max": round(max(delays), 1) if delays else None,
                "within_5s": rate(sum(d <= GOAL_FIRST_S for d in delays), len(mine)),
            },
            "lines": {"median": statistics.median(lines) if lines else None, "max": max(lines, default=None)},
            "joined": sum(bool(a.get("joined")) for a in mine),
        }
    return out


def live_run(run: Path) -> dict[str, Any]:
    """Score a lab run's live sensor (``python -m lab SCENARIO --live``: ``RUN/live``) against its attacks: each
    line is timed by when it reached the alert file (``arrivals.csv``), not by its packets, so the time to the
    first line is what the operator waited. Lines without an arrival are counted, not scored."""
    live = run / "live"
    sensor = json.loads((live / "sensor.json").read_text())
    with (live / "arrivals.csv").open(newline="") as fh:
        arrived = {r["alert_id"]: float(r["arrived"]) for r in csv.DictReader(fh)}
    lines, untimed = [], 0
    for raw in (live / "alerts.jsonl").read_text().splitlines():
        line = json.loads(raw)
        when = arrived.get(line["ml"]["alert_id"])
        if when is None:
            untimed += 1
            continue
        stamp = datetime.fromtimestamp(when, tz=UTC).isoformat(timespec="milliseconds")
        lines.append({**line, "timestamp": stamp})
    s = score_run(run, lines, SLACK_S)
    return {
        "name": run.name, "lines": len(lines), "untimed": untimed, "ready_s": sensor["ready_s"],
        "exit_status": sensor["exit_status"], "attacks": [asdict(r) for r in s.results],
        "false_lines": s.false_lines, "benign_flows": s.benign_flows, "not_captured": s.not_captured,
    }  # fmt: skip


def live(runs: list[Path]) -> dict[str, Any] | None:
    if not runs:
        return None
    scored = [live_run(r) for r in runs]
    rows = [a for r in scored for a in r["attacks"]]
    delays = [a["delay_s"] for a in rows if a["delay_s"] is not None]
    return {
        "runs": scored,
        "families": family_table(rows),
        "within_5s": rate(sum(d <= GOAL_FIRST_S for d in delays), len(rows)),
        "false": rate(sum(r["false_lines"] for r in scored), sum(r["benign_flows"] for r in scored), 1000),
    }


def out_of_box(episodes: dict[str, Any]) -> dict[str, Any]:
    fresh = [r for r in episodes["lab"] if not r["examined"]]
    lab = rate(sum(r["false_lines"] for r in fresh), sum(r["benign_flows"] for r in fresh), 1000)
    real = episodes["real_benign"]
    return {
        "lab": {**lab, "runs": [r["name"] for r in fresh]},
        "real": {
            **rate(sum(r["lines"] for r in real), sum(r["flows"] for r in real), 1000),
            "captures": len(real),
            "with_lines": sorted(r["pcap"] for r in real if r["lines"]),
        },
    }


def lab_with_profile(site: list[Path], fresh: list[Path], work: Path, reuse: bool) -> dict[str, Any]:
    profile = work / "lab-site.profile.json"
    card = learn([x for r in site for x in ("--flows", r / "flows.csv")], profile, reuse=reuse)
    runs = [lab_run(r, work / "lab-profile", SLACK_S, reuse, extra=("--profile", str(profile))) for r in fresh]
    found = rate(sum(r.false_lines for r in runs), sum(r.benign_flows for r in runs), 1000)
    attacks = [a for r in runs for a in r.results]
    return {
        **found,
        "learned_on": [r.name for r in site],
        "profile_flows": card["flows"],
        "learn_seconds": card["seconds"],
        "runs": [r.name for r in runs],
        "detected": rate(sum(a.detected for a in attacks), len(attacks)),
        "named": rate(sum(a.named for a in attacks), len(attacks)),
    }


def half(path: str) -> int:
    return int(hashlib.sha256(path.encode()).hexdigest(), 16) % 2


def real_with_profile(manifest: Path, work: Path, reuse: bool) -> dict[str, Any]:
    base = manifest.parent
    rows = manifest_rows(manifest, {"normal", "normal-ics"}, None)
    folds: dict[int, list[str]] = defaultdict(list)
    for r in rows:
        folds[half(r["file"])].append(r["file"])
    lines = flows = 0
    cards, with_lines = [], []
    for k in (0, 1):
        profile = work / f"real-half{k}.profile.json"
        cards.append(learn([base / f for f in folds[k]], profile, reuse=reuse))
        for f in folds[1 - k]:
            d = run_detect(base / f, work / f"real-profile{k}" / f, reuse, ("--profile", str(profile)))
            lines, flows = lines + len(d.lines), flows + d.flows
            if d.lines:
                with_lines.append(f)
    return {
        **rate(lines, flows, 1000),
        "captures": len(rows),
        "halves": [len(folds[0]), len(folds[1])],
        "profile_flows": [c["flows"] for c in cards],
        "left_out": [c["poisoning"]["flows_left_out"] for c in cards],
        "with_lines": sorted(with_lines),
    }


def commands(runs: Sequence[Path]) -> dict[tuple[str, str], str]:
    """(run name, attack id) -> the attack's command line, from each run's episodes.csv."""
    out = {}
    for run in runs:
        with (run / "episodes.csv").open(newline="") as fh:
            out.update({(run.name, r["episode_id"]): r.get("command", "") for r in csv.DictReader(fh)})
    return out


def shapes(episodes: dict[str, Any], work: Path | None, argv: dict[tuple[str, str], str] | None = None
           ) -> dict[str, Any]:  # fmt: skip
    """Lines and episode sizes of the SYN floods, scans and slowloris attacks of the fresh runs (``argv``: their
    command lines, which tell a SYN flood from hping3's UDP and ICMP floods; without it every hping3 flood)."""
    out: dict[str, Any] = {}
    for name, (tool, fam, word) in SHAPES.items():
        found = []
        for run in (r for r in episodes["lab"] if not r["examined"]):
            alerts = work / "lab" / run["name"] / "alerts.jsonl" if work else None
            lines = [json.loads(x) for x in alerts.read_text().splitlines()] if alerts and alerts.exists() else []
            by_id = {x["episode"]["id"]: x for x in lines}  # the last line of each episode: its final size
            for a in run["attacks"]:
                if a["tool"] != tool or a["family"] != fam:
                    continue
                if argv is not None and word not in argv.get((run["name"], a["attack"]), word):
                    continue
                eps = [by_id[i] for i in a["named_by"] if i in by_id]
                found.append(
                    {
                        "run": run["name"],
                        "attack": a["attack"],
                        "spoofed": a["spoofed"],
                        "lines": a["lines"],
                        "first_s": round(a["delay_s"], 1) if a["delay_s"] is not None else None,
                        "episodes": len(eps),
                        "flows": [e["episode"]["flows"] for e in eps],
                        "sources": [e["episode"]["sources"] for e in eps],
                        "ports": [e["episode"]["ports"] for e in eps],
                        "views": sorted({v for e in eps for v in e["ml"].get("views", [])}),
                    }
                )
        out[name] = found
    return out


def cic(path: Path | None) -> dict[str, Any] | None:
    """Per protocol and model: attack F1 and FAR (mean, sample std, seeds) from an evaluation report."""
    if path is None or not path.exists():
        return None
    data = json.loads(path.read_text())
    out: dict[str, Any] = {}
    for p in data.get("protocols", []):
        summary = p.get("summary") or {}
        out[p["name"]] = {
            "title": p.get("title", ""),
            "models": {m: {"attack_f1": s.get("attack.f1"), "far": s.get("far")} for m, s in summary.items()},
        }
    return out


def goals(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    box, prof = report["out_of_box"], report["with_profile"]
    rows = []
    for where in ("lab", "real"):
        v = box[where]["value"]
        rows.append(
            (
                f"<= {GOAL_OUT_OF_BOX:g} false line per 1,000 benign flows out of the box ({where})",
                "met" if v is not None and v <= GOAL_OUT_OF_BOX else "missed",
                fmt(box[where]),
            )
        )
        p = prof.get(where)
        if p:
            rows.append(
                (
                    f"<= {GOAL_PROFILE:g} with a site profile ({where})",
                    "met" if p["value"] is not None and p["value"] <= GOAL_PROFILE else "missed",
                    fmt(p),
                )
            )
    for fam, f in report["families"].items():
        d, n = f["detected"], f["named"]
        ok = d["value"] is not None and d["value"] >= GOAL_DETECTED and n["value"] >= GOAL_DETECTED
        rows.append(
            (
                f"{fam}: >= 95 % of held-out episodes detected and named",
                "met" if ok else "missed",
                f"detected {fmt(d)}; named {fmt(n)}",
            )
        )
    lv = report.get("live")
    if lv is None:
        rows.append(("first alert within 5 s of episode start in the live run", "not measured", "no --live run"))
    else:
        w = lv["within_5s"]
        rows.append(
            (
                "first alert within 5 s of episode start in the live run (every attack)",
                "met" if w["n"] and w["k"] == w["n"] else "missed",
                fmt(w),
            )
        )
    for key, trained in (("cic", "CIC-IDS2017 only"), ("cic_lab", "with the lab's flows")):
        for name, proto in (report.get(key) or {}).items():
            models = proto["models"]
            hybrid = next((m for m in models if m.startswith("hybrid")), None)
            if hybrid is None or "lgbm" not in models or not models["lgbm"]["attack_f1"]:
                continue
            h, g = models[hybrid]["attack_f1"][0], models["lgbm"]["attack_f1"][0]
            rows.append(
                (
                    f"Hybrid >= LightGBM attack F1 ({trained}, protocol {name})",
                    "met" if h >= g else "missed",
                    f"{h:.4f} vs {g:.4f} ({hybrid})",
                )
            )
    if report.get("cic_lab") is None:
        rows.append(
            (
                "Hybrid >= LightGBM attack F1 (trained with the lab's flows)",
                "not measured",
                "the evaluation of all five models on CIC-IDS2017 + the lab's flows has not finished",
            )
        )
    return rows


def render(report: dict[str, Any]) -> str:
    md = [
        "# Acceptance: the default model, rules and profile on traffic that shaped none of them",
        "",
        f"Generated by `{report['command']}`; do not edit by hand. Wall time {report['seconds']:.0f} s.",
        "",
        "## Goals",
        "",
        "| goal | status | measured (95 % interval) |",
        "|---|---|---|",
        *(f"| {g} | {s} | {m} |" for g, s, m in goals(report)),
        "",
        "## Lab families, offline (held-out runs nobody looked at before the rules were final)",
        "",
        f"Runs: {', '.join(f'`{r}`' for r in report['out_of_box']['lab']['runs'])}.",
        "",
        *FAMILY_HEAD,
    ]
    md += _family_rows(report["families"])
    md += _live_section(report.get("live"))
    box, prof = report["out_of_box"], report["with_profile"]
    md += [
        "",
        "## False alert lines per 1,000 benign flows",
        "",
        "| traffic | out of the box | with a site profile |",
        "|---|---|---|",
        f"| held-out lab benign | {fmt(box['lab'])} | {fmt(prof['lab']) if prof.get('lab') else 'not run'} |",
        f"| {box['real']['captures']} real benign captures | {fmt(box['real'])} | "
        f"{fmt(prof['real']) if prof.get('real') else 'not run'} |",
        "",
    ]
    if prof.get("lab"):
        p = prof["lab"]
        md.append(
            f"- Lab profile: learned on the benign flows of {', '.join(f'`{r}`' for r in p['learned_on'])} "
            f"({p['profile_flows']:,} flows, {p['learn_seconds']} s), other seeds and link profiles of the same "
            f"lab network; with it the fresh runs' attacks were detected {fmt(p['detected'])} and named "
            f"{fmt(p['named'])}."
        )
    if prof.get("real"):
        p = prof["real"]
        md.append(
            f"- Real captures: two halves by a hash of the path ({p['halves'][0]} and {p['halves'][1]} "
            f"captures); a profile learned on each half ({p['profile_flows'][0]} and {p['profile_flows'][1]} "
            f"benign flows kept, {p['left_out'][0]} and {p['left_out'][1]} left out by the poisoning check) "
            "scored the other half."
        )

    def named(captures: list[str]) -> str:
        return ", ".join(f"`{c}`" for c in captures) or "none"

    md.append(
        f"- Out of the box, real captures with lines: {named(box['real']['with_lines'])}"
        f"{'; with a profile: ' + named(prof['real']['with_lines']) if prof.get('real') else ''}."
    )
    md += [
        "",
        "## What a SYN flood, a scan and slowloris look like as alerts (fresh runs)",
        "",
        "| attack | run | spoofed | lines | first line, s | episodes | flows per episode | sources | ports | views |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in report["shapes"].items():
        for r in rows:
            md.append(
                f"| {name} ({r['attack']}) | {r['run']} | {'yes' if r['spoofed'] else 'no'} | {r['lines']} | "
                f"{'-' if r['first_s'] is None else r['first_s']} | {r['episodes']} | "
                f"{', '.join(map(str, r['flows']))} | "
                f"{', '.join(map(str, r['sources']))} | {', '.join(map(str, r['ports']))} | "
                f"{', '.join(r['views'])} |"
            )
    md += ["", "## CIC-IDS2017", ""]
    for key, title in (
        ("cic", "trained on CIC-IDS2017 only (`models/reports/cic-ids2017.md`)"),
        ("cic_original", "trained on the original release's features (`models/reports/cic-ids2017-original.md`)"),
        ("cic_lab", "trained on CIC-IDS2017 and the lab's flows (`models/reports/cic-ids2017+lab.md`)"),
    ):
        data = report.get(key)
        md += [f"Models {title}:", ""]
        if data is None:
            md += ["Not measured yet: the evaluation has not finished.", ""]
            continue
        md += ["| protocol | model | attack F1 (mean, std, seeds) | FAR (mean, std, seeds) |", "|---|---|---|---|"]
        for name, proto in data.items():
            for model, m in proto["models"].items():
                f1, far = m["attack_f1"], m["far"]
                md.append(
                    f"| {name} | {model} | {f1[0]:.4f}, {f1[1]:.4f}, {f1[2]} | {far[0]:.4f}, {far[1]:.4f}, {far[2]} |"
                    if f1 and far
                    else f"| {name} | {model} | - | - |"
                )
        md.append("")
    return "\n".join(md) + "\n"


FAMILY_HEAD = (
    "| family | detected | named by its family | first line, s (median, max) | first line within 5 s | "
    "lines per attack (median, max) | joined an open episode |",
    "|---|---|---|---|---|---|---|",
)


def _family_rows(families: dict[str, Any]) -> list[str]:
    return [
        f"| {fam} | {fmt(f['detected'])} | {fmt(f['named'])} | {f['first_s']['median']}, {f['first_s']['max']} | "
        f"{fmt(f['first_s']['within_5s'])} | {f['lines']['median']}, {f['lines']['max']} | {f['joined']} |"
        for fam, f in families.items()
    ]


def _live_section(lv: dict[str, Any] | None) -> list[str]:
    if lv is None:
        return []
    md = [
        "",
        "## Lab families, live (`tapwatch run` on the lab's tap during the scenario, out of the box)",
        "",
        "Each line is timed by when it reached the alert file: the time an operator waited from the attack's "
        "first packet. An attack that *joined an open episode* came while an episode of its family about the same "
        "host was open (an earlier attack on that victim): the operator had an open alert already, and the time "
        "is to the episode's next line, which updates follow at a doubling interval (60 s, 120 s, ...).",
        "",
    ]
    for r in lv["runs"]:
        md.append(
            f"- `{r['name']}`: {r['lines']} lines ({r['untimed']} without an arrival time), sensor ready "
            f"{r['ready_s']} s after start, exit status {r['exit_status']}; false lines {r['false_lines']} on "
            f"{r['benign_flows']:,} benign flows"
            + (f"; not captured: {', '.join(r['not_captured'])}" if r["not_captured"] else "")
            + "."
        )
    md += [
        "",
        *FAMILY_HEAD,
    ]
    md += _family_rows(lv["families"])
    md.append(f"| all | | | | {fmt(lv['within_5s'])} | | |")
    return md


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tapwatch.app.acceptance", description=__doc__.split("\n")[0])
    p.add_argument("--episodes", type=Path, required=True, help="the episodes report's JSON")
    p.add_argument("--episodes-work", type=Path, help="the episodes report's --work folder (alert shapes)")
    p.add_argument("--site-learn", type=Path, action="append", default=[], help="lab run a site profile learns from")
    p.add_argument("--fresh", type=Path, action="append", default=[], help="held-out lab run scored with it")
    p.add_argument("--live", type=Path, action="append", default=[], help="lab run made with --live (held out)")
    p.add_argument("--pcaps", type=Path, help="MANIFEST.csv of the real captures")
    p.add_argument("--cic", type=Path, help="evaluation report JSON of the CIC-IDS2017-only models")
    p.add_argument("--cic-lab", type=Path, help="evaluation report JSON of the models trained with the lab's flows")
    p.add_argument("--cic-original", type=Path, help="evaluation report JSON on the original release's features")
    p.add_argument("--work", type=Path, default=Path("/tmp/tapwatch-acceptance"))
    p.add_argument("--reuse", action="store_true", help="re-read outputs already in --work (same code)")
    p.add_argument("-o", "--out", type=Path, default=Path("models/reports/acceptance"))
    args = p.parse_args(argv)
    t0 = time.monotonic()
    episodes = json.loads(args.episodes.read_text())
    args.work.mkdir(parents=True, exist_ok=True)
    profile: dict[str, Any] = {}
    if args.site_learn and args.fresh:
        profile["lab"] = lab_with_profile(args.site_learn, args.fresh, args.work, args.reuse)
    if args.pcaps:
        profile["real"] = real_with_profile(args.pcaps, args.work, args.reuse)
    report: dict[str, Any] = {
        "command": "python -m tapwatch.app.acceptance " + " ".join(sys.argv[1:] if argv is None else argv),
        "families": lab_families(episodes),
        "out_of_box": out_of_box(episodes),
        "with_profile": profile,
        "live": live(args.live),
        "shapes": shapes(episodes, args.episodes_work, commands(args.fresh) if args.fresh else None),
        "cic": cic(args.cic),
        "cic_original": cic(args.cic_original),
        "cic_lab": cic(args.cic_lab),
    }
    report["seconds"] = time.monotonic() - t0
    report["goals"] = [{"goal": g, "status": s, "measured": m} for g, s, m in goals(report)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

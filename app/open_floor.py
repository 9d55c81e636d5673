"""How much window-view evidence benign hosts and attacks give within a minute, and how many of a flood's flows
were open at once: what ``episode_open_windows`` and ``episode_open_concurrent`` were chosen on.

``python -m tapwatch.app.open_floor --run RUN_DIR:VERDICTS.jsonl ... -o models/reports/open-floor`` reads the
verdicts ``tapwatch detect --verdicts`` wrote for lab runs (their ``episodes.csv`` says who attacked whom, when) and
prints, per attack, the most evidence one of its episode keys (the attacker, or a flood's victim) gathered within
any 60 s, and the same for every key that belongs to no attack. For a flood's victim it also counts the most
evidence flows open at one moment (their first and last packet times, from the run's ``flows.csv``). Give it only
runs that may shape rules (never the fresh held-out runs or the real captures): each floor is chosen between the
benign maximum and the smallest attack the window view found.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.alerting.episodes import EpisodeConfig, most_concurrent
from tapwatch.app.episodes_match import ms, read_attacks
from tapwatch.features.families import Family

MINUTE_MS = 60_000
OPEN_WINDOWS = EpisodeConfig().open_windows
OPEN_CONCURRENT = EpisodeConfig().open_concurrent
Span = tuple[int, int]


def most_within(times: list[int], span_ms: int = MINUTE_MS) -> int:
    """The most of ``times`` that fall within any ``span_ms``.

    >>> most_within([0, 10, 20, 70_000, 70_001])
    3
    """
    ts, j, best = sorted(times), 0, 0
    for i, t in enumerate(ts):
        while ts[j] < t - span_ms:
            j += 1
        best = max(best, i - j + 1)
    return best


def first_seen(run: Path) -> dict[tuple[str, int], int]:
    """(community id, last packet ms) -> first packet ms of the run's flows; empty without ``flows.csv``."""
    path = run / "flows.csv"
    if not path.exists():
        return {}
    with path.open(newline="") as fh:
        return {(r["community_id"], int(r["last_seen_ms"])): int(r["first_seen_ms"]) for r in csv.DictReader(fh)}


def evidence_keys(
    verdicts: Path, novel: bool = False, firsts: dict[tuple[str, int], int] | None = None
) -> dict[tuple[str, str], list[Span]]:
    """(family, host) -> (first, last) packet times of the window-view evidence about it (the episode key's host);
    a flow ``firsts`` does not know is the moment of its last packet. With ``novel``, only the evidence a site
    profile's ``novel`` rule keeps (novelty ratio >= 1: the verdicts must carry it)."""
    out: dict[tuple[str, str], list[Span]] = defaultdict(list)
    firsts = firsts or {}
    with verdicts.open() as fh:
        for line in fh:
            v = json.loads(line)
            if not v["evidence"] or (novel and v["novelty"] < 1.0):
                continue
            fam = Family(v["family"])
            last = ms(v["timestamp"])
            first = firsts.get((v.get("community_id", ""), last), last)
            out[(fam.value, v["dest_ip"] if fam.by_victim else v["src_ip"])].append((first, last))
    return out


def novelty_stats(verdicts: Path) -> dict[str, Any] | None:
    """How novel the windows were (verdicts of a profile with a novelty model): the share at or over 1 and the
    median, for the window-view evidence and for every other window (mostly benign); None without novelty."""
    groups: dict[str, list[float]] = {"evidence": [], "other": []}
    with verdicts.open() as fh:
        for line in fh:
            v = json.loads(line)
            if "novelty" not in v:
                return None
            groups["evidence" if v["evidence"] else "other"].append(float(v["novelty"]))
    return {name: {"windows": len(xs), "novel_share": round(sum(x >= 1 for x in xs) / len(xs), 5) if xs else None,
                   "median": round(float(np.median(xs)), 4) if xs else None}
            for name, xs in groups.items()}  # fmt: skip


def measure(run: Path, verdicts: Path, slack_s: float = 30.0, novel: bool = False) -> dict[str, Any]:
    attacks = read_attacks(run / "episodes.csv")
    keys = evidence_keys(verdicts, novel, first_seen(run))
    rows, claimed = [], set()
    used: set[tuple[str, str, Span]] = set()
    for a in attacks:
        hosts = a.victims if a.family.by_victim else a.attackers
        best, fam, spans = 0, "-", []
        for (f, host), all_spans in keys.items():
            if host not in hosts:
                continue
            claimed.add((f, host))
            mine = [sp for sp in all_spans if a.start_ms - 5000 <= sp[1] <= a.end_ms + slack_s * 1000]
            used.update((f, host, sp) for sp in mine)
            n = most_within([t for _, t in mine])
            if n > best:
                best, fam, spans = n, f, mine
        conc = most_concurrent(spans) if fam != "-" and Family(fam).by_victim else None
        rows.append({"attack": a.id, "tool": a.tool, "family": a.family.value, "evidence_60s": best, "as": fam,
                     "concurrent": conc})  # fmt: skip
    others = {k: v for k, v in keys.items() if k not in claimed}
    benign = sorted(((most_within([t for _, t in sp]), f, h) for (f, h), sp in others.items()), reverse=True)
    # a flood's victim outside its attacks (the DNS server hit by a UDP flood also serves the office all day)
    victims = [most_concurrent([sp for sp in spans if (f, h, sp) not in used])
               for (f, h), spans in keys.items() if Family(f).by_victim]  # fmt: skip
    return {"run": run.name, "attacks": rows, "benign_max_60s": benign[0][0] if benign else 0,
            "benign_max_concurrent": max(victims, default=0), "novelty": novelty_stats(verdicts),
            "benign_top": [{"evidence_60s": n, "family": f, "host": h} for n, f, h in benign[:5]]}  # fmt: skip


def render(found: list[dict[str, Any]], command: str, novel: bool = False) -> str:
    seen = [r["evidence_60s"] for x in found for r in x["attacks"] if r["evidence_60s"] > 0]
    benign = max((x["benign_max_60s"] for x in found), default=0)
    # the smallest attack that clearly used the window view (a handful of windows is the volume view's catch)
    smallest = min((n for n in seen if n > benign), default=0)
    mid = math.sqrt(benign * smallest) if benign and smallest else 0.0
    floods = [r["concurrent"] for x in found for r in x["attacks"] if r["concurrent"] and r["evidence_60s"] > benign]
    calm = max((x.get("benign_max_concurrent", 0) for x in found), default=0)
    least = min((n for n in floods if n > calm), default=0)
    middle = math.sqrt(calm * least) if calm and least else 0.0
    lines = [
        "# Window-view evidence within a minute: benign hosts and attacks", "",
        f"Generated by `{command}`; do not edit by hand.", "",
        *(["Evidence as a site profile's `novel` rule keeps it: only windows whose novelty ratio is at least 1.", ""]
          if novel else []),
        f"- Most evidence any benign host gave within 60 s: **{benign}**.",
        f"- Least evidence within 60 s of an attack the window view found (more than any benign host): **{smallest}**.",
        *([] if novel else [f"- Their geometric middle: **{mid:.1f}** (`episode_open_windows` is set at or near it)."]),
        f"- Attacks with at least {OPEN_WINDOWS} pieces within 60 s (what opens an episode by the window view alone): "
        f"**{sum(r['evidence_60s'] >= OPEN_WINDOWS for x in found for r in x['attacks'])}** of "
        f"{sum(len(x['attacks']) for x in found)}.",
        f"- Most of a flood's evidence flows open at one moment at a victim, outside the attacks on it: **{calm}**; "
        f"least at a DoS attack the window view found: **{least}**"
        + ("." if novel else f"; their geometric middle: **{middle:.1f}** (`episode_open_concurrent`).")
        + f" Floods the window view found with at least {OPEN_CONCURRENT} open at once: "
        f"**{sum(n >= OPEN_CONCURRENT for n in floods)}** of {len(floods)}.", "",
        "| run | attack | tool | family | evidence within 60 s | as | open at once |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for x in found:
        for r in x["attacks"]:
            conc = "-" if r.get("concurrent") is None else r["concurrent"]
            cells = (x["run"], r["attack"], r["tool"], r["family"], r["evidence_60s"], r["as"], conc)
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if all(x["novelty"] for x in found):
        lines += ["", "Novelty (error over the profile's threshold) of window-view evidence and of other windows:",
                  "", "| run | evidence: windows | share >= 1 | median | other: windows | share >= 1 | median |",
                  "|---|---|---|---|---|---|---|"]  # fmt: skip
        for x in found:
            e, o = x["novelty"]["evidence"], x["novelty"]["other"]
            lines.append(f"| {x['run']} | {e['windows']} | {e['novel_share']} | {e['median']} | {o['windows']} | "
                         f"{o['novel_share']} | {o['median']} |")  # fmt: skip
    lines += ["", "Benign hosts with the most evidence (per run):", ""]
    for x in found:
        top = ", ".join(f"{b['family']} {b['host']}: {b['evidence_60s']}" for b in x["benign_top"]) or "none"
        lines.append(f"- `{x['run']}`: {top}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tapwatch.app.open_floor", description=__doc__.split("\n")[0])
    p.add_argument("--run", action="append", required=True, help="RUN_DIR:VERDICTS_JSONL (repeat)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report path without suffix (.md and .json)")
    p.add_argument("--novel", action="store_true", help="count only evidence with novelty >= 1 (the novel rule)")
    args = p.parse_args(argv)
    found = [measure(Path(r.split(":")[0]), Path(r.split(":")[1]), novel=args.novel) for r in args.run]
    command = "python -m tapwatch.app.open_floor " + " ".join(sys.argv[1:] if argv is None else argv)
    args.output.with_suffix(".json").write_text(json.dumps({"command": command, "runs": found}, indent=1) + "\n")
    args.output.with_suffix(".md").write_text(render(found, command, args.novel))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""lab/reports/corpus.md (and corpus.json beside it) from a built corpus: what it holds and how it compares.

``python -m lab.corpus_report --corpus lab/corpus`` reads the corpus' manifest and dataset (:mod:`lab.corpus`) and
the CIC-IDS2017 subset in ``../shared/datasets`` and writes the report: episodes and flows per family and link
profile, the total of benign flows, the handshake RTTs measured at the tap per profile beside the profile's,
feature medians per family beside the CIC subset's, the build time, the tools and their versions, and where lab
and CIC still differ (a median more than :data:`APART` times the other's, either way). Every number comes from the
files; nothing is typed in.

Example
-------
>>> cic_family("DoS Slowloris"), cic_family("Infiltration - Portscan"), cic_family("Heartbleed")
('dos', 'scan', None)
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

import click
import pandas as pd

from lab.episodes import Family

MEDIANS = {"Flow Duration": "duration (µs)", "Flow IAT Mean": "IAT mean (µs)", "Flow Packets/s": "packets/s",
           "bytes": "bytes"}  # fmt: skip
_PACKETS = ("Total Fwd Packet", "Total Bwd packets")
APART = 10.0  # a median this many times the other's, either way, is called a difference
_CIC_FAMILY = {"BENIGN": "benign", "Portscan": "scan", "Infiltration - Portscan": "scan", "DDoS": "dos",
               "FTP-Patator": "bruteforce", "SSH-Patator": "bruteforce", "Botnet": "botnet"}  # fmt: skip


def cic_family(label: str) -> str | None:
    """The lab family of a CIC-IDS2017 label (None for classes the lab does not make: Heartbleed, Infiltration)."""
    if label.startswith("DoS "):
        return Family.DOS.value
    if label.startswith("Web Attack"):
        return Family.WEBATTACK.value
    return _CIC_FAMILY.get(label)


def _bytes(frame: pd.DataFrame) -> pd.Series:
    return frame["Total Length of Fwd Packet"] + frame["Total Length of Bwd Packet"]


def read_lab(dataset: Path) -> pd.DataFrame:
    """The columns of the corpus dataset the report needs."""
    cols = ["unit", "link_profile", "episode_id", "family", *[c for c in MEDIANS if c != "bytes"],
            "Total Length of Fwd Packet", "Total Length of Bwd Packet", *_PACKETS]  # fmt: skip
    frame = pd.read_csv(dataset, usecols=cols, low_memory=False)
    frame["bytes"] = _bytes(frame)
    return frame


def benign_episodes(frame: pd.DataFrame) -> dict[str, int]:
    """Benign episodes with flows per link profile: one per host and run (clients, and idle hosts' own traffic)."""
    benign = frame[frame["family"] == Family.BENIGN.value]
    return {str(k): int(v) for k, v in benign.groupby("link_profile")["unit"].apply(
        lambda units: len(set(zip(units, benign.loc[units.index, "episode_id"], strict=True)))).items()}  # fmt: skip


def cic_medians(folder: Path) -> dict[str, dict[str, float]]:
    frames = []
    for path in sorted(folder.glob("*.csv.gz")):
        frame = pd.read_csv(path, low_memory=False)
        frame["family"] = frame["Label"].map(cic_family)
        frames.append(frame.dropna(subset=["family"]))
    frame = pd.concat(frames, ignore_index=True)
    frame["bytes"] = _bytes(frame)
    return _medians(frame, "family")


def _medians(frame: pd.DataFrame, by: str) -> dict[str, dict[str, float]]:
    """Per family: the medians of :data:`MEDIANS`, the flows, and the share of one-packet flows (CIC has none)."""
    out: dict[str, dict[str, float]] = {}
    one = frame[_PACKETS[0]] + frame[_PACKETS[1]] == 1
    for family, rows in frame.groupby(by):
        share = round(float(one[rows.index].mean()), 4)
        out[str(family)] = {col: float(rows[col].median()) for col in MEDIANS} | {
            "flows": len(rows),
            "one_packet": share,
        }
    return out


def tables(manifest: dict[str, Any], benign: dict[str, int] | None = None) -> dict[str, Any]:
    """Episodes and flows per (family, profile), benign total, RTTs per profile, from the units' summaries
    (attack episodes) and ``benign`` (benign episodes per profile, from the dataset)."""
    episodes: dict[tuple[str, str], int] = defaultdict(int)
    flows: dict[tuple[str, str], int] = defaultdict(int)
    rtts: dict[str, list[float]] = defaultdict(list)
    targets: dict[str, float] = {}
    for unit in manifest["units"]:
        prof = unit["link_profile"]
        for attack in unit["attacks"]:
            episodes[(attack["family"], prof)] += 1
        for family, count in unit["flows"].items():
            flows[(family, prof)] += count
        if unit["handshake_rtt"]["count"]:
            rtts[prof].append(unit["handshake_rtt"]["median_ms"])
        targets[prof] = unit["profile_rtt_ms"]
    for prof, count in (benign or {}).items():
        episodes[(Family.BENIGN.value, prof)] = count
    rows = [{"family": f, "link_profile": p, "episodes": episodes.get((f, p), 0), "flows": flows[(f, p)]}
            for f, p in sorted(flows)]  # fmt: skip
    rtt = {p: {"target_ms": targets[p], "units": len(v), "median_of_unit_medians_ms": round(statistics.median(v), 3)}
           for p, v in sorted(rtts.items())}  # fmt: skip
    total = sum(n for (f, _), n in flows.items() if f == Family.BENIGN.value)
    return {"rows": rows, "benign_flows": total, "rtt": rtt}


def differences(lab: dict[str, dict[str, float]], cic: dict[str, dict[str, float]]) -> list[str]:
    out = []
    for family in sorted(set(lab) & set(cic)):
        for col, name in MEDIANS.items():
            a, b = lab[family][col], cic[family][col]
            if a > 0 and b > 0 and max(a / b, b / a) >= APART:
                out.append(f"{family}: median {name} {_num(a)} in the lab, {_num(b)} in CIC ({a / b:.3g}×)")
    return out


def _num(x: float) -> str:
    return f"{x:.4g}"


def render(manifest: dict[str, Any], counts: dict[str, Any], lab: dict[str, Any], cic: dict[str, Any],
           command: str) -> str:  # fmt: skip
    """The report in Markdown."""
    units = manifest["units"]
    lines = ["# The lab corpus", "",
             f"Generated by `{command}` from the corpus manifest ({len(units)} units: "
             f"{', '.join(sorted({u['scenario'] for u in units}))}; seeds "
             f"{', '.join(str(s) for s in sorted({u['seed'] for u in units}))}; profiles "
             f"{', '.join(sorted({u['link_profile'] for u in units}))}). Flows are written by `tapwatch flows "
             "--single-packet-flows` from the tap's capture and labelled by episode (lab/labels.py); a benign "
             "episode is one host's traffic in one run.", "",
             "| family | link profile | episodes | flows |", "|---|---|---|---|"]  # fmt: skip
    for row in counts["rows"]:
        lines.append(f"| {row['family']} | {row['link_profile']} | {row['episodes']} | {row['flows']} |")
    lines += ["", f"total benign flows: {counts['benign_flows']}", f"total flows: {manifest['flows']}", "",
              "## Round-trip times at the tap", "",
              "Median TCP handshake RTT (client SYN to client ACK, from the capture's microsecond timestamps), "
              "the median over units of each unit's median.", "",
              "| link profile | profile RTT (ms) | measured (ms) | units |", "|---|---|---|---|"]  # fmt: skip
    for prof, r in counts["rtt"].items():
        lines.append(f"| {prof} | {r['target_ms']:g} | {r['median_of_unit_medians_ms']} | {r['units']} |")
    lines += ["", "## Feature medians per family: lab beside the CIC-IDS2017 subset", "",
              "A flow within one millisecond (the sensor's flow clock) has duration 0 and no rate (packets/s -1): "
              "scan probes and their resets, spoofed floods' one-packet flows (CIC-IDS2017 has no one-packet flow; "
              "the lab keeps them, `--single-packet-flows`).", "",
              "| family | source | flows | one-packet | " + " | ".join(MEDIANS.values()) + " |",
              "|---|---|---|---|" + "---|" * len(MEDIANS)]  # fmt: skip
    for family in sorted(set(lab) | set(cic)):
        for source, med in (("lab", lab.get(family)), ("CIC", cic.get(family))):
            if med:
                vals = " | ".join(_num(med[c]) for c in MEDIANS)
                lines.append(f"| {family} | {source} | {med['flows']} | {med['one_packet']:.0%} | {vals} |")
    diffs = differences(lab, cic)
    lines += ["", f"## Where lab and CIC still differ (a median {APART:g}× apart or more)", ""]
    lines += [f"- {d}" for d in diffs] or ["- no median is that far apart"]
    wall = manifest.get("unit_wall_seconds", 0.0)
    lines += ["", "## Build", "",
              f"Units' wall time (set-up, traffic, teardown, extraction): {wall / 60:.1f} min; build invocations: "
              f"{manifest.get('build_seconds', 0.0) / 60:.1f} min on {os.cpu_count()} cores, kernel "
              f"{platform.release()}.", "", "Tools (Debian packages) and versions of the first unit:", ""]  # fmt: skip
    lines += [f"- {pkg} {ver}" for pkg, ver in sorted(units[0]["tools"].items())]
    return "\n".join(lines) + "\n"


@click.command()
@click.option("--corpus", type=click.Path(path_type=Path, file_okay=False), default=Path("lab/corpus"),
              show_default=True)  # fmt: skip
@click.option("--shared", type=click.Path(path_type=Path, file_okay=False), default=Path("../shared"),
              show_default=True, help="Where datasets/cic-ids2017 is.")  # fmt: skip
@click.option("--out", type=click.Path(path_type=Path), default=Path("lab/reports/corpus.md"), show_default=True)
def main(corpus: Path, shared: Path, out: Path) -> None:
    """Write the corpus report (Markdown, and JSON beside it). Example: python -m lab.corpus_report"""
    manifest_path = corpus / "manifest.json"
    if not manifest_path.is_file():
        raise click.ClickException(f"{manifest_path} does not exist: build the corpus first (python -m lab.corpus)")
    manifest = json.loads(manifest_path.read_text())
    frame = read_lab(corpus / manifest["dataset"])
    counts = tables(manifest, benign_episodes(frame))
    lab = _medians(frame, "family")
    cic = cic_medians(shared / "datasets" / "cic-ids2017" / "engelen_improved_sample_rnd5000")
    command = f"python -m lab.corpus_report --corpus {corpus}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render(manifest, counts, lab, cic, command))
    data = {"counts": counts, "lab_medians": lab, "cic_medians": cic, "differences": differences(lab, cic),
            "units": [{k: u[k] for k in ("unit", "flows", "handshake_rtt", "wall_seconds")} for u in manifest["units"]],
            "dataset_sha256": manifest["dataset_sha256"], "build_seconds": manifest.get("build_seconds")}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    click.echo(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()

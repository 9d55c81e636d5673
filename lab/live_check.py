"""The live check: every shipped model on labelled traffic of real attack tools, on two links (models issue).

``python -m lab.live_check`` makes the traffic of :mod:`lab.live_traffic` (an
attacker namespace runs ``nmap -sS``, an ``hping3 -S`` SYN flood and slowloris against a server while a
benign client downloads files and asks DNS; root needed) once per link condition (``--link``: ``lan``, the
namespaces at memory speed; ``wan``, the server's side shaped as a WAN-like link,
:class:`lab.netns_trio.WanLink`), or reuses ``--pcap`` with its ``-labels.csv``. Per condition it
extracts the flows with ``tapwatch flows``, the command users run; labels each flow from the phase table
(its two addresses and its start time inside a phase: nothing is guessed, flows in no phase or in two are
counted apart); scores the flows with every shipped model (``NAME.onnx`` beside ``NAME.card.json``) through
``tapwatch score``; runs the PyPI ``cicflowmeter`` on the same capture and scores its flows the same way
(:mod:`lab.pypi_cicflowmeter`; ``--no-cicflowmeter`` leaves it out); and writes
``models/reports/live-check.md`` and ``.json``: per condition, extractor, model and label the flows, the flows
at or over the card's threshold, and the detection or false-alarm rate, with provenance and a comparison of
the live flows' key features with the training rows of the same CIC-IDS2017 family.

Run from the repository root (the datasets are found as ``../shared``)::

    python -m lab.live_check [--link lan|wan|both] [--pcap OUT.pcap] [--out models/reports] [--keep DIR]
"""

from __future__ import annotations

import csv
import hashlib
import logging
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import pandas as pd

from lab import pypi_cicflowmeter as pypi
from lab.live_check_report import compare_features, link_basis, write_reports
from lab.live_traffic import SHORT_PLAN, LivePlan, make_live_capture, tool_versions
from lab.netns_trio import WanLink
from lab.traffic import ATTACK_LABELS, LABEL_COLUMNS, Label, Phase, labels_path
from tapwatch.features.card import ModelCard, card_path_for, load_card
from tapwatch.features.cli import run_guarded, setup_logging
from tapwatch.features.errors import BadInputError, ConfigError, TapwatchError
from tapwatch.inference.model import attack_threshold
from tapwatch.models.scoring.score import MODELS_DIR
from tapwatch.models.training.data_common import default_root

log = logging.getLogger(__name__)

REPORT_LABELS = (Label.NMAP_SYN_SCAN, Label.SYN_FLOOD, Label.SLOWLORIS, Label.BENIGN_HTTP, Label.BENIGN_DNS)
UNMATCHED = "unmatched"
AMBIGUOUS = "ambiguous"
_TOOL_TIMEOUT_S = 900.0


class LiveCheckError(TapwatchError):
    """A step of the live check failed (a tool's exit status, a missing labels file)."""


@dataclass
class Provenance:
    """Where the traffic came from and what each step cost."""

    source: str
    pcap: dict[str, Any]
    plan: dict[str, Any] | None = None
    tools: dict[str, str] = field(default_factory=dict)
    wall_s: dict[str, float] = field(default_factory=dict)


# -- phases and labels ----------------------------------------------------------------------------
def read_phases(path: Path) -> list[Phase]:
    """The phase table written by :func:`lab.traffic.write_labels`."""
    if not path.is_file():
        raise BadInputError(str(path), "no labels file (it is written beside the pcap as NAME-labels.csv)")
    table = pd.read_csv(path, dtype=str)
    if tuple(table.columns) != LABEL_COLUMNS:
        raise BadInputError(str(path), f"columns {list(table.columns)}, expected {list(LABEL_COLUMNS)}")
    try:
        return [Phase(Label(r.label), float(r.start), float(r.end), r.src_ip, r.dst_ip) for r in table.itertuples()]
    except ValueError as err:
        raise BadInputError(str(path), f"a row is not a phase: {err}") from err


def _ms(t: float) -> int:
    return int(t * 1000)  # flows carry whole epoch milliseconds (NFStream's clock), truncated


def label_flows(flows: pd.DataFrame, phases: list[Phase]) -> pd.DataFrame:
    """Each flow's label and whether it outlasted its phase.

    A flow belongs to a phase when its two addresses are the phase's (either direction) and its first packet
    falls in [start, end) of the phase, both truncated to milliseconds as the flow times are. A flow in no
    phase is ``unmatched``, in more than one ``ambiguous``; neither is given a label.

    Example
    -------
    >>> p = Phase(Label.SYN_FLOOD, 10.0, 11.0, "10.0.0.3", "10.0.0.2")
    >>> f = pd.DataFrame({"Src IP": ["10.0.0.3", "10.0.0.1"], "Dst IP": ["10.0.0.2"] * 2,
    ...                   "first_seen_ms": [10_500, 10_500], "last_seen_ms": [10_600, 10_600]})
    >>> label_flows(f, [p])["label"].tolist()
    ['syn-flood', 'unmatched']
    """
    src, dst = flows["Src IP"].astype(str), flows["Dst IP"].astype(str)
    first, last = flows["first_seen_ms"].astype("int64"), flows["last_seen_ms"].astype("int64")
    hits = pd.Series(0, index=flows.index)
    label = pd.Series(UNMATCHED, index=flows.index, dtype=object)
    end = pd.Series(0, index=flows.index, dtype="int64")
    for p in phases:
        ends = ((src == p.src_ip) & (dst == p.dst_ip)) | ((src == p.dst_ip) & (dst == p.src_ip))
        inside = ends & (first >= _ms(p.start)) & (first < _ms(p.end))
        hits += inside
        label[inside] = p.label.value
        end[inside] = _ms(p.end)
    label[hits > 1] = AMBIGUOUS
    return pd.DataFrame({"label": label, "outlasted": (hits == 1) & (last > end)}, index=flows.index)


# -- the commands users run -----------------------------------------------------------------------
def _tapwatch(args: list[str]) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tapwatch.app", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=_TOOL_TIMEOUT_S, check=False)
    if done.returncode != 0:
        raise LiveCheckError(f"tapwatch {args[0]} exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


def shipped_cards(models_dir: Path) -> list[tuple[Path, ModelCard]]:
    """Every ``NAME.onnx`` in ``models_dir`` with its card beside it (:func:`card_path_for`), by name."""
    found = []
    for onnx in sorted(models_dir.glob("*.onnx")):
        card_file = card_path_for(onnx)
        if card_file.is_file():
            found.append((onnx, load_card(card_file)))
    if not found:
        raise BadInputError(str(models_dir), "no shipped model (NAME.onnx beside NAME.card.json)")
    return found


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate k/n (95 % by default).

    >>> [round(x, 4) for x in (*wilson(0, 150), *wilson(42, 50))]
    [0.0, 0.025, 0.7149, 0.9166]
    """
    if n == 0:
        return (float("nan"), float("nan"))
    p, z2 = k / n, z * z
    mid, half = (p + z2 / (2 * n)) / (1 + z2 / n), z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (0.0 if k == 0 else max(0.0, mid - half), 1.0 if k == n else min(1.0, mid + half))  # exact at the ends


def _rate(flagged: pd.Series, rows: pd.Series) -> dict[str, Any]:
    n, k = int(rows.sum()), int((flagged & rows).sum())
    return {"flows": n, "flagged": k, "rate": k / n if n else None, "ci95": list(wilson(k, n)) if n else None}


def tally(scored: pd.DataFrame, labels: pd.DataFrame, threshold: float) -> dict[str, Any]:
    """Per label (and for all attacks, all benign): flows, flagged, rate, its interval, predicted classes."""
    score = pd.to_numeric(scored["score"], errors="coerce")
    flagged = score >= threshold
    out: dict[str, Any] = {"unscored": int(score.isna().sum()), "by_label": {}}
    for lab in [*(x.value for x in REPORT_LABELS), UNMATCHED, AMBIGUOUS]:
        rows = labels["label"] == lab
        if lab in (UNMATCHED, AMBIGUOUS) and not rows.any():
            continue
        entry = _rate(flagged, rows)
        entry["median_score"] = float(score[rows].median()) if rows.any() else None
        entry["predicted"] = {str(k): int(v) for k, v in scored.loc[rows, "predicted_class"].value_counts().items()}
        top = scored.loc[rows & flagged, "predicted_class"].value_counts()
        entry["flagged_as"] = {str(k): int(v) for k, v in top.items()}
        out["by_label"][lab] = entry
    for group, members in (("attack", ATTACK_LABELS), ("benign", set(Label) - ATTACK_LABELS)):
        out[group] = _rate(flagged, labels["label"].isin([m.value for m in members]))
    return out


def same_label_csv(flows_csv: Path, labels: pd.DataFrame, out: Path) -> None:
    """The flows with ``Src IP`` rewritten to ``IP#label``, so that a per-host window holds one label's flows.

    The control for windows that span two phases: a slowloris flow's window would otherwise start with the
    SYN flood's last flows. Only the key text changes; every feature stays as extracted.
    """
    with flows_csv.open(newline="") as src, out.open("w", newline="") as dst:
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\n")
        header = next(reader)
        writer.writerow(header)
        col = header.index("Src IP")
        for row, lab in zip(reader, labels["label"], strict=True):
            row[col] = f"{row[col]}#{lab}"
            writer.writerow(row)


def _score_cli(flows_csv: Path, onnx: Path, out: Path, n: int) -> pd.DataFrame:
    _tapwatch(["score", str(flows_csv), "-o", str(out), "--model", str(onnx)])
    scored = pd.read_csv(out, usecols=["predicted_class", "score", "window_mode"], keep_default_na=False)
    if len(scored) != n:
        raise LiveCheckError(f"tapwatch score wrote {len(scored)} rows for {n} flows")
    return scored


def score_model(
    csvs: tuple[Path, ...], onnx: Path, card: ModelCard, labels: pd.DataFrame, work: Path
) -> dict[str, Any]:
    """``tapwatch score --model`` on the flows and (if given) on their :func:`same_label_csv`; :func:`tally` of each."""
    entry: dict[str, Any] = {
        "name": card.name, "version": card.version, "onnx": onnx.name, "window_length": card.window_length,
        "sha256": card.onnx.sha256 if card.onnx else None, "threshold": attack_threshold(card, onnx),
    }  # fmt: skip
    try:
        scored = _score_cli(csvs[0], onnx, work / f"scored-{card.name}.csv", len(labels))
        control = (
            _score_cli(csvs[1], onnx, work / f"scored-{card.name}-same-label.csv", len(labels))
            if len(csvs) > 1
            else None
        )
    except LiveCheckError as err:
        entry["error"] = str(err)  # reported: a model that cannot read tapwatch's flows is a finding too
        return entry
    entry["window_mode"] = sorted(set(scored["window_mode"]))
    entry |= tally(scored, labels, entry["threshold"])
    if control is not None:
        entry["same_label_windows"] = tally(control, labels, entry["threshold"])
    return entry


# -- the run --------------------------------------------------------------------------------------
LINKS = ("lan", "wan")
"""The link conditions: the namespaces at memory speed, and the server's side shaped as a :class:`WanLink`."""


@dataclass(frozen=True)
class CheckConfig:
    """What the live check was asked to do.

    Parameters
    ----------
    pcap
        An existing capture (its labels beside it); ``None`` makes new traffic with ``plan`` per link.
    plan, links, wan
        The traffic plan; the link conditions to make (:data:`LINKS`; with ``pcap``, the one name to report
        it under); the WAN link's shape.
    out, name
        Where the reports go and their file stem.
    models_dir, datasets
        The shipped models; the folder holding ``cic-ids2017/`` (``None``: no feature comparison).
    keep
        A folder to keep the pcaps, labels, flows and scored CSVs in (``None``: a temporary one).
    pypi_venv, pypi_requirements
        The PyPI ``cicflowmeter``'s venv (built from the requirements if missing; ``None``: not run).
    command
        The command line to cite in the report.
    """

    pcap: Path | None = None
    plan: LivePlan = field(default_factory=LivePlan)
    links: tuple[str, ...] = LINKS
    wan: WanLink = field(default_factory=WanLink)
    out: Path = Path("models/reports")
    name: str = "live-check"
    models_dir: Path = MODELS_DIR
    datasets: Path | None = field(default_factory=default_root)
    keep: Path | None = None
    pypi_venv: Path | None = pypi.VENV
    pypi_requirements: Path = pypi.REQUIREMENTS
    command: str = "python -m lab.live_check"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _obtain(cfg: CheckConfig, link: str, work: Path) -> tuple[Path, list[Phase], Provenance, dict[str, Any]]:
    t0 = time.monotonic()
    if cfg.pcap is not None:
        pcap, source, plan, tools, stats = cfg.pcap, "given pcap (traffic not made by this run)", None, {}, {}
        link_info: dict[str, Any] = {"name": link, "asked": None, "applied": "not known (given pcap)"}
    else:
        lp = replace(cfg.plan, link=cfg.wan if link == "wan" else None)
        run = make_live_capture(work / "live.pcap", lp)
        pcap, source, tools = run.pcap, "made by this run (lab.live_traffic)", tool_versions()
        plan = asdict(lp)
        stats = {"packets_captured": run.stats.captured, "packets_dropped_by_kernel": run.stats.dropped}
        link_info = {"name": link, "asked": asdict(lp.link) if lp.link else None,
                     "applied": run.shaped.note if run.shaped else "none: namespaces at memory speed (LAN)",
                     "qdisc": run.shaped.shown if run.shaped else None}  # fmt: skip
    phases = read_phases(labels_path(pcap))
    info = {"file": pcap.name, "bytes": pcap.stat().st_size, "sha256": _sha256(pcap), **stats}
    prov = Provenance(source, info, plan, tools, {"traffic": round(time.monotonic() - t0, 1)})
    return pcap, phases, prov, link_info


def _pypi_tool(cfg: CheckConfig) -> Path | str:
    """The PyPI ``cicflowmeter`` executable, built into its venv if needed; or why it is not run."""
    if cfg.pypi_venv is None:
        return "not asked for (--no-cicflowmeter)"
    try:
        return pypi.ensure_venv(cfg.pypi_venv, cfg.pypi_requirements)
    except (OSError, subprocess.CalledProcessError) as err:
        problem = f"the cicflowmeter venv {cfg.pypi_venv} could not be built from {cfg.pypi_requirements}: {err}"
        log.warning("%s; the PyPI comparison is left out", problem)
        return problem


def start_pypi(tool: Path | str, pcap: Path, work: Path) -> pypi.PypiRun | str:
    """Start the PyPI ``cicflowmeter`` on ``pcap`` in the background; or why it is not run."""
    if isinstance(tool, str):
        return tool
    problem = pypi.full_snaplen_problem(pcap)
    if problem is not None:
        return f"{pcap.name}: {problem}"
    work.mkdir(parents=True, exist_ok=True)
    return pypi.PypiRun.start(tool, pcap, work / "cicflowmeter.csv")


def pypi_part(
    run: pypi.PypiRun | str, phases: list[Phase], flows: pd.DataFrame, models: list[tuple[Path, ModelCard]],
    work: Path,
) -> dict[str, Any]:  # fmt: skip
    """The PyPI ``cicflowmeter``'s flows of the same capture, labelled by the same phases, scored by each model.

    Each PyPI flow takes the first-packet time of the tapwatch flow it matches
    (:func:`lab.pypi_cicflowmeter.pypi_first_seen_ms`); one that matches none is ``unmatched``.
    """
    if isinstance(run, str):
        return {"skipped": run}
    seconds = run.wait()
    rows = pypi.read_pypi(run.out)
    first = pypi.pypi_first_seen_ms(rows, flows)
    duration_ms = (pd.to_numeric(rows["flow_duration"], errors="coerce").fillna(0) // 1000).astype("int64")
    keyed = pd.DataFrame({"Src IP": rows["src_ip"], "Dst IP": rows["dst_ip"], "first_seen_ms": first,
                          "last_seen_ms": first + duration_ms})  # fmt: skip
    labels = label_flows(keyed, phases)
    flows_csv = work / "cicflowmeter-flows.csv"
    pypi.cic_frame(rows).to_csv(flows_csv, index=False)
    t1 = time.monotonic()
    results = [score_model((flows_csv,), onnx, card, labels, work) for onnx, card in models]
    for (_, card), entry in zip(models, results, strict=True):
        entry["filled_features"] = [f for f in card.features if f in pypi.FILLED]
    return {
        "tool": {
            "command": "cicflowmeter -f PCAP -c OUT.csv",
            **pypi.installed_versions(run.exe.parent.parent),
        },
        "filled": pypi.FILLED,
        "timestamp": "PyPI's own (whole seconds, UTC); a host's flows in one second keep PyPI's file order",
        "flows": _flow_counts(keyed, labels, phases),
        "matched_to_tapwatch_flows": int((first >= 0).sum()),
        "wall_s": {
            "cicflowmeter_with_tapwatch_meanwhile": round(seconds, 1),
            "scoring": round(time.monotonic() - t1, 1),
        },
        "models": results,
    }


def _condition(
    cfg: CheckConfig, link: str, work: Path, models: list[tuple[Path, ModelCard]], tool: Path | str
) -> dict[str, Any]:
    """One link condition: traffic (or the given pcap), flows, labels, scores, features, the PyPI contrast."""
    work.mkdir(parents=True, exist_ok=True)
    pcap, phases, prov, link_info = _obtain(cfg, link, work)
    pypi_run = start_pypi(tool, pcap, work / "cicflowmeter")  # runs while tapwatch extracts and scores
    try:
        flows_csv = work / "flows.csv"
        t1 = time.monotonic()
        _tapwatch(["flows", str(pcap), "-o", str(flows_csv)])
        prov.wall_s["flows"] = round(time.monotonic() - t1, 1)
        flows = pd.read_csv(flows_csv, low_memory=False)
        labels = label_flows(flows, phases)
        t1 = time.monotonic()
        same_label_csv(flows_csv, labels, work / "flows-same-label.csv")
        csvs = (flows_csv, work / "flows-same-label.csv")
        results = [score_model(csvs, onnx, card, labels, work) for onnx, card in models]
        prov.wall_s["scoring"] = round(time.monotonic() - t1, 1)
    except BaseException:
        if not isinstance(pypi_run, str):
            pypi_run.stop()
        raise
    features = compare_features(flows, labels["label"], cfg.datasets)
    t1 = time.monotonic()
    contrast = pypi_part(pypi_run, phases, flows, models, work / "cicflowmeter")
    prov.wall_s["cicflowmeter_after_tapwatch"] = round(time.monotonic() - t1, 1)
    return {"link": link_info, **_document(prov, phases, flows, labels), "models": results, "features": features,
            "cicflowmeter": contrast}  # fmt: skip


def run_check(cfg: CheckConfig) -> dict[str, Any]:
    """Per link condition make or read the capture, extract, label, score, compare; write the reports."""
    started = datetime.now(UTC)
    t0 = time.monotonic()
    models = shipped_cards(cfg.models_dir)
    if cfg.pcap is not None:  # a given capture without its labels is refused before the PyPI tool's venv is built
        read_phases(labels_path(cfg.pcap))
    tool = _pypi_tool(cfg)
    conditions = {}
    with tempfile.TemporaryDirectory(prefix="tapwatch-live-check-") as tmp:
        work = cfg.keep or Path(tmp)
        for link in cfg.links:
            conditions[link] = _condition(cfg, link, work / link, models, tool)
    doc = {
        "generated_by": cfg.command,
        "date": started.isoformat(timespec="seconds"),
        "tapwatch_commit": _commit(),
        "wall_s": round(time.monotonic() - t0, 1),
        "wan_link": asdict(cfg.wan),
        "link_basis": link_basis(cfg.datasets, cfg.wan.rate_mbit),
        "conditions": conditions,
    }
    write_reports(doc, cfg.out, cfg.name)
    return doc


def _flow_counts(flows: pd.DataFrame, labels: pd.DataFrame, phases: list[Phase]) -> dict[str, Any]:
    by_src = flows.loc[labels["label"] == UNMATCHED, "Src IP"].astype(str).value_counts()
    attack_src = {p.src_ip for p in phases if p.label in ATTACK_LABELS}
    labelled = labels["label"].isin([x.value for x in Label])
    attack_rows = labels["label"].isin([x.value for x in ATTACK_LABELS])
    return {
        "total": len(flows),
        "labelled": int(labelled.sum()),
        "by_label": {lab.value: int((labels["label"] == lab.value).sum()) for lab in REPORT_LABELS},
        UNMATCHED: {"flows": int((labels["label"] == UNMATCHED).sum()), "by_src_ip": by_src.to_dict()},
        AMBIGUOUS: int((labels["label"] == AMBIGUOUS).sum()),
        "outlasted_phase": int(labels["outlasted"].sum()),
        "attack_flows_from_attacker": int((attack_rows & flows["Src IP"].astype(str).isin(attack_src)).sum()),
        "attack_flows": int(attack_rows.sum()),
    }


def _document(prov: Provenance, phases: list[Phase], flows: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """A condition's provenance, phases and flow counts (its model results are added by the caller)."""
    return {
        "provenance": {
            "source": prov.source,
            "pcap": prov.pcap,
            "plan": prov.plan,
            "tools": prov.tools,
            "wall_s": prov.wall_s,
        },
        "phases": {lab.value: sum(p.label is lab for p in phases) for lab in REPORT_LABELS},
        "phase_table": [dict(zip(LABEL_COLUMNS, p.row(), strict=True)) for p in phases],
        "flows": _flow_counts(flows, labels, phases),
    }


def _commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() or None


@click.command()
@click.option("--link", "link", type=click.Choice(["lan", "wan", "both"]), default=None,
              help="Link conditions to make: lan, wan, or both  [default: both; with --pcap, the name to report "
                   "the capture under, else 'given']")  # fmt: skip
@click.option("--pcap", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Reuse this capture and its NAME-labels.csv (no traffic made, no root needed).")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=Path("models/reports"),
              show_default=True, help="Where live-check.md and .json go.")  # fmt: skip
@click.option("--name", default="live-check", show_default=True, help="Report file stem.")
@click.option("--keep", type=click.Path(file_okay=False, path_type=Path),
              help="Keep the pcaps, labels, flows and scored CSVs here (a subfolder per link).")  # fmt: skip
@click.option("--models-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=MODELS_DIR,
              show_default="the installed tapwatch models")  # fmt: skip
@click.option("--datasets", type=click.Path(file_okay=False, path_type=Path), default=default_root,
              show_default="../shared/datasets",
              help="Folder with cic-ids2017/ (feature comparison; skipped if absent).")  # fmt: skip
@click.option("--cicflowmeter/--no-cicflowmeter", default=True, show_default=True,
              help="Also run the PyPI cicflowmeter on each capture and score its flows.")  # fmt: skip
@click.option("--cicflowmeter-venv", type=click.Path(file_okay=False, path_type=Path), default=pypi.VENV,
              show_default=True, help="Its venv (built from bench/parity_requirements.txt if missing).")  # fmt: skip
@click.option("--short", is_flag=True, help="The tests' short traffic plan (about 15 s per link).")
@click.option("-v", "--verbose", count=True)
def main(link: str | None, pcap: Path | None, out: Path, name: str, keep: Path | None, models_dir: Path,
         datasets: Path, cicflowmeter: bool, cicflowmeter_venv: Path, short: bool, verbose: int) -> None:  # fmt: skip
    """Score every shipped model on labelled traffic of real attack tools; write the live-check report."""
    setup_logging(verbose)
    command = " ".join(["python -m lab.live_check", *sys.argv[1:]])
    if pcap is not None and link == "both":
        raise click.UsageError("--pcap holds one condition: name it with --link lan or --link wan")
    links = (link or "given",) if pcap is not None else (LINKS if link in (None, "both") else (str(link),))
    cfg = CheckConfig(pcap, SHORT_PLAN if short else LivePlan(), links, WanLink(), out, name, models_dir,
                      datasets if datasets.is_dir() else None, keep, cicflowmeter_venv if cicflowmeter else None,
                      pypi.REQUIREMENTS, command)  # fmt: skip

    def body() -> int:
        try:
            doc = run_check(cfg)
        except (BadInputError, ConfigError):
            raise
        except TapwatchError as err:  # a tool failed or did not do what was asked: its message, exit 1
            click.echo(f"tapwatch: error: {err}", err=True)
            return 1
        for lk, c in doc["conditions"].items():
            click.echo(f"{out / name}.md: {lk}: {c['flows']['total']} flows, {len(c['models'])} models")
        return 0

    run_guarded(body)


if __name__ == "__main__":
    main()

"""The lab corpus: scenarios run over link profiles and seeds, gathered into one labelled flow dataset.

``python -m lab.corpus build --out lab/corpus`` runs every *unit* — one (scenario, seed, link profile) — into
``OUT/runs/UNIT/`` with :func:`lab.run.run_scenario`, then gathers the units' ``flows.csv`` into
``OUT/flows.csv.gz`` (each row with its ``unit``, ``scenario``, ``seed`` and ``link_profile``) and writes
``OUT/manifest.json`` (per unit: scenario, seed, profile, flows and episodes per family, handshake RTTs, tools
and their versions, each file's sha256; the dataset's sha256 and the build's time).

**Resumable.** A corpus build takes hours and may be interrupted. A unit whose directory has a ``run.json`` and
whose files still match the sha256 it lists is skipped; a unit directory without one (an interrupted run) is
moved aside to ``OUT/incomplete/`` (kept, never deleted) and run again. ``gather`` alone rebuilds the dataset
from the units that are complete; ``relabel`` applies the labelling rule again to every complete unit (from
its own episodes.csv) before gathering, when the rule changed after the units were run. The corpus stays out
of git (``lab/corpus/`` is ignored).

Units run in the order seed, scenario, profile, so an interrupted build still covers every profile evenly.

Example
-------
>>> [u.unit for u in plan_units(("ci-short",), ("none", "wan"), (1, 2), Path("c"))]
['ci-short-none-s1', 'ci-short-wan-s1', 'ci-short-none-s2', 'ci-short-wan-s2']
"""

from __future__ import annotations

import gzip
import json
import logging
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
import pandas as pd

from lab.delayline import Profile
from lab.episodes import read_episodes
from lab.labels import LABEL_COLUMNS, LabelIndex, hosts_from_episodes, label_frame
from lab.run import FILES, RunConfig, run_scenario
from lab.run_manifest import sha256_of, write_summary
from lab.scenarios import scenario
from lab.topo_plan import LabError
from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)

RUN_COLUMNS = ("unit", "scenario", "seed", "link_profile")


def plan_units(scenarios: Sequence[str], profiles: Sequence[str], seeds: Sequence[int], out: Path,
               prefix: str = "twlab", capture_bytes: int = 8 << 30) -> list[RunConfig]:  # fmt: skip
    """Every unit of a build, in the order seed, scenario, profile."""
    profs = [Profile(p) for p in profiles]
    return [RunConfig(scenario(name), seed, prof, Path(out) / "runs" / f"{name}-{prof.value}-s{seed}", prefix,
                      capture_bytes) for seed in seeds for name in scenarios for prof in profs]  # fmt: skip


def unit_state(run_dir: Path) -> str:
    """``complete`` (run.json and its files' sha256 agree), ``absent`` or ``incomplete``."""
    if not run_dir.exists():
        return "absent"
    summary = run_dir / "run.json"
    if not summary.is_file():
        return "incomplete"
    try:
        sums = json.loads(summary.read_text())["sha256"]
    except (ValueError, KeyError, TypeError):
        return "incomplete"
    ok = all((run_dir / name).is_file() and sha256_of(run_dir / name) == sums.get(name) for name in FILES)
    return "complete" if ok else "incomplete"


def _set_aside(run_dir: Path, out: Path) -> None:
    aside = out / "incomplete" / f"{run_dir.name}-{int(time.time())}"
    aside.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(run_dir), aside)
    log.warning("corpus: unit %s was incomplete; moved aside to %s", run_dir.name, aside)


def build(
    units: Sequence[RunConfig], out: Path, runner: Callable[[RunConfig], object] = run_scenario
) -> dict[str, Any]:
    """Run the units not yet complete with ``runner``, then gather the corpus; return the manifest."""
    started = time.time()
    for index, cfg in enumerate(units, start=1):
        state = unit_state(cfg.out)
        if state == "complete":
            log.info("corpus: unit %s (%s/%s) is complete: skipped", cfg.unit, index, len(units))
            continue
        if state == "incomplete":
            _set_aside(cfg.out, out)
        log.warning("corpus: unit %s (%s/%s) starts", cfg.unit, index, len(units))
        runner(cfg)
    return gather(out, build_seconds=time.time() - started)


def gather(out: Path, build_seconds: float | None = None) -> dict[str, Any]:
    """Gather every complete unit under ``OUT/runs`` into ``OUT/flows.csv.gz`` and ``OUT/manifest.json``."""
    runs = sorted(p for p in (Path(out) / "runs").glob("*") if unit_state(p) == "complete")
    if not runs:
        raise LabError(f"corpus {out}: no complete unit under {out}/runs")
    dataset = Path(out) / "flows.csv.gz"
    tmp = dataset.with_suffix(".tmp")
    units = []
    with gzip.open(tmp, "wt", newline="", compresslevel=6) as fh:
        for number, run_dir in enumerate(runs):
            summary = json.loads((run_dir / "run.json").read_text())
            flows = pd.read_csv(run_dir / "flows.csv", low_memory=False)
            values = (summary["unit"], summary["scenario"], summary["seed"], summary["link_profile"])
            for col, value in zip(RUN_COLUMNS, values, strict=True):
                flows.insert(len(flows.columns), col, value)
            flows.to_csv(fh, index=False, header=number == 0)
            units.append(_unit_entry(summary, run_dir))
    tmp.replace(dataset)
    previous = _previous_seconds(Path(out))
    manifest = {"units": units, "dataset": dataset.name, "dataset_sha256": sha256_of(dataset),
                "flows": sum(u["flows_total"] for u in units), "gathered": time.time(),
                "build_seconds": previous + (build_seconds or 0.0),
                "unit_wall_seconds": round(sum(u["wall_seconds"] or 0.0 for u in units), 1)}  # fmt: skip
    (Path(out) / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    log.warning("corpus %s: %s units, %s flows", out, len(units), manifest["flows"])
    return manifest


def relabel(out: Path) -> dict[str, int]:
    """Apply today's labelling rule (:mod:`lab.labels`) again to every complete unit's flows.csv, from its own
    episodes.csv; update its run.json (flows per family, the file's sha256). Returns flows per family."""
    totals: dict[str, int] = {}
    for run_dir in sorted(p for p in (Path(out) / "runs").glob("*") if unit_state(p) == "complete"):
        episodes = read_episodes(run_dir / "episodes.csv")
        flows = pd.read_csv(run_dir / "flows.csv", low_memory=False).drop(columns=list(LABEL_COLUMNS))
        labelled = label_frame(flows, LabelIndex.build(episodes, hosts_from_episodes(episodes)))
        tmp = run_dir / "flows.csv.tmp"
        labelled.to_csv(tmp, index=False)
        tmp.replace(run_dir / "flows.csv")
        summary = json.loads((run_dir / "run.json").read_text())
        counts = {str(k): int(v) for k, v in labelled["family"].value_counts().items()}
        if counts != summary["flows"]:
            log.warning("corpus: unit %s relabelled: %s -> %s", run_dir.name, summary["flows"], counts)
        summary.update(flows=counts, flows_total=sum(counts.values()))
        summary["sha256"]["flows.csv"] = sha256_of(run_dir / "flows.csv")
        write_summary(run_dir, summary)
        for family, n in counts.items():
            totals[family] = totals.get(family, 0) + n
    return totals


def _previous_seconds(out: Path) -> float:
    """Build time already spent by earlier, interrupted invocations (kept in the manifest)."""
    try:
        return float(json.loads((out / "manifest.json").read_text()).get("build_seconds", 0.0))
    except (OSError, ValueError):
        return 0.0


def _unit_entry(summary: dict[str, Any], run_dir: Path) -> dict[str, Any]:
    keys = ("unit", "scenario", "seed", "link_profile", "profile_rtt_ms", "seconds", "wall_seconds", "flows",
            "flows_total", "attack_episodes", "attacks", "handshake_rtt", "capture", "tools", "tapwatch",
            "sha256")  # fmt: skip
    return {k: summary.get(k) for k in keys} | {"dir": run_dir.name}


@click.group()
@click.option("-v", "--verbose", count=True, help="More log output.")
def main(verbose: int) -> None:
    """Build the lab corpus (needs root). Example: sudo python -m lab.corpus build --out lab/corpus"""
    logging.basicConfig(level=logging.WARNING - 10 * min(verbose, 2), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")  # fmt: skip


def _csv(kind: type, text: str) -> tuple[Any, ...]:
    return tuple(kind(x) for x in text.split(",") if x)


@main.command("build")
@click.option("--out", type=click.Path(path_type=Path), default=Path("lab/corpus"), show_default=True)
@click.option("--scenarios", default="office-day,attack-mix", show_default=True, help="Comma-separated names.")
@click.option("--profiles", default="none,lan,wan,lossy", show_default=True, help="Comma-separated link profiles.")
@click.option("--seeds", default="1", show_default=True, help="Comma-separated seeds.")
@click.option("--prefix", default="twlab", show_default=True, help="Prefix of the lab's namespace names.")
@click.option("--capture-gib", type=click.FloatRange(0.01, 1024), default=8.0, show_default=True,
              help="Disk budget of each unit's capture.")  # fmt: skip
def build_command(out: Path, scenarios: str, profiles: str, seeds: str, prefix: str, capture_gib: float) -> None:
    """Run every (scenario, seed, profile) unit not yet complete, then gather the dataset."""
    try:
        units = plan_units(_csv(str, scenarios), _csv(str, profiles), _csv(int, seeds), out, prefix,
                           int(capture_gib * (1 << 30)))  # fmt: skip
        manifest = build(units, out)
    except (TapwatchError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"corpus {out}: {len(manifest['units'])} units, {manifest['flows']} flows")


@main.command("relabel")
@click.option("--out", type=click.Path(path_type=Path), default=Path("lab/corpus"), show_default=True)
def relabel_command(out: Path) -> None:
    """Label every complete unit's flows again with today's rule, then gather the dataset."""
    try:
        totals = relabel(out)
        manifest = gather(out)
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"corpus {out}: {len(manifest['units'])} units relabelled: {totals}")


@main.command("gather")
@click.option("--out", type=click.Path(path_type=Path), default=Path("lab/corpus"), show_default=True)
def gather_command(out: Path) -> None:
    """Rebuild the dataset and manifest from the complete units."""
    try:
        manifest = gather(out)
    except TapwatchError as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"corpus {out}: {len(manifest['units'])} units, {manifest['flows']} flows")


if __name__ == "__main__":
    main()

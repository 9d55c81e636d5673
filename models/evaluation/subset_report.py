"""Test metrics of the shipped Hybrid's configuration trained on a feature subset (the card's ``metrics``).

The deployment weights of a shipped model are fitted on the time split's train and test parts, so they have
no held-out test; their card carries the test metrics of the same configuration trained on the train part
only: the CIC report's protocol ``shipped`` (:func:`tapwatch.models.evaluation.evaluate.cic_plan`). This module runs
that protocol's ``hybrid-fast`` configuration unchanged except for ``TrainConfig.features`` and writes
``models/reports/cic-ids2017-<subset>.md`` and ``.json`` (the JSON in the layout ``tapwatch export --report``
reads), with the 82-feature run of ``models/reports/cic-ids2017.json`` beside it for comparison.

    python -m tapwatch.models.evaluation.subset_report --features original

Runs are cached in ``models/reports/cache/cic-ids2017-<subset>/`` (a rerun trains nothing).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from tapwatch.features.contract import FEATURE_SUBSETS, feature_subset
from tapwatch.models.evaluation.evaluate import Plan, Protocol, Runner, make_plan
from tapwatch.models.evaluation.report import _families, summarize, tables, versions

DATASET = "cic-ids2017"
MODEL = "hybrid-fast"
REPORTS = Path("models") / "reports"


def subset_plan(subset: str) -> Plan:
    """The ``shipped`` protocol's ``hybrid-fast`` run of the CIC plan, with ``features=subset``."""
    shipped = next(p for p in make_plan(DATASET).protocols if p.name == "shipped")
    cfg = replace(next(c for c in shipped.runs if c.model == MODEL), features=subset)
    n = len(feature_subset(subset))
    title = f"{shipped.title}, on the {n} features of subset '{subset}'"
    return Plan(DATASET, (Protocol("shipped", title, (cfg,)),), f"{MODEL}, seed {cfg.seed}: {shipped.title}")


def _reference(reports: Path) -> dict[str, Any]:
    """The 82-feature run of the same protocol from the CIC report, and the seed spread of its main protocol."""
    path = reports / f"{DATASET}.json"
    if not path.exists():
        return {}
    protocols = json.loads(path.read_text()).get("protocols", [])
    out: dict[str, Any] = {}
    for proto in protocols:
        if proto.get("name") == "shipped" and MODEL in proto.get("summary", {}):
            runs = [r for r in proto["runs"] if r["config"]["model"] == MODEL]
            out = {"report": str(path), "summary": proto["summary"][MODEL], "runs": runs}
    main = protocols[0].get("summary", {}).get(MODEL) if protocols and out else None
    if main:
        out["main_protocol"] = {"title": protocols[0]["title"], "attack_f1": main["attack.f1"], "far": main["far"]}
    return out


def _spread(ref: dict[str, Any]) -> list[str]:
    main = ref.get("main_protocol")
    if not main:
        return []
    f1, far = main["attack_f1"], main["far"]
    return [
        f"- One seed per feature set. For scale: on the CIC report's main protocol ({main['title']}; smaller "
        f"budget) {MODEL}'s attack F1 is {f1[0]:.4f} ± {f1[1]:.4f} and its FAR {far[0]:.4f} ± {far[1]:.4f} "
        f"(mean ± sample std over {int(f1[2])} seeds), so differences of that size between the rows below are "
        "within the seed spread."
    ]


def write_subset_report(subset: str, reports: Path = REPORTS, echo: Any = click.echo) -> Path:
    """Run (or read from the cache) the subset's run; write ``<reports>/cic-ids2017-<subset>.md`` and ``.json``."""
    start = time.perf_counter()
    plan = subset_plan(subset)
    stem = f"{DATASET}-{subset}"
    runner = Runner(plan, reports / "cache" / stem, echo)
    proto = plan.protocols[0]
    runs = runner.run()[proto.name]
    cfg = proto.runs[0]
    ds, prep = runner.dataset(cfg), runner.prepared(cfg)
    split = prep.split.describe(ds)
    summary = summarize(runs)
    ref = _reference(reports)
    command = f"python -m tapwatch.models.evaluation.subset_report --features {subset}"
    doc: dict[str, Any] = {
        "dataset": DATASET,
        "command": command,
        "generated": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - start, 1),
        "budget": plan.budget,
        "features": list(prep.ds.features),
        "versions": versions(),
        "files": [{"name": f.name, "sha256": f.sha256, "verified": f.verified} for f in ds.files],
        "data_steps": list(prep.ds.steps),
        "protocols": [{"name": proto.name, "title": proto.title, "split": split, "summary": summary, "runs": runs}],
        "reference_all_features": ref,
    }
    dropped = [f for f in FEATURE_SUBSETS["all"] if f not in prep.ds.features]
    both = {f"{MODEL}, {len(prep.ds.features)} features ({subset})": summary[MODEL]}
    if ref:
        both = {f"{MODEL}, {len(FEATURE_SUBSETS['all'])} features (all)": ref["summary"], **both}
    md = [
        f"# {DATASET}: the shipped Hybrid's configuration on feature subset '{subset}'",
        "",
        f"Generated by `{command}`; do not edit by hand.",
        "",
        f"- Protocol: {proto.title}. The same run as the CIC report's protocol `shipped` "
        f"(`tapwatch evaluate --dataset {DATASET}`), with `features={subset!r}`: without {dropped}.",
        "- Threshold: maximal attack F1 on the validation part with validation FPR <= 1 %; never chosen on test.",
        "- Split: " + "; ".join(split["notes"]) + ".",
        "- Rows train / val / test: " + " / ".join(f"{split[p]['rows']:,}" for p in ("train", "val", "test")) + ".",
        f"- Wall time of this invocation: {doc['wall_s']:,.0f} s (training: {runs[0]['wall_s']:,.0f} s, "
        f"{runs[0]['info'].get('epochs_run', '?')} epochs; cached runs are reused).",
        "- Versions: " + ", ".join(f"{k} {v}" for k, v in doc["versions"].items()),
        *_spread(ref),
        "",
        *tables(both),
        "",
        *(["Family columns below: this subset's run, then the 82-feature run.", ""] if ref else []),
        *_families(runs + ref.get("runs", [])[:1]),
    ]
    reports.mkdir(parents=True, exist_ok=True)
    (reports / f"{stem}.json").write_text(json.dumps(doc, indent=1, default=str) + "\n")
    path = reports / f"{stem}.md"
    path.write_text("\n".join(md) + "\n")
    return path


@click.command()
@click.option("--features", "subset", type=click.Choice([s for s in FEATURE_SUBSETS if s != "all"]), required=True)
@click.option("--reports", type=click.Path(file_okay=False, path_type=Path), default=REPORTS, show_default=True)
def main(subset: str, reports: Path) -> None:
    """Train and test the shipped Hybrid's configuration on a feature subset; write its report."""
    md = write_subset_report(subset, reports)
    click.echo(f"wrote {md} and {md.with_suffix('.json')}")


if __name__ == "__main__":
    main()

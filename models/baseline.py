"""Learn a site baseline from benign flows: ``python -m tapwatch.models.baseline --flows FLOWS.csv ... -o FILE``.

Input: ``tapwatch flows`` CSVs of the site's traffic (the lab's ``flows.csv`` carry a ``family`` column, and only
its ``benign`` rows are used; a CSV without that column is taken as benign as a whole). Output: a
:class:`~tapwatch.features.baseline.SiteBaseline`:

* **volume thresholds**: each rule's count over the benign buckets (the sensor's own aggregator replayed on the
  flows), at the ``1 - budget`` quantile, times ``margin``, never under the rule's floor;
* **benign medians** of every count and of every CIC feature (what summaries put beside a value);
* **periodic services**: (host, port) pairs that benign clients reach on a timer (NTP, monitoring): the beacon
  rule leaves them be;
* **window bars**: per family, one more than the most window-view evidence (verdicts over the threshold whose
  most probable class is of that family) that any one benign host gave within a minute, scored with the model
  the sensor serves, windows built by the sensor's own :class:`~tapwatch.features.window.Windower`.

Nothing here sees an attack: the thresholds are a false-alert budget on benign traffic, so a site can learn
its own. The file records its inputs (paths, sha256s, rows), the budget and the command.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
from collections import defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.capture.aggregates import AggregatorConfig, aggregates_of
from tapwatch.capture.csvreplay import records_from_flows_csv
from tapwatch.features.aggregates import AggregateRecord, View
from tapwatch.features.baseline import BEACON_CV, FAIL_RATIO, FLOORS, SERVICE_SHARE, SiteBaseline
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.families import Family, family_of_class
from tapwatch.features.schema import FlowRecord
from tapwatch.features.window import Windower
from tapwatch.inference.model import Model, load_model
from tapwatch.models.training.export import sha256_file

log = logging.getLogger(__name__)

MINUTE_MS = 60_000


def benign_records(paths: Iterable[Path]) -> Iterator[FlowRecord]:
    """The benign flows of each file, in file order (the lab's ``family`` column; unlabelled: every row)."""
    for path in paths:
        for record, extra in records_from_flows_csv(path):
            if extra.get("family", "benign") == Family.BENIGN.value:
                yield record


def _quantile(values: Sequence[float], budget: float) -> float:
    return float(np.quantile(np.asarray(values, dtype=float), 1 - budget)) if values else 0.0


def volume_thresholds(aggs: list[AggregateRecord], budget: float, margin: float) -> dict[str, float]:
    """Each rule's threshold: the benign ``1 - budget`` quantile of what it counts, times ``margin``, over its floor."""
    src = [a for a in aggs if a.view is View.SOURCE and a.flows]
    vic = [a for a in aggs if a.view is View.VICTIM and a.flows]
    failing = [a for a in src if (a.unanswered + a.rejected) / a.flows >= FAIL_RATIO]
    service = [a for a in vic if a.top_port_flows / a.flows >= SERVICE_SHARE or a.icmp / a.flows >= SERVICE_SHARE]
    counts = {
        "scan_ports": [a.distinct_ports for a in failing], "scan_hosts": [a.distinct_peers for a in failing],
        "pair_flows": [a.pair_flows for a in src], "dos_flows": [a.flows for a in service],
        "dos_packets": [a.packets for a in service], "dos_sources": [a.distinct_peers for a in service],
    }  # fmt: skip
    out = {name: float(max(FLOORS[name], math.ceil(_quantile(v, budget) * margin) + 1)) for name, v in counts.items()}
    out["beacon_min"] = FLOORS["beacon_min"]
    out["beacon_cv"] = BEACON_CV
    return out


def _service_counts(aggs: list[AggregateRecord]) -> dict[str, dict[str, list[float]]]:
    """port -> per-service count -> its values over the benign buckets (pairs by their port, victims by their
    busiest port when the bucket is about one service)."""
    out: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for a in aggs:
        if not a.flows:
            continue
        if a.view is View.SOURCE and a.pair_flows:
            out[str(a.pair_port)]["pair_flows"].append(a.pair_flows)
        elif a.view is View.VICTIM and a.top_port_flows / a.flows >= SERVICE_SHARE:
            out[str(a.top_port)]["dos_flows"].append(a.flows)
            out[str(a.top_port)]["dos_packets"].append(a.packets)
    return out


def service_thresholds(
    aggs: list[AggregateRecord], budget: float, margin: float
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Per destination port: each per-service count's threshold (as :func:`volume_thresholds`) and median."""
    thresholds: dict[str, dict[str, float]] = {}
    meds: dict[str, dict[str, float]] = {}
    for port, counts in sorted(_service_counts(aggs).items()):
        thresholds[port] = {n: float(max(FLOORS[n], math.ceil(_quantile(v, budget) * margin) + 1))
                            for n, v in counts.items()}  # fmt: skip
        meds[port] = {n: float(np.median(v)) for n, v in counts.items()}
    return thresholds, meds


def medians(aggs: list[AggregateRecord]) -> dict[str, dict[str, float]]:
    """view -> count -> median over the benign buckets."""
    out: dict[str, dict[str, float]] = {}
    for view in View:
        rows = [a.counts() for a in aggs if a.view is view]
        keys = [
            k for k, v in (rows[0].items() if rows else []) if isinstance(v, int | float) and not isinstance(v, bool)
        ]
        out[view.value] = {k: float(np.median([r[k] for r in rows])) for k in keys}
    # the most regular pair of a benign bucket that has one (what a beacon's summary compares against)
    cvs = [a.beacons[0].cv for a in aggs if a.view is View.SOURCE and a.beacons]
    if cvs:
        out[View.SOURCE.value]["beacon_cv"] = float(np.median(cvs))
    return out


def periodic_services(aggs: list[AggregateRecord], cv: float, count: float) -> list[str]:
    """``host:port`` of the pairs benign sources reach on a timer."""
    found = {f"{b.peer}:{b.port}" for a in aggs if a.view is View.SOURCE
             for b in a.beacons if b.count >= count and b.cv <= cv}  # fmt: skip
    return sorted(found)


def window_bars(records: list[FlowRecord], model: Model, batch: int = 256) -> dict[str, int]:
    """Per family: one more than the most window-view evidence one benign host gave within a minute."""
    windower = Windower(model.card)
    entries = [windower.add(r) for r in records]
    names = model.card.class_names
    benign = model.card.benign_class
    best: dict[str, int] = defaultdict(int)
    recent: dict[tuple[str, str], deque[int]] = defaultdict(deque)
    for start in range(0, len(entries), batch):
        chunk = entries[start : start + batch]
        probs = model.predict(np.stack([e.tensor for e in chunk]))
        scores = 1.0 - probs[:, names.index(benign)]
        for e, p, score in zip(chunk, probs, scores, strict=True):
            cls = names[int(np.argmax(p))]
            fam = family_of_class(cls)
            if score < model.threshold or cls == benign or fam in (None, Family.BENIGN):
                continue
            host = e.flow.dst_ip if fam.by_victim else e.flow.src_ip
            q = recent[(fam.value, host)]
            q.append(e.flow.last_seen_ms)
            while q and e.flow.last_seen_ms - q[0] > MINUTE_MS:
                q.popleft()
            best[fam.value] = max(best[fam.value], len(q))
    return {f.value: best.get(f.value, 0) + 1 for f in Family if f is not Family.BENIGN}


def learn(paths: list[Path], model: Model | Sequence[Model] | None, budget: float, margin: float,
          bucket_s: float) -> SiteBaseline:  # fmt: skip
    """The baseline of the benign flows in ``paths`` (see the module docstring); window bars for each model."""
    models = [model] if isinstance(model, Model) else list(model or [])
    per_file = [list(benign_records([p])) for p in paths]
    source: dict[str, Any] = {
        "files": [{"path": str(p), "sha256": sha256_file(p), "benign_flows": len(r)}
                  for p, r in zip(paths, per_file, strict=True)],
        "command": "python -m tapwatch.models.baseline " + " ".join(sys.argv[1:]),
    }  # fmt: skip
    return baseline_of(per_file, models, budget, margin, bucket_s, source)


def baseline_of(per_file: list[list[FlowRecord]], models: Sequence[Model], budget: float, margin: float,
                bucket_s: float, source: dict[str, Any]) -> SiteBaseline:  # fmt: skip
    """The baseline of benign flows already read (one list per capture or file: aggregates and window bars never
    join two); ``source`` says where they came from."""
    aggs = [a for recs in per_file for a in aggregates_of(recs, AggregatorConfig(bucket_s=bucket_s))]
    thresholds = volume_thresholds(aggs, budget, margin)
    services, service_medians = service_thresholds(aggs, budget, margin)
    feats = np.asarray([r.values for recs in per_file for r in recs], dtype=float)
    bars = {}
    for m in models:
        found = [window_bars(recs, m) for recs in per_file]
        if found:
            bars[m.card.name] = {f: max(b[f] for b in found) for f in found[0]}
    source = {
        **source, "buckets": len(aggs), "budget": budget, "margin": margin,
        "model": models[0].card.name if models else None, "models": [m.card.name for m in models],
    }  # fmt: skip
    return SiteBaseline(
        bucket_s=bucket_s, thresholds=thresholds, medians=medians(aggs), services=services,
        service_medians=service_medians,
        feature_medians={n: float(v) for n, v in zip(FEATURE_NAMES, np.median(feats, axis=0), strict=True)}
        if len(feats) else {},
        periodic=periodic_services(aggs, BEACON_CV, thresholds["beacon_min"]), window_open=bars, source=source,
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tapwatch.models.baseline", description=__doc__.split("\n")[0])
    parser.add_argument("--flows", type=Path, action="append", required=True, help="tapwatch flows CSV (repeat)")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="ONNX model whose window bars to learn (card beside it; repeat)")  # fmt: skip
    parser.add_argument("--budget", type=float, default=1e-4, help="benign buckets allowed over a threshold")
    parser.add_argument("--margin", type=float, default=1.5, help="factor over the benign quantile")
    parser.add_argument("--bucket-s", type=float, default=10.0, help="aggregate bucket (the sensor's)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    baseline = learn(args.flows, [load_model(m) for m in args.model], args.budget, args.margin, args.bucket_s)
    args.output.write_text(baseline.model_dump_json(indent=1) + "\n")
    log.info("wrote %s: thresholds %s; window bars %s", args.output, baseline.thresholds, baseline.window_open)
    return 0


if __name__ == "__main__":
    sys.exit(main())

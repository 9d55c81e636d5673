"""What does training on time features rounded to the sensor's 1 ms resolution cost a Random Forest?

The sensor (NFStream) stamps packets in whole milliseconds; the corrected CIC-IDS2017 CSVs are in
microseconds. :func:`tapwatch.features.resolution.quantize_columns` maps CSV rows onto the sensor's
resolution. This script trains a Random Forest on the corrected CIC-IDS2017 subset in ../shared and compares

* A: trained and tested on the original µs features,
* B: trained and tested on quantised (ms) features, what tapwatch does,
* C: trained on µs, tested on ms, what a model trained without rounding would see live,

on a stratified random 70/30 split and on the time split of EVALUATION.md (first 70 % of flows by
``Timestamp`` for training), over several seeds. It writes ``models/reports/time-resolution.md`` and
``.json``; both are generated, never edited by hand.

Run from the repo root: ``python -m lab.resolution_check`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import logging
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import confusion_matrix, f1_score
from sklearn.model_selection import train_test_split

from tapwatch.features.contract import FEATURE_NAMES, RATE_FEATURES, TIME_FEATURES, TIME_RESOLUTION_US
from tapwatch.features.resolution import quantize_columns
from tapwatch.models.training.data_common import default_root

log = logging.getLogger("lab.resolution_check")

REPO_ROOT = Path.cwd()  # run from the repository root, like the other report commands
CIC_SUBSET = Path("cic-ids2017") / "engelen_improved_sample_rnd5000"
"""The corrected CIC-IDS2017 subset, below the datasets folder."""
OUT_DIR = REPO_ROOT / "models" / "reports"
COMMAND = "python -m lab.resolution_check"
BENIGN = "BENIGN"
METRICS = ("precision", "recall", "f1", "far", "accuracy", "macro_f1", "fn", "fp")


class SplitProtocol(str, Enum):
    """How rows are divided into train and test (EVALUATION.md)."""

    RANDOM = "random"
    TIME = "time"


class Variant(str, Enum):
    """Resolution of the training and the test features."""

    A = "A"
    B = "B"
    C = "C"


VARIANT_TEXT = {
    Variant.A: "A: train µs, test µs",
    Variant.B: "B: train ms, test ms",
    Variant.C: "C: train µs, test ms",
}
PROTOCOL_TEXT = {
    SplitProtocol.RANDOM: "random stratified 70/30",
    SplitProtocol.TIME: "time split, first 70 % of flows train",
}


@dataclass(frozen=True)
class Config:
    """Parameters of one run.

    Parameters
    ----------
    data_dir
        Folder holding the 16 gzip CSVs of the corrected CIC-IDS2017 subset.
    out_dir
        Folder the Markdown and JSON reports are written to.
    seeds
        Seeds of the random split and of the forests; the time split is fixed, so only the forest varies there.
    n_trees, n_jobs, test_size
        Random Forest size, worker processes, test share of both protocols.
    """

    data_dir: Path = field(default_factory=lambda: default_root() / CIC_SUBSET)
    out_dir: Path = OUT_DIR
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    n_trees: int = 200
    n_jobs: int = 2
    test_size: float = 0.3


@dataclass(frozen=True)
class Data:
    """The subset as arrays: features at both resolutions, labels and the time order of the rows."""

    x_us: np.ndarray
    x_ms: np.ndarray
    label: np.ndarray
    attack: np.ndarray
    time_order: np.ndarray


def _sha256sums(data_dir: Path) -> dict[str, str]:
    """The expected digests from the dataset's SHA256SUMS, keyed by file name (empty if absent)."""
    path = data_dir.parent / "SHA256SUMS"
    if not path.exists():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {Path(name.strip()).name: digest for digest, name in pairs}


def load_frame(data_dir: Path) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Read every ``*.csv.gz`` once; hash its uncompressed bytes and parse them."""
    paths = sorted(data_dir.glob("*.csv.gz"))
    if not paths:
        raise FileNotFoundError(f"{data_dir}: no *.csv.gz files")
    expected = _sha256sums(data_dir)
    frames, files = [], []
    for path in paths:
        raw = gzip.decompress(path.read_bytes())
        digest = hashlib.sha256(raw).hexdigest()
        frame = pd.read_csv(io.BytesIO(raw))
        name = path.name.removesuffix(".gz")
        match = expected.get(name) == digest
        files.append({"file": name, "rows": len(frame), "sha256": digest, "matches_SHA256SUMS": match})
        frames.append(frame)
    return pd.concat(frames, ignore_index=True), files


def build_data(frame: pd.DataFrame) -> Data:
    """Features in contract order at µs and at the sensor's resolution; binary and multi-class labels."""
    x_us = frame[list(FEATURE_NAMES)].astype(np.float64)
    x_ms = x_us.copy()
    quantize_columns(x_ms)
    stamps = pd.to_datetime(frame["Timestamp"], format="ISO8601")
    # A stable sort keeps ties in file order, so the time split is the same on every run.
    order = np.argsort(stamps.to_numpy(), kind="stable")
    label = frame["Label"].to_numpy(dtype=str)
    return Data(x_us.to_numpy(), x_ms.to_numpy(), label, (label != BENIGN).astype(np.int8), order)


def quantisation_stats(frame: pd.DataFrame, data: Data) -> dict[str, Any]:
    """How much quantisation changes the rows: time features, rates, flows shorter than 1 ms."""
    idx = {name: i for i, name in enumerate(FEATURE_NAMES)}
    t_cols, r_cols = [idx[n] for n in TIME_FEATURES], [idx[n] for n in RATE_FEATURES if n in idx]
    changed = data.x_us != data.x_ms
    duration = frame["Flow Duration"].to_numpy(dtype=np.float64)
    short, to_zero = duration < TIME_RESOLUTION_US, duration < TIME_RESOLUTION_US / 2
    long_ = duration >= TIME_RESOLUTION_US
    rel = np.abs(data.x_ms[long_, idx["Flow Duration"]] - duration[long_]) / duration[long_]
    by_class = pd.Series(short).groupby(data.label).agg(["sum", "size"])
    n = len(frame)
    return {
        "rows": n,
        "rows_time_feature_changed": int(changed[:, t_cols].any(axis=1).sum()),
        "rows_rate_feature_changed": int(changed[:, r_cols].any(axis=1).sum()),
        "rows_any_feature_changed": int(changed.any(axis=1).sum()),
        "share_values_changed_by_time_feature": {n_: float(changed[:, idx[n_]].mean()) for n_ in TIME_FEATURES},
        "flow_duration_lt_1ms": int(short.sum()),
        "flow_duration_lt_1ms_benign": int(short[data.attack == 0].sum()),
        "flow_duration_lt_1ms_attack": int(short[data.attack == 1].sum()),
        "flow_duration_rounds_to_0": int(to_zero.sum()),
        "flow_duration_zero_before": int((duration == 0).sum()),
        "flow_duration_ge_1ms_median_relative_change": float(np.median(rel)) if rel.size else 0.0,
        "flow_duration_lt_1ms_by_class": {k: [int(v["sum"]), int(v["size"])] for k, v in by_class.iterrows()},
    }


def split(data: Data, protocol: SplitProtocol, seed: int, test_size: float) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of train and test; the random split is stratified on the multi-class label."""
    if protocol is SplitProtocol.TIME:
        cut = round(len(data.time_order) * (1 - test_size))
        return data.time_order[:cut], data.time_order[cut:]
    rows = np.arange(len(data.label))
    train, test = train_test_split(rows, test_size=test_size, stratify=data.label, random_state=seed)
    return np.sort(train), np.sort(test)


def binary_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Attack precision, recall, F1, the false alarm rate (FPR on benign), accuracy, FN and FP counts."""
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y_true, y_pred, labels=[0, 1]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    far = fp / (fp + tn) if fp + tn else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "far": far,
        "accuracy": (tp + tn) / len(y_true),
        "fn": fn,
        "fp": fp,
    }


def _forest(cfg: Config, seed: int, x: np.ndarray, y: np.ndarray) -> RandomForestClassifier:
    model = RandomForestClassifier(n_estimators=cfg.n_trees, n_jobs=cfg.n_jobs, random_state=seed)
    return model.fit(x, y)


def run_one(data: Data, protocol: SplitProtocol, seed: int, cfg: Config) -> dict[str, Any]:
    """Fit binary and multi-class forests at µs and at ms on one split; score A, B and C."""
    train, test = split(data, protocol, seed, cfg.test_size)
    fitted = {}
    for res, x in (("us", data.x_us), ("ms", data.x_ms)):
        xt = x[train]
        fitted[res] = (_forest(cfg, seed, xt, data.attack[train]), _forest(cfg, seed, xt, data.label[train]))
    plan = {Variant.A: ("us", data.x_us), Variant.B: ("ms", data.x_ms), Variant.C: ("us", data.x_ms)}
    y_label, present = data.label[test], np.unique(data.label[test])
    scores: dict[str, Any] = {}
    for variant, (res, x) in plan.items():
        binary, multi = fitted[res]
        pred = binary.predict(x[test])
        row: dict[str, Any] = binary_metrics(data.attack[test], pred)
        row["macro_f1"] = float(
            f1_score(y_label, multi.predict(x[test]), labels=present, average="macro", zero_division=0)
        )
        row["flagged_by_class"] = {str(c): float(pred[y_label == c].mean()) for c in present}
        scores[variant.value] = row
    log.info(
        "protocol=%s seed=%s A.f1=%.5f B.f1=%.5f C.f1=%.5f",
        protocol.value,
        seed,
        scores["A"]["f1"],
        scores["B"]["f1"],
        scores["C"]["f1"],
    )
    counts = pd.Series(y_label).value_counts()
    return {
        "protocol": protocol.value,
        "seed": seed,
        "n_train": int(train.size),
        "n_test": int(test.size),
        "n_test_attack": int(data.attack[test].sum()),
        "n_test_by_class": {str(c): int(counts[c]) for c in present},
        "scores": scores,
    }


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    return {"mean": float(arr.mean()), "std": std, "min": float(arr.min()), "max": float(arr.max())}


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread per protocol and variant; paired (same split, same seed) B-A, C-A and C-B."""
    out: dict[str, Any] = {}
    for protocol in SplitProtocol:
        mine = [r["scores"] for r in runs if r["protocol"] == protocol.value]
        per_variant = {v.value: {m: _stats([s[v.value][m] for s in mine]) for m in METRICS} for v in Variant}
        deltas = {
            f"{v}-{w}": {m: _stats([s[v][m] - s[w][m] for s in mine]) for m in METRICS}
            for v, w in (("B", "A"), ("C", "A"), ("C", "B"))
        }
        classes = mine[0]["A"]["flagged_by_class"].keys()
        flagged = {
            v.value: {c: float(np.mean([s[v.value]["flagged_by_class"][c] for s in mine])) for c in classes}
            for v in Variant
        }
        out[protocol.value] = {"variants": per_variant, "paired_deltas": deltas, "flagged_by_class": flagged}
    return out


def time_split_composition(data: Data, test_size: float) -> dict[str, list[int]]:
    """Rows per class in train and test of the time split (classes unseen in training show 0)."""
    train, test = split(data, SplitProtocol.TIME, 0, test_size)
    tr, te = pd.Series(data.label[train]).value_counts(), pd.Series(data.label[test]).value_counts()
    return {c: [int(tr.get(c, 0)), int(te.get(c, 0))] for c in sorted(set(data.label))}


def environment() -> dict[str, str]:
    """Interpreter, libraries and machine, for the report."""
    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "cpus": str(os.cpu_count()),
    }


def run(cfg: Config) -> dict[str, Any]:
    """The whole experiment; returns the JSON report."""
    start = time.perf_counter()
    frame, files = load_frame(cfg.data_dir)
    data = build_data(frame)
    log.info("loaded rows=%s files=%s", len(frame), len(files))
    runs = [run_one(data, p, seed, cfg) for p in SplitProtocol for seed in cfg.seeds]
    return {
        "command": COMMAND,
        "config": {
            "seeds": list(cfg.seeds),
            "n_trees": cfg.n_trees,
            "n_jobs": cfg.n_jobs,
            "test_size": cfg.test_size,
            "time_resolution_us": TIME_RESOLUTION_US,
            "features": list(FEATURE_NAMES),
            "time_features": list(TIME_FEATURES),
            "data_dir": os.path.relpath(cfg.data_dir, REPO_ROOT),
        },
        "dataset": {
            "rows": len(frame),
            "files": files,
            "classes": {str(k): int(v) for k, v in frame["Label"].value_counts().items()},
            "time_split_train_test_by_class": time_split_composition(data, cfg.test_size),
        },
        "quantisation": quantisation_stats(frame, data),
        "summary": summarise(runs),
        "runs": runs,
        "environment": environment(),
        "wall_time_s": round(time.perf_counter() - start, 1),
    }


# ---- Markdown rendering of the JSON report --------------------------------------------------------------


def _pm(s: dict[str, float], digits: int = 4) -> str:
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def _delta(s: dict[str, float]) -> str:
    return f"{s['mean']:+.5f} ± {s['std']:.5f} [{s['min']:+.5f}, {s['max']:+.5f}]"


def _headline(summary: dict[str, Any]) -> list[str]:
    lines = [
        "| protocol | variant | attack P | attack R | attack F1 | FAR | multi-class macro-F1 | FN | FP |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for p in SplitProtocol:
        for v in Variant:
            m = summary[p.value]["variants"][v.value]
            cells = [_pm(m[k]) for k in ("precision", "recall", "f1", "far", "macro_f1")]
            counts = [_pm(m[k], 1) for k in ("fn", "fp")]
            lines.append(f"| {PROTOCOL_TEXT[p]} | {VARIANT_TEXT[v]} | " + " | ".join(cells + counts) + " |")
    return lines


def _deltas(summary: dict[str, Any]) -> list[str]:
    head = "| protocol | paired difference | Δ attack F1 | Δ attack R | Δ attack P | Δ FAR | Δ macro-F1 | Δ FN | Δ FP |"
    lines = [head, "|---|---|---|---|---|---|---|---|---|"]
    for p in SplitProtocol:
        for name, d in summary[p.value]["paired_deltas"].items():
            cells = [_delta(d[k]) for k in ("f1", "recall", "precision", "far", "macro_f1")]
            cells += [f"{d[k]['mean']:+.1f} [{d[k]['min']:+.0f}, {d[k]['max']:+.0f}]" for k in ("fn", "fp")]
            lines.append(f"| {PROTOCOL_TEXT[p]} | {name} | " + " | ".join(cells) + " |")
    return lines


def _families(result: dict[str, Any]) -> list[str]:
    summary, comp = result["summary"], result["dataset"]["time_split_train_test_by_class"]
    lines = [
        "| class | random: test rows (seed 0) | A | B | C | time: train / test rows | A | B | C |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c, (n_tr, n_te) in comp.items():
        rnd = summary["random"]["flagged_by_class"]
        tim = summary["time"]["flagged_by_class"]
        n_rand = next(r for r in result["runs"] if r["protocol"] == "random")["n_test_by_class"].get(c, 0)
        cells = [str(n_rand)] + [f"{rnd[v][c]:.4f}" if c in rnd[v] else "–" for v in "ABC"]
        unseen = " (unseen in training)" if n_tr == 0 and n_te else ""
        cells += [f"{n_tr} / {n_te}{unseen}"] + [f"{tim[v][c]:.4f}" if c in tim[v] else "–" for v in "ABC"]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    return lines


def _quantisation(q: dict[str, Any]) -> list[str]:
    n = q["rows"]

    def row(text: str, k: int) -> str:
        return f"| {text} | {k:,} | {k / n:.2%} |"

    lines = [
        "| rows of the subset | count | share |",
        "|---|---|---|",
        row("any of the 24 time features changes", q["rows_time_feature_changed"]),
        row("any of the 4 recomputed rates changes", q["rows_rate_feature_changed"]),
        row("Flow Duration < 1 ms (1000 µs)", q["flow_duration_lt_1ms"]),
        row("… of them BENIGN", q["flow_duration_lt_1ms_benign"]),
        row("… of them attack", q["flow_duration_lt_1ms_attack"]),
        row("Flow Duration < 500 µs: rounds to 0, so rates become -1 / 0", q["flow_duration_rounds_to_0"]),
        row("Flow Duration = 0 in the µs data", q["flow_duration_zero_before"]),
    ]
    lines += [
        "",
        f"Median relative change of Flow Duration for flows ≥ 1 ms: "
        f"{q['flow_duration_ge_1ms_median_relative_change']:.2e}.",
        "",
        "Flows shorter than 1 ms by class (short / all): "
        + "; ".join(f"{c} {s:,}/{a:,}" for c, (s, a) in sorted(q["flow_duration_lt_1ms_by_class"].items())),
    ]
    return lines


ISSUE_POINT = "0.9994 → 0.9993 (−0.0001)"
"""The issue's single data point: a Random Forest's attack F1 before and after rounding to whole milliseconds."""


def _verdict(d: dict[str, float]) -> str:
    if d["min"] <= 0 <= d["max"]:
        return "range includes 0"
    return "every seed " + ("lower" if d["mean"] < 0 else "higher")


def _effect(d: dict[str, Any], n_attack: int) -> str:
    f1, mf1 = d["f1"], d["macro_f1"]
    return (
        f"attack F1 {f1['mean']:+.5f} [{f1['min']:+.5f}, {f1['max']:+.5f}] ({_verdict(f1)}), "
        f"missed attacks {d['fn']['mean']:+.1f} of {n_attack:,}, "
        f"FAR {d['far']['mean']:+.5f} ({_verdict(d['far'])}), "
        f"multi-class macro-F1 {mf1['mean']:+.5f} ({_verdict(mf1)})"
    )


def _conclusion(result: dict[str, Any]) -> list[str]:
    summary, lines = result["summary"], []
    for p in SplitProtocol:
        s = summary[p.value]
        n_attack = next(r for r in result["runs"] if r["protocol"] == p.value)["n_test_attack"]
        a, b, c = (s["variants"][v]["f1"]["mean"] for v in "ABC")
        note = " The split is fixed, so the seeds vary only the forest." if p is SplitProtocol.TIME else ""
        lines.append(
            f"- **{PROTOCOL_TEXT[p]}**: attack F1 A {a:.4f}, B {b:.4f}, C {c:.4f}.{note} "
            f"B − A (training on ms-rounded values): {_effect(s['paired_deltas']['B-A'], n_attack)}. "
            f"C − A (µs-trained model fed ms values): {_effect(s['paired_deltas']['C-A'], n_attack)}. "
            f"C − B: {_effect(s['paired_deltas']['C-B'], n_attack)}."
        )
    ba = {p: summary[p.value]["paired_deltas"]["B-A"] for p in SplitProtocol}
    rnd, tim = SplitProtocol.RANDOM, SplitProtocol.TIME
    lines.append(
        "- Measured effect of rounding the training data to whole milliseconds (B − A, mean over seeds): attack F1 "
        f"{ba[rnd]['f1']['mean']:+.5f} on the random split and {ba[tim]['f1']['mean']:+.5f} on the time split; "
        f"FAR {ba[rnd]['far']['mean']:+.5f} and {ba[tim]['far']['mean']:+.5f}; multi-class macro-F1 "
        f"{ba[rnd]['macro_f1']['mean']:+.5f} and {ba[tim]['macro_f1']['mean']:+.5f}. The issue's single data point "
        f"was {ISSUE_POINT}. B is what tapwatch does: training and live inputs share one resolution, so the "
        "offline numbers are the ones the sensor can reach; C is the mismatch a µs-trained model would carry "
        "into production."
    )
    return lines


def _intro(result: dict[str, Any]) -> list[str]:
    cfg, ds = result["config"], result["dataset"]
    n_test = {r["protocol"]: (r["n_train"], r["n_test"]) for r in result["runs"]}
    attack_share = 1 - ds["classes"].get(BENIGN, 0) / ds["rows"]
    return [
        f"- Data: corrected CIC-IDS2017 subset `{cfg['data_dir']}` ({ds['rows']:,} rows, {len(ds['classes'])} "
        f"classes, ≤ 5,000 random flows per class). Class balance is artificial ({attack_share:.0%} attack), so "
        "precision and F1 depend on it; recall, FAR and per-class rates do not.",
        f"- Inputs: exactly the {len(cfg['features'])} `FEATURE_NAMES` of the feature contract (incl. Protocol; "
        "no IPs, ports, flow ids or timestamps). Binary label attack vs BENIGN; a second forest on the "
        f"{len(ds['classes'])} labels gives the multi-class macro-F1 (macro over the classes present in the test set).",
        f"- Model: Random Forest, {cfg['n_trees']} trees, n_jobs={cfg['n_jobs']}, otherwise scikit-learn defaults; "
        f"seeds {cfg['seeds']} (split and forest on the random protocol, forest only on the time split).",
        f"- Quantisation: `tapwatch.features.resolution.quantize_columns`: the {len(cfg['time_features'])} time "
        f"features rounded half-up to {cfg['time_resolution_us']} µs, Flow Bytes/s, Flow Packets/s, Fwd/Bwd "
        "Packets/s recomputed from the rounded Flow Duration; bulk rates left as measured.",
        f"- Splits: random stratified (by label) 70/30, {n_test['random'][0]:,} train / {n_test['random'][1]:,} test "
        f"rows; time split, first 70 % of flows by `Timestamp` for training, {n_test['time'][0]:,} / "
        f"{n_test['time'][1]:,} rows.",
    ]


def render(result: dict[str, Any]) -> str:
    """The Markdown report, built only from the JSON report."""
    env, q, runs = result["environment"], result["quantisation"], result["runs"]
    out = [
        "# Time resolution: µs (CSVs) vs ms (sensor) features, Random Forest",
        "",
        "Generated by `lab/resolution_check.py`; do not edit by hand. Regenerate from the repo root with:",
        "",
        f"    {result['command']}",
        "",
        *_intro(result),
        "",
        "## Results (mean ± sample std over seeds)",
        "",
        *_headline(result["summary"]),
        "",
        "FAR = false positive rate on BENIGN. FN / FP = missed attacks / false alarms on the test set.",
        "",
        "## Paired differences (same split and seed), mean ± std [min, max]",
        "",
        *_deltas(result["summary"]),
        "",
        "## Conclusion",
        "",
        *_conclusion(result),
        "",
        "## What quantisation changes",
        "",
        *_quantisation(q),
        "",
        "## Share flagged as attack by class (binary forest, mean over seeds; for BENIGN this is the FAR)",
        "",
        *_families(result),
        "",
        "## Caveats",
        "",
        "- `quantize_columns` rounds each µs value; the sensor takes differences of ms timestamps, so a live gap of "
        "0.6 ms reads 0 or 1 ms depending on where it falls, and IAT means and stds are computed from rounded "
        "gaps rather than rounded afterwards. B is the training-side mapping, not a replay of live measurement.",
        "- The time split's test part holds classes never seen in training; its multi-class macro-F1 counts them.",
        "",
        "## Reproducibility",
        "",
        "| file (uncompressed) | rows | sha256 | matches SHA256SUMS |",
        "|---|---|---|---|",
        *[
            f"| {f['file']} | {f['rows']:,} | `{f['sha256']}` | {'yes' if f['matches_SHA256SUMS'] else 'NO'} |"
            for f in result["dataset"]["files"]
        ],
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()) + ".",
        f"Wall time: {result['wall_time_s']} s (load, quantise, {4 * len(runs)} forest fits, scoring).",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Parse options, run, write the reports. Exit 0 on success, 2 when the dataset is missing."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..N-1 (default 5, minimum 3)")
    parser.add_argument(
        "--data-dir", type=Path, default=None, help="default: ../shared/datasets/" + CIC_SUBSET.as_posix()
    )
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    args = parser.parse_args(argv)
    args.data_dir = args.data_dir or default_root() / CIC_SUBSET
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.seeds < 3:
        parser.error("--seeds must be at least 3 (EVALUATION.md rule 6)")
    if not args.data_dir.is_dir():
        log.error("dataset folder %s does not exist (expected ../shared relative to the repo root)", args.data_dir)
        return 2
    cfg = Config(data_dir=args.data_dir, out_dir=args.out_dir, seeds=tuple(range(args.seeds)))
    result = run(cfg)
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    (cfg.out_dir / "time-resolution.json").write_text(json.dumps(result, indent=2) + "\n")
    (cfg.out_dir / "time-resolution.md").write_text(render(result))
    log.info("wrote %s wall_time_s=%s", cfg.out_dir / "time-resolution.md", result["wall_time_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``tapwatch train``, ``tapwatch export`` and ``tapwatch evaluate`` (registered lazily by the root CLI).

This module imports neither TensorFlow nor pandas at import time: every command imports its stack in its
body, so ``tapwatch --help`` stays fast and the inference image needs no training libraries.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from tapwatch.features.contract import FEATURE_SUBSETS

log = logging.getLogger(__name__)

DATASETS = ("cic-ids2017", "unsw-nb15", "unsw-nb15-nottl", "ton-iot", "nsl-kdd", "lab", "cic-ids2017+lab")
MODELS = ("hybrid-full", "hybrid-fast", "hybrid-lstm", "hybrid-nodecoder", "seq2seq", "lunet", "mlp")
REPORTS = Path("models") / "reports"


def lab_options(command: Callable[..., None]) -> Callable[..., None]:
    """``--lab-corpus`` and ``--lab-test``, the lab datasets' corpora (``train`` and ``evaluate``)."""
    path = click.Path(path_type=Path, exists=True)
    command = click.option("--lab-test", multiple=True, type=path,
                           help="Lab datasets: a held-out corpus, scored as the test part (repeatable; evaluate "
                                "needs one).")(command)  # fmt: skip
    return click.option("--lab-corpus", "lab_corpora", multiple=True, type=path,
                        help="Lab datasets: a training corpus (repeatable; default lab/corpus).")(command)  # fmt: skip


def _fail(err: Exception) -> None:
    raise click.ClickException(str(err)) from err


@click.command("train")
@click.option("--dataset", required=True, type=click.Choice(DATASETS), help="Dataset to train on.")
@click.option("--model", "model_name", required=True, type=click.Choice(MODELS), help="Model preset.")
@click.option("--seed", default=0, show_default=True, help="Seed of initialisation and subsampling.")
@click.option("--epochs", default=20, show_default=True, help="Upper bound; early stopping on validation loss.")
@click.option("--window", default=0, show_default=True, help="T; 0 = 10 where hosts and times exist, else 1.")
@click.option(
    "--split",
    type=click.Choice(["time", "time-all", "host", "random", "random-dedup", "official"]),
    default="time",
    show_default=True,
    help="Split protocol (non-CIC datasets use their default).",
)
@click.option("--max-train", default=0, show_default=True, help="Subsample training windows (0 = all).")
@click.option("--set", "overrides", multiple=True, help="Preset override NAME=JSON, e.g. filters=[16,16,16].")
@click.option(
    "--features",
    type=click.Choice(list(FEATURE_SUBSETS)),
    default="all",
    show_default=True,
    help="CIC features: all 82; the 77 the original CIC-IDS2017 release also has; the 76 of its MachineLearningCVE "
    "CSVs (no Protocol).",
)
@click.option(
    "--class-weighting",
    type=click.Choice(["balanced", "binary", "none"]),
    default="balanced",
    show_default=True,
    help="Loss weights: every class alike in total; benign and attack half each; or none (see the reports' "
    "class-weighting recipe check).",
)
@lab_options
@click.option(
    "--max-fpr",
    default=0.0,
    show_default=True,
    help="Validation false-positive budget of the threshold; 0 = the dataset's (0.01; 0.001 for the lab datasets).",
)
@click.option(
    "--batch-size", default=0, show_default=True, help="0 = the preset's (64 for the Hybrid, 256 for the others)."
)
@click.option("--out", "out_dir", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
def train_command(
    dataset: str,
    model_name: str,
    seed: int,
    epochs: int,
    window: int,
    split: str,
    max_train: int,
    overrides: tuple[str, ...],
    features: str,
    class_weighting: str,
    lab_corpora: tuple[Path, ...],
    lab_test: tuple[Path, ...],
    max_fpr: float,
    batch_size: int,
    out_dir: Path,
) -> None:
    """Train a model (Keras progress bar, class weights, early stopping) and save it with metadata."""
    from tapwatch.models.training.train import SplitKind, TrainConfig, train_run

    pairs = []
    for item in overrides:
        name, _, value = item.partition("=")
        parsed = json.loads(value)
        pairs.append((name, tuple(parsed) if isinstance(parsed, list) else parsed))
    cfg = TrainConfig(
        dataset=dataset,
        model=model_name,
        seed=seed,
        epochs=epochs,
        window=window,
        split=SplitKind(split),
        max_train=max_train,
        overrides=tuple(pairs),
        learning_rate=3e-3 if model_name.startswith("hybrid") else 2e-3,
        features=features,
        class_weighting=class_weighting,
        lab_corpora=tuple(str(p) for p in lab_corpora),
        lab_test=tuple(str(p) for p in lab_test),
        batch_size=batch_size or (64 if model_name.startswith("hybrid") else 256),
        max_fpr=max_fpr,
    )
    subset = "" if features == "all" else f"-{features}"
    try:
        path, meta = train_run(cfg, out_dir / f"{model_name}-{dataset}{subset}-s{seed}", verbose=1)
    except Exception as err:  # a clear message and a non-zero exit (STYLE.md rule 8)
        _fail(err)
    click.echo(f"saved {path} (+ .meta.json, .parity.npz); validation threshold {meta.thresholds}")


def _card_metrics(report: Path | None, model_key: str) -> dict[str, Any]:
    """Headline test metrics of ``model_key`` from an evaluate report JSON, with the report's path."""
    if report is None or not report.exists():
        return {}
    data = json.loads(report.read_text())
    protocols = data.get("protocols", [])
    # The full-budget run of the shipped configuration first, then the main protocol.
    for proto in sorted(protocols, key=lambda p: p.get("name") != "shipped"):
        summary = proto.get("summary", {}).get(model_key)
        if summary:
            return {"report": str(report), "protocol": proto["title"], "test_mean_over_seeds": summary}
    return {}


def _training_note(meta: Any, metrics: dict[str, Any], given: str) -> str:
    """The card's note on how the weights were fitted (``given`` replaces the default), plus the feature subset."""
    split, cfg = meta.split, meta.config
    where = f" ({metrics['report']}, protocol: {metrics['protocol']})" if "protocol" in metrics else ""
    note = given or (
        f"weights fitted on the {split['name']} split's train part ({split['train']['rows']} rows, "
        f"{len(meta.class_names)} classes, at most {cfg['epochs']} epochs); its validation part "
        f"({split['val']['rows']} rows) for early stopping and the threshold; "
        + ("test part unseen" if split["test"]["rows"] else f"no held-out test: metrics are those of the report{where}")
    )
    subset = cfg.get("features", "all")
    if subset != "all":
        note += f"; inputs: the {len(meta.features)} features of subset '{subset}' (features/contract.py)"
    return str(note)


@click.command("export")
@click.option(
    "--model",
    "keras_path",
    required=True,
    type=click.Path(exists=True, path_type=Path),
    help="A .keras file written by tapwatch train (its .meta.json and .parity.npz beside it).",
)
@click.option("--out", "onnx_path", required=True, type=click.Path(path_type=Path), help="models/NAME.onnx")
@click.option("--version", "version", default="1.0.0", show_default=True)
@click.option(
    "--report",
    type=click.Path(path_type=Path),
    default=None,
    help="Report JSON the card's metrics come from (default models/reports/<dataset>.json).",
)
@click.option("--training-note", default="", help="How the shipped weights were trained (written to the card).")
def export_command(keras_path: Path, onnx_path: Path, version: str, report: Path | None, training_note: str) -> None:
    """Export to ONNX (opset 17), check parity on 1,000 windows and write NAME.card.json."""
    import keras
    import numpy as np

    from tapwatch.features.card import FeatureStats, Scaler, TrainingData
    from tapwatch.inference.model import load_model
    from tapwatch.models.training.export import CardSpec, check_parity, export_onnx, write_card
    from tapwatch.models.training.train import load_meta

    meta = load_meta(keras_path)
    model = keras.saving.load_model(keras_path, safe_mode=True)
    try:
        info = export_onnx(model, onnx_path)
        windows = np.load(keras_path.with_suffix(".parity.npz"), allow_pickle=False)["windows"]
        parity = check_parity(model, onnx_path, windows)
    except Exception as err:
        _fail(err)
    report = report or REPORTS / f"{meta.dataset}.json"
    split = meta.split
    metrics = {
        "parity": {"n": parity.n, "max_abs_diff": parity.max_abs_diff, "argmax_equal": parity.argmax_equal},
        **_card_metrics(report, meta.config["model"]),
    }
    if "report" not in metrics and meta.test_metrics:  # no report yet: the run's own held-out test part
        metrics["run_test"] = {
            "protocol": "the training run's test part, at its validation threshold: " + "; ".join(split["notes"]),
            **{k: v for k, v in meta.test_metrics.items() if k != "pr_curve"},
        }
    note = _training_note(meta, metrics, training_note)
    spec = CardSpec(
        name=onnx_path.stem,
        version=version,
        features=tuple(meta.features),
        window_length=meta.window_length,
        class_names=tuple(meta.class_names),
        benign_class=meta.benign_class,
        training_data=TrainingData(
            dataset=meta.dataset, files=meta.files, split=f"{'; '.join(split['notes'])}; {note}"
        ),
        scaler=Scaler.model_validate(meta.scaler),
        feature_stats=tuple(FeatureStats.model_validate(s) for s in meta.feature_stats),
        thresholds={**meta.thresholds, "score": "1 - P(benign class)"},
        metrics=metrics,
        window_key="src_ip",
    )
    card = write_card(onnx_path, info, spec)
    load_model(onnx_path, card)
    size = onnx_path.stat().st_size
    click.echo(
        f"wrote {onnx_path} ({size:,} bytes) and {card}; parity on {parity.n} windows: "
        f"max abs {parity.max_abs_diff:.2e}, argmax equal {parity.argmax_equal}"
    )


@click.command("evaluate")
@click.option("--dataset", required=True, type=click.Choice(DATASETS))
@click.option("--quick", is_flag=True, help="CI mode: tiny models on a small subsample (< 60 s); not a result.")
@click.option("--seeds", default=3, show_default=True, help="Seeds of the main protocol.")
@click.option("--max-train", default=8000, show_default=True, help="Training windows per run (subsampled).")
@click.option("--epochs", default=6, show_default=True, help="Upper bound of epochs per run.")
@click.option("--out-dir", type=click.Path(path_type=Path), default=REPORTS, show_default=True)
@click.option(
    "--ablations",
    is_flag=True,
    help="Also train the Hybrid's ablations (CIC-IDS2017: cell, decoder, T; every dataset: the batch-256 recipe); "
    "without it they are reported when all their runs are cached.",
)
@lab_options
def evaluate_command(
    dataset: str,
    quick: bool,
    seeds: int,
    max_train: int,
    epochs: int,
    out_dir: Path,
    ablations: bool,
    lab_corpora: tuple[Path, ...],
    lab_test: tuple[Path, ...],
) -> None:
    """Train and test every model on the dataset's protocols; write OUT_DIR/DATASET.md and .json (resumable)."""
    import time

    from tapwatch.models.evaluation.evaluate import Runner, make_plan
    from tapwatch.models.evaluation.report import write_report

    start = time.perf_counter()
    plan = make_plan(dataset, quick=quick, seeds=seeds, max_train=max_train, epochs=epochs, ablations=ablations,
                     lab_corpora=tuple(map(str, lab_corpora)), lab_test=tuple(map(str, lab_test)))  # fmt: skip
    runner = Runner(plan, out_dir / "cache" / (f"{dataset}-quick" if quick else dataset), click.echo)
    try:
        results = runner.run()
        md = write_report(plan, runner, results, out_dir, time.perf_counter() - start)
    except Exception as err:
        _fail(err)
    click.echo(f"wrote {md} and {md.with_suffix('.json')}")

"""Training: data preparation (split first, then windows), the Keras fit loop and the saved run.

:func:`prepare` loads a dataset, splits it (:class:`SplitKind`), fits the scaler on the training rows and
builds the windows of each part (per source host in time order where the data allow, else T = 1).
:func:`fit` trains a preset of :mod:`tapwatch.models.training.arch` with balanced class weights and early stopping
on the validation part; :func:`choose_threshold` picks the attack threshold on validation (never on test);
:func:`save_run` writes ``NAME.keras`` with ``NAME.meta.json`` (everything the model card needs) and
``NAME.parity.npz`` (validation windows for the export parity check).

>>> TrainConfig(dataset="cic-ids2017", model="hybrid-fast").split
<SplitKind.TIME: 'time'>
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.features.contract import feature_subset
from tapwatch.features.errors import BadInputError, ConfigError
from tapwatch.models.training.data import DatasetName, Dedupe, load_dataset
from tapwatch.models.training.data_common import Dataset
from tapwatch.models.training.data_lab import cic_lab_split
from tapwatch.models.training.data_scaling import feature_stats, fit_scaler
from tapwatch.models.training.sequences import (
    Order,
    Split,
    Windows,
    drop_seen_in_train,
    host_split,
    make_windows,
    predefined_split,
    stratified_split,
    time_split,
)

MAX_CLASS_WEIGHT = 50.0
BENCHMARK_MAX_FPR = 0.01
LAB_MAX_FPR = 0.001
CLASS_WEIGHTINGS = ("balanced", "binary", "none")
"""Loss weightings of the classes (:func:`class_weights`); ``balanced`` is the default recipe."""
"""Balanced weights are clipped here: CIC's Heartbleed has 11 rows, so its balanced weight would be ~200
and a handful of rows would dominate the loss."""


class SplitKind(str, Enum):
    """How rows are split (EVALUATION.md): time, held-out hosts, random (optionally deduplicated), official."""

    TIME = "time"
    HOST = "host"
    RANDOM = "random"
    RANDOM_DEDUP = "random-dedup"
    OFFICIAL = "official"
    TIME_ALL = "time-all"


DEFAULT_SPLIT = {
    DatasetName.CIC_IDS2017: SplitKind.TIME,
    DatasetName.UNSW_NB15: SplitKind.RANDOM_DEDUP,
    DatasetName.UNSW_NB15_NOTTL: SplitKind.RANDOM_DEDUP,
    DatasetName.TON_IOT: SplitKind.RANDOM_DEDUP,
    DatasetName.NSL_KDD: SplitKind.OFFICIAL,
    DatasetName.LAB: SplitKind.TIME,
    DatasetName.CIC_LAB: SplitKind.TIME,
}
"""For the lab datasets ``time`` is CIC's time split beside whole lab episodes for validation and the held-out
corpora for test; ``time-all`` (the deployment fit) trains on CIC's test part too."""


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Parameters
    ----------
    dataset, model
        Dataset name and model preset (or ``lgbm`` in the evaluation).
    seed
        Seed of the model initialisation and of the subsampling (the split uses ``split_seed``).
    epochs, batch_size, patience
        Upper bound of epochs, batch size, early-stopping patience on the validation loss.
    window
        T; 0 means the dataset's default (10 where hosts and times exist, else 1).
    split, order
        Split protocol and flow order (``SHUFFLED`` is the order-shuffle control).
    max_train
        Subsample the training windows to at most this many (0: all).
    overrides
        Preset field overrides, as sorted (name, value) pairs (e.g. ``(("filters", (16, 16, 16)),)``).
    features
        A feature subset of :data:`~tapwatch.features.contract.FEATURE_SUBSETS` (CIC-IDS2017 only):
        ``"all"`` (the 82 of the contract) or ``"original"`` (the 77 the original release also has).
    lab_corpora, lab_test
        Lab datasets only: the training corpora (default ``lab/corpus``) and held-out corpora for test. Flows
        are ordered as the sensor emitted them (``Order.EMITTED``) unless another order is asked for.
    max_fpr
        The validation false-positive budget of the threshold (:func:`choose_threshold`); 0 means the dataset's:
        :data:`BENCHMARK_MAX_FPR` for the benchmarks, :data:`LAB_MAX_FPR` (the false-alert budget of one line per
        1,000 benign flows, one window per flow) for the lab datasets.
    """

    dataset: str
    model: str
    seed: int = 0
    epochs: int = 20
    batch_size: int = 256
    patience: int = 3
    window: int = 0
    split: SplitKind = SplitKind.TIME
    order: Order = Order.TIME
    max_train: int = 0
    split_seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()
    learning_rate: float = 2e-3
    features: str = "all"
    class_weighting: str = "balanced"
    lab_corpora: tuple[str, ...] = ()
    lab_test: tuple[str, ...] = ()
    max_fpr: float = 0.0

    def __post_init__(self) -> None:
        which = DatasetName(self.dataset)
        timed = which is DatasetName.CIC_IDS2017 or which.is_lab
        if self.split in (SplitKind.TIME, SplitKind.TIME_ALL) and not timed:
            object.__setattr__(self, "split", DEFAULT_SPLIT[which])
        if which.is_lab and self.order is Order.TIME:
            object.__setattr__(self, "order", Order.EMITTED)
        if which.is_lab and self.split not in (SplitKind.TIME, SplitKind.TIME_ALL):
            raise ConfigError("--split", f"{self.dataset} splits by time (CIC) and episode (lab): time or time-all")
        if self.max_fpr == 0.0:
            object.__setattr__(self, "max_fpr", LAB_MAX_FPR if which.is_lab else BENCHMARK_MAX_FPR)
        if not 0 < self.max_fpr < 1:
            raise ConfigError("--max-fpr", f"{self.max_fpr}: a share of benign windows, between 0 and 1")
        if (self.lab_corpora or self.lab_test) and not which.is_lab:
            raise ConfigError("--lab-corpus", f"{self.dataset} holds no lab flows")
        feature_subset(self.features)  # an unknown name fails here, before any data is read
        if self.class_weighting not in CLASS_WEIGHTINGS:
            raise ConfigError("class_weighting", f"{self.class_weighting!r}; valid: {', '.join(CLASS_WEIGHTINGS)}")
        if self.features != "all" and which not in (DatasetName.CIC_IDS2017, DatasetName.CIC_LAB):
            raise ConfigError("--features", f"subset {self.features!r} names CIC features; {self.dataset} has its own")

    def key(self) -> dict[str, Any]:
        """The config as plain JSON values (the cache key of a run)."""
        out = asdict(self)
        if self.features == "all":  # the default stays out, so the keys of earlier runs do not change
            del out["features"]
        if self.class_weighting == "balanced":  # likewise
            del out["class_weighting"]
        if self.max_fpr == BENCHMARK_MAX_FPR and not DatasetName(self.dataset).is_lab:  # likewise
            del out["max_fpr"]
        for name in ("lab_corpora", "lab_test"):
            if getattr(self, name):
                out[name] = list(getattr(self, name))
            else:
                del out[name]
        out["split"], out["order"] = self.split.value, self.order.value
        out["overrides"] = [[k, list(v) if isinstance(v, tuple) else v] for k, v in self.overrides]
        return out


@dataclass(frozen=True, eq=False)
class Prepared:
    """A dataset split into parts, the scaler fitted on training rows, and the windows of each part."""

    ds: Dataset
    split: Split
    scaler: Any
    train: Windows
    val: Windows
    test: Windows


def default_window(ds: Dataset, window: int) -> int:
    return window if window > 0 else (10 if ds.has_hosts else 1)


def make_split(ds: Dataset, kind: SplitKind, seed: int = 0) -> Split:
    """The split of ``kind``; the deduplicated random split also drops test rows seen in training."""
    if "source" in ds.meta.columns:  # the lab datasets: CIC rows by time, lab rows by episode and corpus
        return cic_lab_split(ds, deploy=kind is SplitKind.TIME_ALL, seed=seed)
    if kind in (SplitKind.TIME, SplitKind.TIME_ALL):
        split = time_split(ds, seed=seed)
        if kind is SplitKind.TIME:
            return split
        # Deployment fit: the time split's train and test parts train, its validation blocks stay validation.
        note = "deployment fit: train = the time split's train + test parts; validation = its validation blocks"
        return Split(
            "time-all", np.concatenate([split.train, split.test]), split.val, split.test[:0], (*split.notes, note)
        )
    if kind is SplitKind.HOST:
        return host_split(ds, seed=seed)
    if kind is SplitKind.OFFICIAL:
        return drop_seen_in_train(ds, predefined_split(ds, seed=seed))
    split = stratified_split(ds, seed=seed)
    return drop_seen_in_train(ds, split) if kind is SplitKind.RANDOM_DEDUP else split


def load_for(cfg: TrainConfig) -> Dataset:
    """The dataset of ``cfg``: deduplicated (features) except on the optimistic random protocol."""
    keep = (SplitKind.RANDOM, SplitKind.TIME, SplitKind.TIME_ALL, SplitKind.HOST)
    dedupe = Dedupe.NONE if cfg.split in keep else Dedupe.FEATURES
    return load_dataset(cfg.dataset, dedupe=dedupe, corpora=[Path(p) for p in cfg.lab_corpora],
                        test_corpora=[Path(p) for p in cfg.lab_test])  # fmt: skip


def select_features(ds: Dataset, subset: str) -> Dataset:
    """``ds`` with only the features of ``subset`` (contract order); ``"all"`` returns ``ds`` itself.

    Rows, labels and meta are untouched, so splits and windows are those of the full dataset.
    """
    if subset == "all":
        return ds
    names = feature_subset(subset)
    missing = [n for n in names if n not in ds.features]
    if missing:
        raise BadInputError(ds.name, f"has no features {missing} of subset {subset!r}")
    note = f"kept the {len(names)} features of subset {subset!r} (dropped {[f for f in ds.features if f not in names]})"
    return replace(ds, X=ds.X[list(names)], features=names, steps=(*ds.steps, note))


def prepare(cfg: TrainConfig, ds: Dataset | None = None) -> Prepared:
    """Split first, fit the scaler on training rows, then build the windows of each part.

    ``cfg.features`` selects the feature subset of ``ds`` (which may hold all features).
    """
    ds = select_features(ds if ds is not None else load_for(cfg), cfg.features)
    split = make_split(ds, cfg.split, cfg.split_seed)
    scaler = fit_scaler(ds.X.iloc[split.train])
    t = default_window(ds, cfg.window)
    parts = {p: make_windows(ds, rows, scaler, t, cfg.order, seed=cfg.seed) for p, rows in split.parts().items()}
    return Prepared(ds, split, scaler, parts["train"], parts["val"], parts["test"])


def subsample(w: Windows, n: int, seed: int) -> Windows:
    """At most ``n`` windows (random, every class kept with at least one window); ``n <= 0`` keeps all."""
    if n <= 0 or len(w.y) <= n:
        return w
    rng = np.random.default_rng(seed)
    first = np.unique(w.y, return_index=True)[1]
    rest = rng.choice(np.setdiff1d(np.arange(len(w.y)), first), n - len(first), replace=False)
    keep = np.sort(np.concatenate([first, rest]))
    return replace(
        w, X=w.X[keep], y=w.y[keep], y_binary=w.y_binary[keep], valid_length=w.valid_length[keep], rows=w.rows[keep]
    )


def class_weights(y: np.ndarray, n_classes: int, weighting: str = "balanced", benign: int = 0) -> dict[int, float]:
    """Per-class loss weights, clipped at :data:`MAX_CLASS_WEIGHT`.

    ``balanced``: n / (k · count) over the k classes present (the default recipe). ``binary``: benign and
    attack carry half of the total weight each, the attack classes balanced among themselves, so the
    benign-vs-attack score is not pushed towards attack by the number of attack classes. ``none``: all 1.

    >>> y = np.array([0] * 6 + [1] * 3 + [2])
    >>> [round(v, 3) for v in class_weights(y, 3).values()]
    [0.556, 1.111, 3.333]
    >>> [round(v, 3) for v in class_weights(y, 3, "binary").values()]
    [0.833, 0.833, 2.5]
    """
    counts = np.bincount(y, minlength=n_classes)
    present = counts > 0
    w = np.ones(n_classes)
    if weighting == "balanced":
        w[present] = len(y) / (present.sum() * counts[present])
    elif weighting == "binary":
        attack = present & (np.arange(n_classes) != benign)
        if counts[benign] and attack.any():
            w[benign] = len(y) / (2 * counts[benign])
            w[attack] = len(y) / (2 * attack.sum() * counts[attack])
    elif weighting != "none":
        raise ValueError(f"unknown class weighting {weighting!r}; valid: {', '.join(CLASS_WEIGHTINGS)}")
    return {i: float(min(v, MAX_CLASS_WEIGHT)) for i, v in enumerate(w)}


def build_model(cfg: TrainConfig, t: int, n_features: int, n_classes: int) -> Any:
    from tapwatch.models.training.arch import build, preset

    return build(preset(cfg.model, t, n_features, n_classes, **dict(cfg.overrides)))


def fit(cfg: TrainConfig, train: Windows, val: Windows, verbose: int = 0) -> tuple[Any, dict[str, list[float]]]:
    """Train ``cfg.model`` on ``train`` with early stopping on ``val``; return the model and its loss history."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    train = subsample(train, cfg.max_train, cfg.seed)
    n_classes = len(train.class_names)
    model = build_model(cfg, train.length, train.X.shape[2], n_classes)
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss="sparse_categorical_crossentropy")
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=cfg.patience, restore_best_weights=True)
    weights = class_weights(train.y, n_classes, cfg.class_weighting)
    validation: tuple[np.ndarray, ...] = (val.X, val.y)
    if DatasetName(cfg.dataset).is_lab:
        # Lab validation weighs its windows as training does, so early stopping watches the objective being
        # trained: unweighted, one long flood episode outweighs every other class of the validation episodes.
        validation = (val.X, val.y, np.asarray([weights[int(c)] for c in val.y], np.float32))
    hist = model.fit(
        train.X,
        train.y,
        validation_data=validation,
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        class_weight=weights,
        callbacks=[stop],
        verbose=verbose,
        shuffle=True,
    )
    history = {k: [float(v) for v in vals] for k, vals in hist.history.items()}
    return model, history


def predict(model: Any, x: np.ndarray, batch: int = 2048) -> np.ndarray:
    """Class probabilities in eager chunks (``model.predict`` retraces for every new shape)."""
    if len(x) == 0:
        return np.zeros((0, int(model.output_shape[-1])), np.float32)
    return np.concatenate([np.asarray(model(x[i : i + batch], training=False)) for i in range(0, len(x), batch)])


def attack_score(probs: np.ndarray, benign_index: int = 0) -> np.ndarray:
    """The benign/attack score of multi-class probabilities: 1 − P(benign)."""
    return np.asarray(1.0 - probs[:, benign_index], dtype=np.float64)


def choose_threshold(score: np.ndarray, y_binary: np.ndarray, max_fpr: float = 0.01) -> dict[str, Any]:
    """The attack threshold of maximal F1 on validation among thresholds with FPR ≤ ``max_fpr``.

    Falls back to 0.5 when validation has no attacks or no benign rows (said in ``chosen``).
    """
    if y_binary.min(initial=1) == y_binary.max(initial=0):
        return {"attack_score": 0.5, "chosen": "default 0.5: validation lacks one of the two labels"}
    benign, attack = y_binary == 0, y_binary == 1
    # Quantiles, and just above each of the benign scores a small budget allows (the grid is too coarse there).
    top = np.sort(score[benign])[::-1][: int(np.ceil(max_fpr * benign.sum())) + 1]
    cands = np.unique(np.concatenate([np.quantile(score, np.linspace(0, 1, 501)), [0.5], np.nextafter(top, 2.0)]))
    best = (-1.0, 0.5, 0.0)
    for t in cands:
        pred = score >= t
        tp, fp = float((pred & attack).sum()), float((pred & benign).sum())
        fpr = fp / benign.sum()
        f1 = 2 * tp / (2 * tp + fp + float((~pred & attack).sum()))
        if fpr <= max_fpr and f1 > best[0]:
            best = (f1, float(t), fpr)
    return {
        "attack_score": best[1],
        "chosen": f"maximal attack F1 on the validation split among thresholds with validation FPR <= {max_fpr:g}",
        "validation_f1": round(best[0], 6),
        "validation_fpr": round(float(best[2]), 6),
    }


@dataclass(frozen=True)
class RunMeta:
    """What a saved run carries for export: the card's data facts and the validation threshold."""

    config: dict[str, Any]
    dataset: str
    files: list[dict[str, str]]
    split: dict[str, Any]
    features: list[str]
    class_names: list[str]
    benign_class: str
    window_length: int
    scaler: dict[str, Any]
    feature_stats: list[dict[str, Any]]
    thresholds: dict[str, Any]
    history: dict[str, list[float]] = field(default_factory=dict)
    test_metrics: dict[str, Any] = field(default_factory=dict)
    """Metrics on the split's test part at the validation threshold (empty when the split has none)."""


def run_meta(cfg: TrainConfig, prep: Prepared, thresholds: dict[str, Any], history: dict[str, Any]) -> RunMeta:
    ds = prep.ds
    stats = feature_stats(ds.X.iloc[prep.split.train])
    return RunMeta(
        config=cfg.key(),
        dataset=ds.name,
        files=[{"name": f.name, "sha256": f.sha256} for f in ds.files],
        split=prep.split.describe(ds),
        features=list(ds.features),
        class_names=list(ds.class_names),
        benign_class=ds.benign_class,
        window_length=prep.train.length,
        scaler=prep.scaler.model_dump(mode="json"),
        feature_stats=[s.model_dump(mode="json") for s in stats],
        thresholds=thresholds,
        history=history,
    )


def save_run(model: Any, meta: RunMeta, parity_windows: np.ndarray, out: Path) -> Path:
    """Write ``out`` (``.keras``), ``out.meta.json`` and ``out.parity.npz``; return the ``.keras`` path."""
    out = out.with_suffix(".keras")
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(out)
    out.with_suffix(".meta.json").write_text(json.dumps(asdict(meta), indent=1) + "\n")
    np.savez_compressed(out.with_suffix(".parity.npz"), windows=np.asarray(parity_windows, np.float32))
    return out


def load_meta(keras_path: Path) -> RunMeta:
    return RunMeta(**json.loads(Path(keras_path).with_suffix(".meta.json").read_text()))


def train_run(cfg: TrainConfig, out: Path, verbose: int = 1, ds: Dataset | None = None) -> tuple[Path, RunMeta]:
    """Prepare, fit, choose the threshold on validation and save (the body of ``tapwatch train``)."""
    prep = prepare(cfg, ds)
    model, history = fit(cfg, prep.train, prep.val, verbose)
    thresholds = choose_threshold(attack_score(predict(model, prep.val.X)), prep.val.y_binary, cfg.max_fpr)
    meta = run_meta(cfg, prep, thresholds, history)
    if len(prep.test.y):
        from tapwatch.models.evaluation.metrics import run_metrics

        probs = predict(model, prep.test.X)
        meta = replace(meta, test_metrics=run_metrics(probs, prep.test.y, prep.test.class_names,
                                                      thresholds["attack_score"]))  # fmt: skip
    rng = np.random.default_rng(cfg.seed)
    pool = np.concatenate([prep.val.X, prep.test.X])
    parity = pool[rng.choice(len(pool), min(1000, len(pool)), replace=False)]
    return save_run(model, meta, parity, out), meta

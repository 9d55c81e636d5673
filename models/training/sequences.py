"""Splits, per-host windows, controls and the facts a report must show about them (EVALUATION.md).

Split first (:mod:`tapwatch.models.training.data_split`), then build windows inside each part: per source host in
time order, the last T flows, left-padded with zeros, stride 1, labelled with the class of the last
flow (causal). A window never holds rows of two parts, and never bridges a stretch of another part
(a validation block inside the training period starts a new run). Datasets without hosts and times get
T = 1 (each flow alone).

Controls: :attr:`Order.SHUFFLED` shuffles the flow order inside each host's run before windowing (a model
that keeps its score learned "which host", not "what sequence"); :func:`shuffle_labels` permutes the
labels of windows (a model must fall to chance). Report helpers: :func:`window_time_spans`,
:func:`single_label_share`, :func:`host_concentration`. Scaling and card statistics:
:func:`fit_scaler`, :func:`scale_features`, :func:`feature_stats` (training rows only).

>>> import pandas as pd
>>> from tapwatch.models.training.data_common import Dataset
>>> ds = Dataset.from_frame("toy", pd.DataFrame({"a": [1.0, 2.0, 3.0]}), pd.Series(["b", "x", "b"]), "b")
>>> w = make_windows(ds, np.arange(3), fit_scaler(ds.X))
>>> w.X.shape, w.X.dtype.name, w.y.tolist(), w.class_names
((3, 1, 1), 'float32', [0, 1, 0], ('b', 'x'))
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

import numpy as np
import pandas as pd

from tapwatch.features.card import Scaler
from tapwatch.features.errors import BadInputError
from tapwatch.models.training.data_common import Dataset
from tapwatch.models.training.data_scaling import QUANTILES, feature_stats, fit_scaler, scale_features, signed_log1p
from tapwatch.models.training.data_split import (
    CIC_TEST_HOSTS,
    Split,
    carve_time_blocks,
    drop_seen_in_train,
    host_split,
    predefined_split,
    stratified_split,
    time_split,
)

__all__ = [
    "CIC_TEST_HOSTS",
    "QUANTILES",
    "HostShare",
    "Order",
    "Split",
    "Windows",
    "carve_time_blocks",
    "describe_windows",
    "drop_seen_in_train",
    "feature_stats",
    "fit_scaler",
    "host_concentration",
    "host_split",
    "make_windows",
    "predefined_split",
    "scale_features",
    "shuffle_labels",
    "signed_log1p",
    "single_label_share",
    "stratified_split",
    "time_split",
    "window_time_spans",
]


class Order(str, Enum):
    """Flow order inside a host's run.

    ``TIME``: by flow start (``Timestamp``), as the CSVs list flows. ``END``: by flow end (``End`` =
    start + duration), closer to the order in which a sensor emits flows (on expiry) and so to live
    windows. ``EMITTED``: the order in which tapwatch's sensor emitted them (``Emitted``, lab flows: exactly the
    order of the windows it builds). ``SHUFFLED``: start order shuffled inside each run (the order-shuffle
    control).
    """

    TIME = "time"
    END = "end"
    EMITTED = "emitted"
    SHUFFLED = "shuffled"


@dataclass(frozen=True, eq=False)
class Windows:
    """Model inputs of one split part.

    Parameters
    ----------
    X
        float32 (N, T, F): scaled features, zeros in the padding rows at the front.
    y, y_binary
        int64 (N,): class index (into ``class_names``) and 0/1 of each window's last flow.
    valid_length
        int64 (N,): rows that hold a flow (the last ``valid_length`` of T).
    rows
        int64 (N, T): dataset row of each step, -1 for padding.
    class_names, features
        Class order of ``y`` (benign first); feature order of the last axis.
    """

    X: np.ndarray
    y: np.ndarray
    y_binary: np.ndarray
    valid_length: np.ndarray
    rows: np.ndarray
    class_names: tuple[str, ...]
    features: tuple[str, ...]

    @property
    def length(self) -> int:
        return int(self.X.shape[1])

    def flat(self) -> np.ndarray:
        """(N, T·F): the window history for a tree ensemble (EVALUATION.md rule 4)."""
        return self.X.reshape(len(self.X), -1)


def _host_runs(ds: Dataset, rows: np.ndarray, time_column: str) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` ordered by host and time, and a run id that changes where the host changes or where
    rows of that host outside ``rows`` (another part) sit in between."""
    if time_column not in ds.meta.columns:
        raise BadInputError(ds.name, f"has no meta column {time_column!r} to order flows by")
    hosts = pd.factorize(ds.meta["Src IP"])[0]
    column = ds.meta[time_column]
    if pd.api.types.is_integer_dtype(column):
        t = column.to_numpy(dtype=np.int64)
    else:
        t = column.to_numpy().astype("datetime64[us]").astype(np.int64)
    every = np.lexsort((np.arange(len(t)), t, hosts))
    position = np.empty(len(t), dtype=np.int64)
    position[every] = np.arange(len(t))
    seq = rows[np.argsort(position[rows], kind="stable")]
    breaks = np.ones(len(seq), dtype=bool)
    breaks[1:] = (hosts[seq[1:]] != hosts[seq[:-1]]) | (position[seq[1:]] != position[seq[:-1]] + 1)
    return seq, np.cumsum(breaks)


def _shuffle_within(seq: np.ndarray, run: np.ndarray, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).random(len(seq))
    return seq[np.lexsort((noise, run))]


def make_windows(
    ds: Dataset, rows: np.ndarray, scaler: Scaler, length: int = 1, order: Order = Order.TIME, seed: int = 0
) -> Windows:
    """Windows of the last ``length`` flows per host run, one per flow of ``rows`` (stride 1).

    ``rows`` must be one split part; fit ``scaler`` on training rows only. With ``length == 1`` every
    flow is its own window (the only choice for datasets without hosts and times).
    """
    rows = np.asarray(rows, dtype=np.int64)
    if length < 1:
        raise BadInputError("length", f"window length must be >= 1, got {length}")
    if length > 1 or order is not Order.TIME:
        if not ds.has_hosts:
            raise BadInputError(ds.name, "has no source hosts and times: use per-flow windows (length=1, time order)")
        column = {Order.END: "End", Order.EMITTED: "Emitted"}.get(order, "Timestamp")
        seq, run = _host_runs(ds, rows, column)
        if order is Order.SHUFFLED:
            seq = _shuffle_within(seq, run, seed)
    else:
        seq, run = np.sort(rows), np.arange(len(rows))
    steps = np.full((len(seq), length), -1, dtype=np.int64)
    ahead = np.arange(len(seq))
    for k in range(length):
        src = ahead - (length - 1 - k)
        ok = src >= 0
        ok[ok] = run[src[ok]] == run[ok]
        steps[ok, k] = seq[src[ok]]
    scaled = scale_features(ds.X.to_numpy()[seq], scaler)
    where = np.zeros(len(ds.y), dtype=np.int64)
    where[seq] = np.arange(len(seq))
    x = np.zeros((len(seq), length, len(ds.features)), dtype=np.float32)
    valid = steps >= 0
    x[valid] = scaled[where[steps[valid]]]
    names = ds.class_names
    index = {c: i for i, c in enumerate(names)}
    last = steps[:, -1]
    y = ds.y.to_numpy()[last]
    return Windows(
        X=x,
        y=np.asarray([index[c] for c in y], dtype=np.int64),
        y_binary=ds.y_binary[last].astype(np.int64),
        valid_length=valid.sum(axis=1).astype(np.int64),
        rows=steps,
        class_names=names,
        features=ds.features,
    )


def shuffle_labels(windows: Windows, seed: int = 0) -> Windows:
    """The label-shuffle control: the same windows with their labels permuted (class and binary together)."""
    perm = np.random.default_rng(seed).permutation(len(windows.y))
    return replace(windows, y=windows.y[perm], y_binary=windows.y_binary[perm])


def window_time_spans(ds: Dataset, windows: Windows, mask: np.ndarray | None = None) -> dict[str, float]:
    """Seconds between the first and the last flow of each window with at least two flows.

    Returns quantiles (``p0`` … ``p100``), the mean, how many windows hold two or more flows, and the
    share of those that span more than a minute and more than an hour. ``mask`` selects windows (for
    example ``windows.y_binary == 0`` for benign ones).
    """
    t = ds.meta["Timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64) / 1e6
    selected = np.ones(len(windows.y), dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    multi = selected & (windows.valid_length >= 2)
    steps = windows.rows[multi]
    times = np.where(steps >= 0, t[np.maximum(steps, 0)], np.nan)
    spans = np.nanmax(times, axis=1) - np.nanmin(times, axis=1) if len(steps) else np.zeros(0)
    out: dict[str, float] = {"windows": float(selected.sum()), "windows_multi": float(len(spans))}
    if len(spans):
        for q in (0, 10, 25, 50, 75, 90, 100):
            out[f"p{q}"] = float(np.percentile(spans, q))
        out |= {"mean": float(spans.mean()), "share_over_60s": float((spans > 60).mean()),
                "share_over_3600s": float((spans > 3600).mean())}  # fmt: skip
    return out


def single_label_share(ds: Dataset, windows: Windows) -> dict[str, float]:
    """Share of windows whose valid rows all carry one class (and one binary label).

    ``all`` counts every window (one-flow windows are trivially single-label); ``multi`` only windows
    with two or more flows, the number that matters.
    """
    labels = pd.factorize(ds.y)[0]
    steps = windows.rows
    valid = steps >= 0
    cls = np.where(valid, labels[np.maximum(steps, 0)], -1)
    binary = np.where(valid, ds.y_binary[np.maximum(steps, 0)], -1)
    last_cls, last_bin = cls[:, -1:], binary[:, -1:]
    one_cls = np.all((cls == last_cls) | ~valid, axis=1)
    one_bin = np.all((binary == last_bin) | ~valid, axis=1)
    multi = windows.valid_length >= 2
    out = {"all": float(one_cls.mean()) if len(one_cls) else float("nan"), "windows_multi": float(multi.sum())}
    if multi.any():
        out |= {"multi": float(one_cls[multi].mean()), "multi_binary": float(one_bin[multi].mean())}
    return out


@dataclass(frozen=True)
class HostShare:
    """One source host's rows: total, share of the dataset, benign and attack rows, its main class."""

    host: str
    rows: int
    share: float
    benign: int
    attack: int
    top_class: str
    top_class_rows: int


def host_concentration(ds: Dataset, rows: np.ndarray | None = None) -> list[HostShare]:
    """Rows per source host (of ``rows``, default all), largest first."""
    if "Src IP" not in ds.meta.columns:
        raise BadInputError(ds.name, "has no Src IP column")
    sel = np.arange(len(ds.y)) if rows is None else np.asarray(rows)
    frame = pd.DataFrame({"host": ds.meta["Src IP"].to_numpy()[sel], "y": ds.y.to_numpy()[sel],
                          "attack": ds.y_binary[sel]})  # fmt: skip
    out = []
    for host, g in frame.groupby("host", sort=False):
        top = g["y"].value_counts()
        attack = int(g["attack"].sum())
        out.append(HostShare(str(host), len(g), len(g) / len(frame), len(g) - attack, attack, str(top.index[0]),
                             int(top.iloc[0])))  # fmt: skip
    return sorted(out, key=lambda h: (-h.rows, h.host))


def describe_windows(ds: Dataset, windows: Windows) -> dict[str, Any]:
    """The window facts of a report in one dict: shape, spans, single-label share."""
    return {
        "windows": len(windows.y),
        "length": windows.length,
        "features": len(windows.features),
        "mean_valid_length": float(windows.valid_length.mean()) if len(windows.y) else 0.0,
        "time_spans_s": window_time_spans(ds, windows) if ds.has_hosts else {},
        "time_spans_s_benign": window_time_spans(ds, windows, windows.y_binary == 0) if ds.has_hosts else {},
        "time_spans_s_attack": window_time_spans(ds, windows, windows.y_binary == 1) if ds.has_hosts else {},
        "single_label_share": single_label_share(ds, windows),
    }

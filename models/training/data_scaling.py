"""The scaler and the per-feature training statistics of a model card, fitted on training rows only.

The scaler is the card's :class:`~tapwatch.features.card.Scaler`: signed log1p, then standard scaling,
with its parameters as plain lists; :func:`scale_features` applies it exactly as the sensor's
:class:`~tapwatch.features.window.Windower` does.

>>> X = np.array([[0.0, 10.0], [2.0, 10.0], [-2.0, 10.0]])
>>> s = fit_scaler(X)
>>> s.kind.value, s.log1p, [round(c, 3) for c in s.center], s.scale[1]
('standard', True, [0.0, 2.398], 1.0)
>>> scale_features(X, s)[:, 1].tolist()
[0.0, 0.0, 0.0]
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from tapwatch.features.card import FeatureStats, Scaler, ScalerKind

QUANTILES: tuple[float, ...] = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)
"""Quantiles stored per feature; keys ``"p1"``, ``"p5"``, ``"p25"``, ``"p50"``, ``"p75"``, ``"p95"``, ``"p99"``."""


def signed_log1p(x: Any) -> np.ndarray:
    """sign(x) · log(1 + |x|): keeps the sign of -1 sentinels and tames heavy tails."""
    arr = np.asarray(x, dtype=np.float64)
    return np.asarray(np.sign(arr) * np.log1p(np.abs(arr)))


def fit_scaler(x: pd.DataFrame | np.ndarray, log1p: bool = True) -> Scaler:
    """A standard scaler (optionally on signed log1p values) fitted on the rows given (train only).

    A constant feature (or one with a standard deviation below 1e-9) gets scale 1.
    """
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or len(arr) == 0:
        raise ValueError(f"fit_scaler needs a non-empty 2-D array, got shape {arr.shape}")
    if log1p:
        arr = signed_log1p(arr)
    center = arr.mean(axis=0)
    scale = arr.std(axis=0)
    # A constant column's computed std is rounding noise (1e-15), which would blow up live values.
    constant = (arr.max(axis=0) == arr.min(axis=0)) | (scale < 1e-9)
    scale = np.where(constant, 1.0, scale)
    return Scaler(
        kind=ScalerKind.STANDARD,
        log1p=log1p,
        center=[float(v) for v in center],
        scale=[float(v) for v in scale],
    )


def scale_features(x: pd.DataFrame | np.ndarray, scaler: Scaler) -> np.ndarray:
    """Scaled float32 rows, computed as :meth:`tapwatch.features.window.Windower.scale` does."""
    arr = np.asarray(x, dtype=np.float64)
    center, scale = scaler.arrays(arr.shape[1])
    if scaler.log1p:
        arr = signed_log1p(arr)
    return np.asarray((arr - center) / scale, dtype=np.float32)


def feature_stats(x: pd.DataFrame) -> list[FeatureStats]:
    """Mean, standard deviation and :data:`QUANTILES` of each (unscaled) training feature."""
    arr = x.to_numpy(dtype=np.float64)
    qs = np.quantile(arr, QUANTILES, axis=0)
    means, stds = arr.mean(axis=0), arr.std(axis=0)
    out = []
    for j, name in enumerate(x.columns):
        quantiles = {f"p{round(q * 100)}": float(qs[i, j]) for i, q in enumerate(QUANTILES)}
        out.append(FeatureStats(feature=str(name), mean=float(means[j]), std=float(stds[j]), quantiles=quantiles))
    return out

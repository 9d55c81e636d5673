"""LIME explanations of alerts, model-agnostic over an ONNX Runtime session.

LIME perturbs the window's *newest* flow (its last row) and holds the other T-1 rows fixed, so the explanation
says which features of the flow that triggered the alert drove the attack score. Perturbed values are sampled
from the model card's per-feature training statistics (``feature_stats``: inverse CDF over the quantiles when
the card gives at least three, else a normal with the mean and std), in raw feature units, then scaled as the
window builder scales them. No pickled explainer and no training data are needed at run time.

The local surrogate is what :class:`lime.lime_base.LimeBase` fits (:func:`lime_surrogate`, the same algebra in
NumPy, bound to LimeBase by a parity test: importing LIME brings scikit-learn and SciPy, a second of start-up for
every ``detect``): a weighted ridge regression of the attack score on the standardised sampled features, with
LIME's exponential kernel on the distance to the explained flow and "highest_weights" feature selection. A
weight is the score change per one training standard deviation of the feature, near this flow; the value is
the flow's raw feature value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.alerting.alert import Contribution
from tapwatch.alerting.errors import ExplainerUnavailable
from tapwatch.features.card import ModelCard
from tapwatch.features.errors import ModelCardError
from tapwatch.inference.model import load_model

Array = np.ndarray[Any, np.dtype[Any]]
ScoreFn = Callable[[Array], Array]
"""(N, T, F) float32 windows → (N,) attack scores, 1 - P(benign), as the worker computes them."""


def _quantile_prob(key: str) -> float | None:
    """A quantile key as a probability: ``"0.25"``; percentiles ``"p25"``, ``"q25"``, ``"25%"``, ``"25"``;
    ``"min"``, ``"median"``, ``"max"``. Unknown keys are ignored.

    >>> [_quantile_prob(k) for k in ("0.25", "p99", "q5", "50%", "median", "75", "iqr")]
    [0.25, 0.99, 0.05, 0.5, 0.5, 0.75, None]
    """
    k = key.strip().lower()
    named = {"min": 0.0, "median": 0.5, "max": 1.0}
    if k in named:
        return named[k]
    m = re.fullmatch(r"([qp]?)(\d+(?:\.\d+)?)(%?)", k)
    if m is None:
        return None
    v = float(m.group(2))
    percent = bool(m.group(3)) or (bool(m.group(1)) and "." not in m.group(2)) or v > 1
    p = v / 100 if percent else v
    return p if 0.0 <= p <= 1.0 else None


class FeatureSampler:
    """Draws raw feature values from per-feature training statistics.

    Parameters
    ----------
    card
        Its ``feature_stats`` must cover every feature of ``card.features``.

    Example
    -------
    >>> from tapwatch.features.card import FeatureStats, identity_card
    >>> card = identity_card(2).model_copy(update={"feature_stats": [
    ...     FeatureStats(feature=f, mean=0.0, std=1.0, quantiles={"0.0": 5.0, "0.5": 6.0, "1.0": 7.0})
    ...     for f in identity_card(2).features]})
    >>> x = FeatureSampler(card).sample(100, np.random.default_rng(0))
    >>> x.shape, bool(x.min() >= 5.0 and x.max() <= 7.0)
    ((100, 82), True)
    """

    def __init__(self, card: ModelCard) -> None:
        stats = {s.feature: s for s in card.feature_stats}
        missing = [f for f in card.features if f not in stats]
        if missing:
            raise ExplainerUnavailable(
                f"model card {card.name} {card.version} has no training statistics for {len(missing)} of "
                f"{len(card.features)} features (first: {missing[0]!r}); explanations need feature_stats"
            )
        self.mean = np.array([stats[f].mean for f in card.features], dtype=np.float64)
        self.std = np.array([max(stats[f].std, 0.0) for f in card.features], dtype=np.float64)
        self.quantiles: list[tuple[Array, Array] | None] = [self._points(stats[f].quantiles) for f in card.features]

    @staticmethod
    def _points(q: dict[str, float]) -> tuple[Array, Array] | None:
        pts = sorted((p, float(v)) for k, v in q.items() if (p := _quantile_prob(k)) is not None)
        if len(pts) < 3:
            return None
        probs, values = np.array([p for p, _ in pts]), np.maximum.accumulate(np.array([v for _, v in pts]))
        return probs, values

    def sample(self, n: int, rng: np.random.Generator) -> Array:
        out = rng.normal(self.mean, self.std, size=(n, len(self.mean)))
        for j, pts in enumerate(self.quantiles):
            if pts is not None:
                out[:, j] = np.interp(rng.uniform(pts[0][0], pts[0][-1], n), pts[0], pts[1])
        return out


class CardScaler:
    """The card's scaler: optional signed log1p, then (x - center) / scale; and its inverse."""

    def __init__(self, card: ModelCard) -> None:
        self.center, self.scale = card.scaler.arrays(len(card.features))
        self.log1p = card.scaler.log1p

    def to_model(self, raw: Array) -> Array:
        x = np.asarray(raw, dtype=np.float64)
        if self.log1p:
            x = np.sign(x) * np.log1p(np.abs(x))
        return np.asarray((x - self.center) / self.scale)

    def to_raw(self, scaled: Array) -> Array:
        x = np.asarray(scaled, dtype=np.float64) * self.scale + self.center
        return np.asarray(np.sign(x) * np.expm1(np.abs(x))) if self.log1p else x


@dataclass(frozen=True)
class ExplainConfig:
    """LIME parameters.

    Parameters
    ----------
    samples
        Perturbed flows per explanation (LIME's ``num_samples``); cost grows linearly with it.
    top_k
        Features reported per alert.
    seed
        Seed of the sampler; None draws a fresh one per process.
    batch
        Windows per ONNX Runtime call while scoring the samples (bounds memory: batch × T × F floats).
    kernel_width
        LIME kernel width on standardised distances; None is LIME's default, 0.75 × sqrt(F).
    """

    samples: int = 500
    top_k: int = 5
    seed: int | None = None
    batch: int = 256
    kernel_width: float | None = None


class LimeExplainer:
    """Explain one window's attack score with LIME; see the module docstring for the method.

    Parameters
    ----------
    score_fn
        The model: :data:`ScoreFn` (:func:`onnx_score_fn` builds it from an ONNX Runtime session).
    card
        Feature names and order, scaler and training statistics.
    config
        :class:`ExplainConfig`.
    """

    def __init__(self, score_fn: ScoreFn, card: ModelCard, config: ExplainConfig | None = None) -> None:
        self.config = config or ExplainConfig()
        if self.config.samples < 10 or self.config.top_k < 1:
            raise ValueError(f"explain: samples must be >= 10 and top_k >= 1 ({self.config})")
        self.score_fn = score_fn
        self.card = card
        self.names = list(card.features)
        self.sampler = FeatureSampler(card)
        self.scaler = CardScaler(card)
        self._rng = np.random.default_rng(self.config.seed)

    def explain(self, window: Array) -> tuple[Contribution, ...]:
        """Top-k contributions for ``window`` (T, F), strongest first."""
        t = np.asarray(window, dtype=np.float32)
        if t.ndim != 2 or t.shape[1] != len(self.names):
            raise ValueError(f"window shape {t.shape} does not match the card's {len(self.names)} features")
        sampled = self.scaler.to_model(self.sampler.sample(self.config.samples - 1, self._rng))
        rows = np.vstack([t[-1:].astype(np.float64), sampled])
        scores = self._scores(t, rows)
        z = self._standardise(rows)
        distances = np.linalg.norm(z - z[0], axis=1)
        width = self.config.kernel_width or 0.75 * np.sqrt(z.shape[1])
        self._rng.integers(2**31)  # LimeBase's random_state was drawn here: the same samples follow as before
        weights = lime_surrogate(z, scores, _kernel(width)(distances), self.config.top_k)
        raw = self.scaler.to_raw(t[-1])
        return tuple(Contribution(self.names[i], float(raw[i]), float(w)) for i, w in weights)

    def _scores(self, window: Array, rows: Array) -> Array:
        out = []
        for start in range(0, len(rows), self.config.batch):
            part = rows[start : start + self.config.batch]
            chunk = np.repeat(window[None], len(part), axis=0)
            chunk[:, -1, :] = part
            out.append(np.asarray(self.score_fn(chunk), dtype=np.float64).reshape(len(part)))
        return np.concatenate(out)

    @staticmethod
    def _standardise(rows: Array) -> Array:
        """LIME's interpretable space: each feature in units of its sampled (training) spread."""
        mu, sd = rows[1:].mean(axis=0), rows[1:].std(axis=0)
        flat = sd <= 1e-12
        z = (rows - mu) / np.where(flat, 1.0, sd)
        z[:, flat] = 0.0  # a feature the statistics never vary cannot be credited
        return np.asarray(z)


def ridge(x: Array, y: Array, sample_weight: Array, alpha: float) -> Array:
    """Coefficients of scikit-learn's ``Ridge(alpha, fit_intercept=True).fit(x, y, sample_weight)`` (dense x).

    The intercept is the weighted means': centre x and y on them, scale rows by the root of their weight and
    solve the normal equations (x'x + alpha I) b = x'y, as Ridge's Cholesky solver does.

    >>> x = np.array([[0.0], [1.0], [2.0]])
    >>> ridge(x, 2 * x[:, 0] + 1, np.ones(3), 0.0).round(6).tolist()
    [2.0]
    """
    w = np.asarray(sample_weight, dtype=np.float64)
    total = w.sum()
    xc = x - (w @ x) / total
    yc = y - (w @ y) / total
    root = np.sqrt(w)
    xw, yw = xc * root[:, None], yc * root
    gram = xw.T @ xw
    gram.flat[:: gram.shape[0] + 1] += alpha
    return np.asarray(np.linalg.solve(gram, xw.T @ yw))


def lime_surrogate(z: Array, scores: Array, sample_weight: Array, top_k: int) -> list[tuple[int, float]]:
    """``LimeBase.explain_instance_with_data(z, scores, ..., top_k, "highest_weights")``'s feature weights.

    Row 0 of ``z`` is the explained flow. "highest_weights": a ridge (alpha 0.01) on every feature ranks them
    by |coefficient x the flow's value|; the top k are fitted again (alpha 1) and returned as (feature index,
    coefficient), strongest first (ties keep feature order, as Python's stable sort in LIME does).
    """
    rank = np.abs(ridge(z, scores, sample_weight, 0.01) * z[0])
    used = np.argsort(-rank, kind="stable")[:top_k]
    coef = ridge(z[:, used], scores, sample_weight, 1.0)
    order = np.argsort(-np.abs(coef), kind="stable")
    return [(int(used[i]), float(coef[i])) for i in order]


def _kernel(width: float) -> Callable[[Array], Array]:
    """LIME's kernel sqrt(exp(-d² / w²)), shifted so the nearest sample weighs 1: far-out flows (distances of
    hundreds of standard deviations) would otherwise underflow every weight to 0; a common factor leaves the
    weighted regression unchanged."""

    def kernel(d: Array) -> Array:
        d2 = np.asarray(d, dtype=np.float64) ** 2
        shift = d2[1:].min() if len(d2) > 1 else 0.0
        return np.asarray(np.sqrt(np.exp(-np.maximum(d2 - shift, 0.0) / width**2)))

    return kernel


def onnx_score_fn(session: Any, card: ModelCard) -> ScoreFn:
    """The attack score of an ONNX Runtime session, as the card describes its input and output.

    Handles a (N, T, F) or flat (N, T·F) input, float32 or float16, and an output of class probabilities
    (N, C), per-time-step probabilities (N, T, C: the window's label is its last flow's) or one sigmoid (N, 1).
    """
    inp = session.get_inputs()[0]
    in_name = card.onnx.input_name if card.onnx else inp.name
    out_name = card.onnx.output_names[0] if card.onnx and card.onnx.output_names else session.get_outputs()[0].name
    flat = len(inp.shape) == 2
    dtype = np.float16 if inp.type == "tensor(float16)" else np.float32
    benign = card.class_names.index(card.benign_class)

    def score(batch: Array) -> Array:
        x = batch.reshape(len(batch), -1) if flat else batch
        y = np.asarray(session.run([out_name], {in_name: x.astype(dtype)})[0], dtype=np.float64)
        if y.ndim == 3:
            y = y[:, -1, :]
        if y.ndim == 1 or y.shape[1] == 1:
            return y.reshape(len(x))
        return np.asarray(1.0 - y[:, benign])

    return score


def load_onnx_explainer(
    card: ModelCard, card_path: str | Path, onnx_path: str | Path | None, config: ExplainConfig, threads: int = 1
) -> LimeExplainer:
    """An explainer over the card's ONNX file, loaded and checked as the worker loads it
    (:func:`~tapwatch.inference.model.load_model`, as the alerter's hot reload does), one intra-op thread by default.
    """
    path = Path(onnx_path) if onnx_path else (Path(card_path).parent / card.onnx.file if card.onnx else None)
    if path is None or not path.exists():
        raise ExplainerUnavailable(f"no ONNX file for model card {card_path} (looked for {path})")
    try:
        model = load_model(path, card_path, threads)
    except ModelCardError as err:
        raise ExplainerUnavailable(str(err)) from err
    return LimeExplainer(onnx_score_fn(model.session, card), card, config)

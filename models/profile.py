"""Learn a site profile from a site's benign flows (the part of ``tapwatch learn`` that needs TensorFlow).

Input: the benign flows of the learning period, one list per capture or file (windows and aggregates never join
two), and the model the profile is for. Output: a :class:`~tapwatch.features.profile.SiteProfile`:

* the **site baseline**, learned as ``python -m tapwatch.models.baseline`` learns it;
* **family thresholds**: the site's benign windows are built by the sensor's own
  :class:`~tapwatch.features.window.Windower` and scored with the model; per family, the ``1 - budget`` quantile of
  the family's score (its classes' summed probability) over them, never under the card's threshold;
* the **novelty model**, trained on the same windows (:mod:`tapwatch.models.training.novelty`), and the per-feature
  mean and spread of their newest rows (the drift reference).

The poisoning check (detection over the input first) is the caller's (:mod:`tapwatch.app.learn`): this module
sees only flows it is told are benign.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tapwatch.features.families import Family, family_of_class
from tapwatch.features.profile import DEFAULT_BUDGET, Novelty, ProfileCard, ProfileModel, Rule, SiteProfile
from tapwatch.features.schema import FlowRecord
from tapwatch.features.window import Windower
from tapwatch.inference.model import Model
from tapwatch.models.baseline import baseline_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LearnConfig:
    budget: float = DEFAULT_BUDGET
    """Benign windows allowed over a family threshold."""
    baseline_budget: float = 1e-4
    margin: float = 1.5
    bucket_s: float = 10.0
    novelty: bool = True
    novelty_epochs: int = 4
    novelty_max_windows: int = 60_000
    seed: int = 0
    rule: Rule = field(default_factory=Rule)
    batch: int = 512


@dataclass
class Windows:
    tensors: np.ndarray[Any, np.dtype[np.float32]]
    valid_rows: np.ndarray[Any, np.dtype[np.int64]]
    probs: np.ndarray[Any, np.dtype[np.float32]]


def site_windows(per_file: Sequence[Sequence[FlowRecord]], model: Model, batch: int = 512) -> Windows:
    """Every benign flow's window, built as the sensor builds it (one windower per file; flows of one packet are
    never windowed, only aggregated), and its probabilities."""
    tensors, valid = [], []
    for records in per_file:
        windower = Windower(model.card)
        for r in records:
            if r.meta.packets < 2:
                continue
            e = windower.add(r)
            tensors.append(e.tensor)
            valid.append(e.valid_rows)
    if not tensors:
        t, f = model.window_shape
        return Windows(np.zeros((0, t, f), np.float32), np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    x = np.stack(tensors).astype(np.float32)
    probs = np.concatenate([model.predict(x[i : i + batch]) for i in range(0, len(x), batch)])
    return Windows(x, np.asarray(valid, dtype=np.int64), probs.astype(np.float32))


def family_scores(probs: np.ndarray[Any, np.dtype[np.float32]], class_names: Sequence[str]) -> dict[str, Any]:
    """family -> per-window summed probability of that family's classes (families the model has classes of)."""
    out: dict[str, Any] = {}
    for fam in Family:
        if fam is Family.BENIGN:
            continue
        cols = [i for i, c in enumerate(class_names) if family_of_class(c) is fam]
        if cols:
            out[fam.value] = probs[:, cols].sum(axis=1)
    return out


def family_thresholds(windows: Windows, model: Model, budget: float) -> dict[str, float]:
    """Per family: the ``1 - budget`` quantile of its score over the site's benign windows, at least the card's
    threshold (a window under the card's threshold is no evidence anyway)."""
    out = {}
    for fam, scores in family_scores(windows.probs, model.card.class_names).items():
        q = float(np.quantile(scores, 1 - budget, method="higher")) if len(scores) else 0.0
        # just above the quantile: a window exactly at it is the budget's last benign window
        out[fam] = round(max(model.threshold, float(np.nextafter(np.float32(q), np.float32(2)))), 7)
    return out


def drift_reference(windows: Windows) -> tuple[list[float], list[float]]:
    """Per feature: mean and standard deviation of the newest row of each window (scaled as the model sees it)."""
    if not len(windows.tensors):
        return [], []
    newest = windows.tensors[:, -1, :].astype(np.float64)
    return [round(float(v), 6) for v in newest.mean(axis=0)], [round(float(v), 6) for v in newest.std(axis=0)]


def learn_profile(
    per_file: Sequence[Sequence[FlowRecord]],
    model: Model,
    onnx_sha256: str,
    cfg: LearnConfig,
    card: dict[str, Any],
) -> SiteProfile:
    """The profile of the benign flows in ``per_file`` for ``model``; ``card`` adds the data, command and
    poisoning entries of the profile's card."""
    start = time.monotonic()
    lists = [list(r) for r in per_file]
    source = {"files": card.get("data", []), "command": card.get("command", "")}
    baseline = baseline_of(lists, [model], cfg.baseline_budget, cfg.margin, cfg.bucket_s, source)
    windows = site_windows(lists, model, cfg.batch)
    log.info("learning from %d benign flows (%d windows)", sum(map(len, lists)), len(windows.tensors))
    thresholds = family_thresholds(windows, model, cfg.budget) if len(windows.tensors) else {}
    novelty = None
    if cfg.novelty:
        from tapwatch.models.training.novelty import NoveltyConfig, train_novelty

        art = train_novelty(windows.tensors, windows.valid_rows,
                            NoveltyConfig(epochs=cfg.novelty_epochs, max_windows=cfg.novelty_max_windows,
                                          seed=cfg.seed))  # fmt: skip
        mean, std = drift_reference(windows)
        novelty = Novelty.embed(art.onnx, threshold=art.threshold, error_quantiles=art.error_quantiles,
                                window_length=art.window_length, features=art.features, windows=art.windows,
                                feature_mean=mean, feature_std=std)  # fmt: skip
    span = sum((max(r.meta.last_seen_ms for r in recs) - min(r.meta.first_seen_ms for r in recs)) / 1000
               for recs in lists if recs)  # fmt: skip
    pc = ProfileCard(
        model=ProfileModel(name=model.card.name, version=model.card.version, onnx_sha256=onnx_sha256),
        created=card.get("created", ""), tapwatch_version=card.get("tapwatch_version", ""),
        command=card.get("command", ""), data=card.get("data", []), flows=sum(map(len, lists)),
        windows=len(windows.tensors), span_s=round(span, 3), seconds=round(time.monotonic() - start, 1),
        budget=cfg.budget, poisoning=card.get("poisoning", {}),
    )  # fmt: skip
    return SiteProfile(card=pc, baseline=baseline, thresholds=thresholds, novelty=novelty, rule=cfg.rule)

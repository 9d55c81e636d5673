"""The worker's part of a site profile: each window's novelty, and how far live traffic drifts from the profile.

With a profile that holds a novelty model, the worker scores every window with it too: the verdict carries the
window's novelty ratio (reconstruction error over the profile's threshold; >= 1: more unlike the site than its
threshold quantile of benign windows), which the profile's ``novel`` rule reads in the alerter. Drift, as
metrics: the share of recent windows at or over the novelty threshold, and per feature how far the recent
windows' newest rows sit from the profile's benign mean, in benign standard deviations (an exponentially
weighted mean over batches).

The profile file is polled as the model files are (``stat`` only; a change must hold still for one poll), and
reloaded after every check of :func:`~tapwatch.features.profile.load_profile` passes, for the model being
served: a refused file is counted and logged on one line, and the profile in use is kept.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.features.errors import ConfigError, ModelCardError
from tapwatch.features.profile import SiteProfile, load_profile
from tapwatch.inference.model import Model
from tapwatch.inference.novelty import NoveltyScorer
from tapwatch.inference.reload import FileWatch

log = logging.getLogger(__name__)

DRIFT_ALPHA = 0.05
"""Weight of each batch in the drift averages (about the last 20 batches)."""


def model_id(model: Model) -> tuple[str, str, str]:
    return model.card.name, model.card.version, model.sha256


class ServedProfile:
    """A loaded profile's novelty scorer and drift state (None parts: the profile has no novelty model)."""

    def __init__(self, profile: SiteProfile, path: Path, model: Model, threads: int = 1) -> None:
        self.profile = profile
        self.path = path
        nov = profile.novelty
        self.scorer: NoveltyScorer | None = None
        if nov is not None:
            try:
                self.scorer = NoveltyScorer(nov.onnx(), nov.threshold, threads)
            except (ModelCardError, ValueError) as err:
                raise ConfigError("profile", f"{path}: novelty model refused: {err}") from err
            if (self.scorer.window_length, self.scorer.features) != model.window_shape:
                raise ConfigError("profile", f"{path}: novelty model takes windows of {self.scorer.window_length} x "
                                  f"{self.scorer.features}, the model {model.window_shape[0]} x "
                                  f"{model.window_shape[1]}")  # fmt: skip
        self.names = list(model.card.features)
        self.mean = np.asarray(nov.feature_mean, dtype=np.float64) if nov and nov.feature_mean else None
        std = np.asarray(nov.feature_std, dtype=np.float64) if nov and nov.feature_std else None
        self.std = np.where(std > 1e-9, std, 1.0) if std is not None else None
        self.recent_mean: np.ndarray[Any, np.dtype[np.float64]] | None = None
        self.novel_share: float | None = None

    def novelty(self, batch: np.ndarray[Any, np.dtype[np.float32]], valid_rows: list[int]) -> list[float] | None:
        """Each window's novelty ratio (None without a novelty model); updates the drift averages."""
        if self.scorer is None:
            return None
        ratios = self.scorer.ratios(batch, np.asarray(valid_rows, dtype=np.int64))
        share = float((ratios >= 1.0).mean()) if len(ratios) else 0.0
        self.novel_share = share if self.novel_share is None else (1 - DRIFT_ALPHA) * self.novel_share + (
            DRIFT_ALPHA * share)  # fmt: skip
        newest = batch[:, -1, :].astype(np.float64).mean(axis=0)
        self.recent_mean = newest if self.recent_mean is None else (1 - DRIFT_ALPHA) * self.recent_mean + (
            DRIFT_ALPHA * newest)  # fmt: skip
        return [float(r) for r in ratios]

    def shifts(self) -> dict[str, float]:
        """Per feature: |recent mean - benign mean| / benign std of the newest rows (empty before any batch)."""
        if self.recent_mean is None or self.mean is None or self.std is None or len(self.mean) != len(self.recent_mean):
            return {}
        z = np.abs(self.recent_mean - self.mean) / self.std
        return {name: float(v) for name, v in zip(self.names, z, strict=False)}


class ProfileReloader:
    """Poll a profile file; :meth:`read` or :meth:`load` it once :meth:`changed` says so."""

    def __init__(self, path: Path, poll_s: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.path = path
        self.watch = FileWatch((path,), poll_s, clock)
        self.watch.mark_loaded()

    def changed(self) -> bool:
        return self.watch.changed()

    def read(self, model: tuple[str, str, str | None]) -> SiteProfile:
        """Read and check the file as it is now for ``model`` (name, version, ONNX sha256): :class:`ConfigError`
        when refused, and not retried until the file changes again."""
        self.watch.mark_loaded()
        return load_profile(self.path, model)

    def load(self, model: Model, threads: int = 1) -> ServedProfile:
        """:meth:`read`, then the novelty scorer over it (the worker's part)."""
        return ServedProfile(self.read(model_id(model)), self.path, model, threads)


def serve_profile(path: Path, model: Model, threads: int = 1) -> ServedProfile:
    """Load a profile for ``model`` (:class:`ConfigError` in one line when refused)."""
    return ServedProfile(load_profile(path, model_id(model)), path, model, threads)

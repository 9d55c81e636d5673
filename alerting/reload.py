"""Hot reload of the alerter's model card (and the explainer's ONNX session) when the model files change.

The alerter polls the files as the worker does (:class:`~tapwatch.inference.reload.ModelReloader`: ``stat``
only, a change must hold still for one poll interval, then every check of :func:`load_model` runs). A model
that fails a check, or whose card cannot be explained while explanations are on, is refused and counted; the
alerter keeps the card and explainer it has.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tapwatch.alerting.errors import ExplainerUnavailable
from tapwatch.alerting.explain import ExplainConfig, LimeExplainer, onnx_score_fn
from tapwatch.features.card import ModelCard
from tapwatch.features.errors import ModelCardError
from tapwatch.inference.reload import ModelReloader

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reloaded:
    """A new card, and the explainer over its model (None when explanations are off)."""

    card: ModelCard
    explainer: LimeExplainer | None


class CardReloader:
    """Poll a model's ONNX file and card; :meth:`poll` returns what to swap in, at most once per change.

    Parameters
    ----------
    onnx_path, card_path
        The files the alerter's card and explainer came from.
    explain
        The explainer's LIME settings; None: explanations are off, only the card is reloaded.
    threads
        ONNX Runtime intra-op threads of the new session.
    poll_s
        Interval between polls; 0 turns reloading off.
    clock
        Monotonic clock, injectable for tests.
    """

    def __init__(
        self,
        onnx_path: str | Path,
        card_path: str | Path,
        explain: ExplainConfig | None,
        threads: int = 1,
        poll_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.files = ModelReloader(onnx_path, card_path, threads, poll_s, clock)
        self.files.mark_loaded()
        self.explain = explain

    def poll(self, current: ModelCard | None) -> Reloaded | None:
        """The new card and explainer when the files changed and pass every check; else None.

        Raises :class:`~tapwatch.features.errors.ModelCardError` for a refused model (the caller counts it).
        """
        if not self.files.changed():
            return None
        model = self.files.load()
        if model.card == current:
            return None
        explainer = None
        if self.explain is not None:
            try:
                explainer = LimeExplainer(onnx_score_fn(model.session, model.card), model.card, self.explain)
            except ExplainerUnavailable as err:
                raise ModelCardError(f"{model.card_path}: cannot explain with it: {err}") from err
        return Reloaded(model.card, explainer)

"""Load a shipped model for inference: the ``.onnx``, its card, and the checks between them.

This module imports only numpy, onnxruntime and :mod:`tapwatch.features`, never TensorFlow, so an inference
worker can load models without the training stack. :func:`load_session` refuses a model whose card does not
match the file (sha256), whose ONNX input is not the card's (T, F) window or whose output is not the card's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tapwatch.features.card import ModelCard, card_path_for, load_card, verify_onnx_file
from tapwatch.features.errors import ModelCardError


def session_options(threads: int = 1, optimization: str = "all") -> ort.SessionOptions:
    """ORT options for one model: ``threads`` intra-op threads, one inter-op thread, sequential execution.

    ``optimization`` is ``"disable"``, ``"basic"``, ``"extended"`` or ``"all"`` (ORT's graph optimisation level).
    """
    levels = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }
    if optimization not in levels:
        raise ValueError(f"optimization must be one of {', '.join(levels)}, got {optimization!r}")
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = levels[optimization]
    return so


@dataclass(frozen=True)
class LoadedModel:
    """An ONNX Runtime session whose file, input and output were checked against its card.

    Parameters
    ----------
    session
        The ORT session (CPU).
    card
        The validated model card.
    input_name, output_name
        The names to feed and to read (outputs are always read by name).

    Example
    -------
    ``model = load_session("models/hybrid-cic.onnx", "models/hybrid-cic.card.json")`` then
    ``probs = model.predict(windows)`` with ``windows`` of shape (n, T, F).
    """

    session: ort.InferenceSession
    card: ModelCard
    input_name: str
    output_name: str

    def predict(self, windows: np.ndarray[Any, Any]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """Class probabilities, shape (n, len(card.class_names)), for float32 windows of shape (n, T, F)."""
        out = self.session.run([self.output_name], {self.input_name: np.asarray(windows, dtype=np.float32)})
        return np.asarray(out[0], dtype=np.float32)


def _dims(shape: list[Any]) -> list[int | None]:
    """ORT shapes name free dimensions with strings (or None); map them to None."""
    return [d if isinstance(d, int) else None for d in shape]


def load_session(onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1) -> LoadedModel:
    """Load ``onnx_path`` with its card (default: :func:`~tapwatch.features.card.card_path_for`) and check them
    against each other.

    Raises :class:`~tapwatch.features.errors.ModelCardError` naming the file and the mismatch when the card is
    invalid, names no ONNX file, has another sha256, or when the ONNX input is not (batch, T, F) for the card's
    T and feature count or lacks the card's input or output name.
    """
    onnx_path = Path(onnx_path)
    card = load_card(card_path if card_path is not None else card_path_for(onnx_path))
    verify_onnx_file(card, onnx_path)
    assert card.onnx is not None  # verify_onnx_file refuses a card without one
    try:
        session = ort.InferenceSession(str(onnx_path), session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as err:  # ORT raises its own untyped exceptions for unreadable graphs
        raise ModelCardError(f"{onnx_path}: ONNX Runtime cannot load it: {err}") from err
    _check_io(session, card, onnx_path)
    return LoadedModel(session, card, card.onnx.input_name, card.onnx.output_names[0])


def _check_io(session: ort.InferenceSession, card: ModelCard, onnx_path: Path) -> None:
    assert card.onnx is not None
    inputs = {i.name: _dims(i.shape) for i in session.get_inputs()}
    if card.onnx.input_name not in inputs:
        raise ModelCardError(f"{onnx_path}: no input {card.onnx.input_name!r} (the file has {sorted(inputs)})")
    want = [None, card.window_length, len(card.features)]
    got = inputs[card.onnx.input_name]
    if got != want:
        raise ModelCardError(
            f"{onnx_path}: input {card.onnx.input_name!r} has shape {got}, the card expects {want} "
            f"(batch, T={card.window_length}, F={len(card.features)})"
        )
    if _dims(list(card.onnx.input_shape)) != want:
        raise ModelCardError(f"{onnx_path}: the card's onnx.input_shape {card.onnx.input_shape} is not {want}")
    outputs = {o.name: _dims(o.shape) for o in session.get_outputs()}
    missing = [n for n in card.onnx.output_names if n not in outputs]
    if not card.onnx.output_names or missing:
        raise ModelCardError(f"{onnx_path}: outputs {missing or '[]'} of the card not in the file ({sorted(outputs)})")
    n_out = outputs[card.onnx.output_names[0]][-1]
    if n_out is not None and n_out != len(card.class_names):
        raise ModelCardError(f"{onnx_path}: {n_out} output classes, the card names {len(card.class_names)}")

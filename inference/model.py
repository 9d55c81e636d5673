"""Load an ONNX model and check it against its model card before it serves a single verdict.

The checks: the card is valid; the bytes handed to ONNX Runtime have the card's sha256; the input is
float32 of shape (N, T, F) with the card's T and feature count (the batch axis must be dynamic); the first
output named in the card holds one probability per card class; a smoke batch of zeros gives finite
probabilities that sum to 1. Anything else raises :class:`ModelRejected` (a
:class:`~tapwatch.features.errors.ModelCardError`) and the model is not used.

This is the worker's own small loader until ``models/scoring/runtime.py`` (``load_session``) exists; only
:func:`load_model` and :class:`Model` are used by the rest of inference/, so it can be swapped.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tapwatch.features.card import ModelCard, card_path_for, load_card
from tapwatch.features.errors import ModelCardError

Probabilities = np.ndarray[Any, np.dtype[np.float32]]
Windows = np.ndarray[Any, np.dtype[np.float32]]


class ModelRejected(ModelCardError):
    """A model failed a check against its card; the worker keeps the model it has (or does not start).

    Parameters
    ----------
    onnx_path
        The ONNX file.
    problem
        What failed, in words an operator can act on.
    model_version
        The card's version when the card itself could be read.
    """

    def __init__(self, onnx_path: Path, problem: str, model_version: str | None = None) -> None:
        self.onnx_path = onnx_path
        self.problem = problem
        self.model_version = model_version
        version = f" (card version {model_version})" if model_version is not None else ""
        super().__init__(f"{onnx_path}{version}: {problem}")


class ModelRunError(ModelCardError):
    """The model returned something other than one probability row per window at run time."""


@dataclass(frozen=True)
class Model:
    """A checked ONNX Runtime session and its card.

    Parameters
    ----------
    card
        The validated model card (name, version, classes, T, feature-set id).
    session
        The ONNX Runtime session, built from the very bytes whose sha256 was checked.
    onnx_path, card_path
        Where it was loaded from (hot reload watches them).
    sha256
        Digest of the loaded ONNX bytes.
    threshold
        Decision threshold on the attack score (``card.thresholds["attack"]``, default 0.5).
    benign_index
        Column of the benign class; the attack score is ``1 - probs[:, benign_index]``.
    input_name, output_name
        The graph's input, and the output that holds the class probabilities.
    """

    card: ModelCard
    session: Any
    onnx_path: Path
    card_path: Path
    sha256: str
    threshold: float
    benign_index: int
    input_name: str
    output_name: str

    @property
    def window_shape(self) -> tuple[int, int]:
        """(T, F): the window length and feature count a window must have."""
        return self.card.window_length, len(self.card.features)

    def predict(self, windows: Windows) -> Probabilities:
        """Class probabilities, shape (N, len(class_names)), for windows of shape (N, T, F)."""
        out = self.session.run([self.output_name], {self.input_name: windows})[0]
        probs: Probabilities = np.asarray(out, dtype=np.float32)
        if probs.shape != (len(windows), len(self.card.class_names)):
            raise ModelRunError(f"{self.onnx_path}: output {self.output_name!r} has shape {probs.shape}")
        return probs

    def same_as(self, other: Model) -> bool:
        """The same ONNX bytes under the same card (a reload that changes nothing)."""
        return self.sha256 == other.sha256 and self.card == other.card


def session_options(threads: int) -> Any:
    """One intra-op thread by default: on 2 cores one session per worker process was fastest (issue 4)."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # Idle pool threads would otherwise spin between batches and take CPU from the other stages.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def load_model(onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1) -> Model:
    """Load ``onnx_path`` with its card (default: :func:`~tapwatch.features.card.card_path_for`) and run every
    check; raise :class:`ModelRejected` on any failure."""
    path = Path(onnx_path)
    card_file = Path(card_path) if card_path is not None else card_path_for(path)
    try:
        card = load_card(card_file)
        data = path.read_bytes()
    except (ModelCardError, OSError) as err:
        raise ModelRejected(path, str(err)) from err
    # Hash the bytes given to ONNX Runtime rather than re-reading the file (verify_onnx_file): during a
    # hot reload the file can be replaced between a check and a load.
    digest = hashlib.sha256(data).hexdigest()
    if card.onnx is None or digest != card.onnx.sha256:
        expected = card.onnx.sha256[:12] if card.onnx else "none"
        raise ModelRejected(path, f"sha256 {digest[:12]}… does not match the card ({expected}…)", card.version)
    try:
        session = ort.InferenceSession(data, sess_options=session_options(threads), providers=["CPUExecutionProvider"])
    except Exception as err:  # ONNX Runtime raises its own unrelated exception types for bad graphs
        raise ModelRejected(path, f"ONNX Runtime cannot load it: {err}", card.version) from err
    input_name, output_name = _check_io(card, session, path)
    model = Model(
        card=card, session=session, onnx_path=path, card_path=card_file, sha256=digest,
        threshold=attack_threshold(card, path), benign_index=card.class_names.index(card.benign_class),
        input_name=input_name, output_name=output_name,
    )  # fmt: skip
    _smoke(model)
    return model


def attack_threshold(card: ModelCard, path: Path) -> float:
    """``card.thresholds["attack"]`` (or ``"attack_score"``, as ``tapwatch train`` writes it): a number, or an
    object with a ``value``; 0.5 when absent."""
    raw = card.thresholds.get("attack", card.thresholds.get("attack_score", 0.5))
    if isinstance(raw, dict):
        raw = raw.get("value")
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0.0 <= raw <= 1.0:
        raise ModelRejected(path, f"thresholds.attack must be a number in [0, 1], not {raw!r}", card.version)
    return float(raw)


def _check_io(card: ModelCard, session: Any, path: Path) -> tuple[str, str]:
    assert card.onnx is not None
    inputs = {i.name: i for i in session.get_inputs()}
    if card.onnx.input_name not in inputs:
        raise ModelRejected(path, f"no input {card.onnx.input_name!r} (has {sorted(inputs)})", card.version)
    spec = inputs[card.onnx.input_name]
    t, f = card.window_length, len(card.features)
    if spec.type != "tensor(float)":
        raise ModelRejected(path, f"input type {spec.type}, expected tensor(float)", card.version)
    for shape, where in ((list(spec.shape), "the graph"), (card.onnx.input_shape, "the card")):
        if len(shape) != 3 or isinstance(shape[0], int):
            raise ModelRejected(path, f"input shape {shape} in {where} is not (batch, T, F)", card.version)
        for got, want, axis in ((shape[1], t, "T"), (shape[2], f, "F")):
            if isinstance(got, int) and got != want:
                raise ModelRejected(path, f"input {axis} = {got} in {where}, the card says {want}", card.version)
    outputs = [o.name for o in session.get_outputs()]
    if not card.onnx.output_names or card.onnx.output_names[0] not in outputs:
        raise ModelRejected(path, f"card outputs {card.onnx.output_names} not among {outputs}", card.version)
    return card.onnx.input_name, card.onnx.output_names[0]


def _smoke(model: Model) -> None:
    # Two rows, so that a graph with a fixed batch of 1 is refused here rather than on the first batch.
    try:
        probs = model.predict(np.zeros((2, *model.window_shape), dtype=np.float32))
    except Exception as err:  # any failure here means the model cannot serve
        raise ModelRejected(model.onnx_path, f"smoke run failed: {err}", model.card.version) from err
    if not np.isfinite(probs).all() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        raise ModelRejected(
            model.onnx_path, f"output {model.output_name!r} is not a probability vector: {probs[0]}", model.card.version
        )

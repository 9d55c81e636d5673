"""tapwatch's one ONNX Runtime loader: :func:`open_session` builds every session, :func:`load_model` checks a
model against its card before it serves a single verdict.

The checks of :func:`load_model`: the card is valid; the bytes handed to ONNX Runtime have the card's sha256;
the input is float32 of shape (batch, T, F) in the graph and in the card, with a dynamic batch axis and the
card's T and feature count; every output the card names is in the graph; a smoke batch of zeros gives one
row of finite probabilities per card class, each summing to 1 (read from the card's first output); the attack
threshold is a number in [0, 1]. Anything else raises :class:`ModelRejected` (a
:class:`~tapwatch.features.errors.ModelCardError`) and the model is not used.

Every model tapwatch runs goes through here: the worker and the embedded pipeline, the alerter's explainer,
``tapwatch score`` and ``tapwatch export`` load with :func:`load_model`; the cost tables and the export parity
check, whose graphs have no card yet, open a bare session with :func:`open_session`. This module imports
numpy, onnxruntime and :mod:`tapwatch.features` only, never TensorFlow, so serving needs no training stack.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from tapwatch.features.card import ModelCard, card_path_for, load_card
from tapwatch.features.errors import ModelCardError

Probabilities = np.ndarray[Any, np.dtype[np.float32]]
Windows = np.ndarray[Any, np.dtype[Any]]
"""(N, T, F) windows; :meth:`Model.predict` feeds them as float32."""


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
    """A checked ONNX Runtime session and its card (built by :func:`load_model`).

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

    Example
    -------
    >>> import tempfile
    >>> from tests.support.tiny_model import write_tiny_model
    >>> with tempfile.TemporaryDirectory() as d:
    ...     model = load_model(write_tiny_model(d, window_length=4).onnx_path)
    >>> model.window_shape, model.predict(np.zeros((3, *model.window_shape))).shape
    ((4, 82), (3, 3))
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
        x = np.asarray(windows, dtype=np.float32)  # no copy when the windows are float32 already (the worker's)
        out = self.session.run([self.output_name], {self.input_name: x})[0]
        probs: Probabilities = np.asarray(out, dtype=np.float32)
        if probs.shape != (len(windows), len(self.card.class_names)):
            raise ModelRunError(f"{self.onnx_path}: output {self.output_name!r} has shape {probs.shape}")
        return probs

    def same_as(self, other: Model) -> bool:
        """The same ONNX bytes under the same card (a reload that changes nothing)."""
        return self.sha256 == other.sha256 and self.card == other.card


class Optimization(str, Enum):
    """ONNX Runtime's graph optimisation level (``GraphOptimizationLevel``); ``all`` is ORT's default.

    Example
    -------
    >>> Optimization("basic") is Optimization.BASIC
    True
    """

    DISABLE = "disable"
    BASIC = "basic"
    EXTENDED = "extended"
    ALL = "all"


_LEVELS = {
    Optimization.DISABLE: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    Optimization.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    Optimization.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    Optimization.ALL: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def open_session(model: bytes | str | Path, threads: int = 1, optimization: Optimization | str = "all") -> Any:
    """A CPU ONNX Runtime session over ``model`` (the ONNX bytes, or a file): the only place tapwatch builds one.

    ``threads`` intra-op threads (one by default: on 2 cores one session per worker process was fastest, issue
    4), one inter-op thread, sequential execution, graph optimisation ``optimization``. Raises ``ValueError``
    for a bad ``threads`` or ``optimization``; ONNX Runtime's own exceptions for a graph it cannot load.
    """
    try:
        level = Optimization(optimization)
    except ValueError:
        valid = ", ".join(o.value for o in Optimization)
        raise ValueError(f"optimization must be one of {valid}, got {optimization!r}") from None
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = _LEVELS[level]
    # No spinning, for every session: idle pool threads would spin between runs and take CPU from what shares
    # the host (the worker beside capture and Redis, every stage of the embedded pipeline in one process, the
    # alerter's explainer under its CPU share). With one intra-op thread ORT makes no pool at all (a pool size of
    # 1 means none, onnxruntime core/util/thread_utils.h), so the one-thread cost tables and parity check are
    # unaffected.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = str(model) if isinstance(model, Path) else model
    return ort.InferenceSession(source, sess_options=so, providers=["CPUExecutionProvider"])


def load_model(onnx_path: str | Path, card_path: str | Path | None = None, threads: int = 1) -> Model:
    """Load ``onnx_path`` with its card (default: :func:`~tapwatch.features.card.card_path_for`) and run every
    check; raise :class:`ModelRejected` on any failure."""
    path = Path(onnx_path)
    card_file = Path(card_path) if card_path is not None else card_path_for(path)
    if not path.is_file():  # name the missing model itself, not the card that would sit beside it
        raise ModelRejected(path, "no such model file" if not path.exists() else "not a file")
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
        session = open_session(data, threads)
    except ValueError:
        raise  # a bad ``threads`` is the caller's mistake, not the model's
    except Exception as err:  # ONNX Runtime raises its own unrelated exception types (never ValueError) for bad graphs
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
    assert card.onnx is not None  # the sha256 check refused a card without an onnx section
    name, t, f = card.onnx.input_name, card.window_length, len(card.features)
    inputs = {i.name: i for i in session.get_inputs()}
    if name not in inputs:
        raise ModelRejected(path, f"no input {name!r} (the file has {sorted(inputs)})", card.version)
    if inputs[name].type != "tensor(float)":
        raise ModelRejected(path, f"input type {inputs[name].type}, expected tensor(float)", card.version)
    want: list[int | None] = [None, t, f]
    for shape, where in (
        (_dims(inputs[name].shape), "the graph"),
        (_dims(card.onnx.input_shape), "the card's onnx.input_shape"),
    ):
        if shape != want:
            raise ModelRejected(path, _shape_problem(name, shape, want, where), card.version)
    outputs = sorted(o.name for o in session.get_outputs())
    missing = [n for n in card.onnx.output_names if n not in outputs]
    if not card.onnx.output_names or missing:
        raise ModelRejected(path, f"outputs {missing or '[]'} of the card not in the file ({outputs})", card.version)
    return name, card.onnx.output_names[0]


def _dims(shape: list[Any]) -> list[int | None]:
    """ORT names free dimensions with strings (or None); map them to None."""
    return [d if isinstance(d, int) else None for d in shape]


def _shape_problem(name: str, shape: list[int | None], want: list[int | None], where: str) -> str:
    """The axis that differs first (T or F), then both whole shapes.

    >>> _shape_problem("x", [None, 2, 82], [None, 3, 82], "the graph")
    "input T = 2 in the graph, the card says 3 (input 'x' has shape [None, 2, 82], the card expects [None, 3, 82])"
    """
    whole = f"input {name!r} has shape {shape}, the card expects {want}"
    if len(shape) == 3 and shape[0] is None:
        axis, got, expected = next((a, g, w) for a, g, w in zip("TF", shape[1:], want[1:], strict=True) if g != w)
        return f"input {axis} = {got} in {where}, the card says {expected} ({whole})"
    return f"{whole}: the shape in {where} is not (batch, T, F) with a free batch axis"


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

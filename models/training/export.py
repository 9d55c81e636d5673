"""Export a Keras model to ONNX, check parity with ONNX Runtime, and write its model card.

:func:`export_onnx` converts with ``tf2onnx.convert.from_function`` at opset 17: with TensorFlow 2.21,
Keras 3.15 and tf2onnx 1.17 that works for every architecture of :mod:`tapwatch.models.training.arch` (a ConvLSTM
becomes an ONNX ``Loop``, or a flat graph when unrolled; an LSTM a fused ``LSTM`` op), while opset 19 and
later fail (issue 3). The graph has one input ``windows`` of shape [None, T, F] and one output ``probs``, and
every reader reads that output by name. :func:`check_parity` compares Keras and ORT; :func:`write_card` writes
the card beside the ``.onnx`` (``NAME.card.json``), which :func:`tapwatch.inference.model.load_model` checks.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.features.card import CARD_SUFFIX, FeatureStats, ModelCard, OnnxInfo, Scaler, TrainingData
from tapwatch.features.contract import feature_set_id
from tapwatch.features.errors import ModelCardError, TapwatchError
from tapwatch.inference.model import open_session
from tapwatch.models.training.arch import INPUT_NAME, OUTPUT_NAME

DEFAULT_OPSET = 17
"""The opset that converts all architectures (19+ fails with tf2onnx 1.17, issue 3)."""

PARITY_ATOL = 1e-4
FRAMEWORKS = ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime", "numpy", "tapwatch")


class ExportError(TapwatchError):
    """A model could not be exported, or its ONNX graph disagrees with Keras."""


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def convert(model: Any, output: str, what: str, opset: int = DEFAULT_OPSET) -> Any:
    """The checked ONNX proto of a Keras model taking (batch, T, F) float32 ``windows``, its one output named
    ``output``; :class:`ExportError` naming ``what`` when tf2onnx or the checker fails."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    _, t, f = model.input_shape
    spec = (tf.TensorSpec([None, t, f], tf.float32, name=INPUT_NAME),)
    # A dict output names the ONNX output after its key ("probs", "recon"), not "Identity:0".
    fn = tf.function(lambda x: {output: model(x, training=False)})
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=opset)
        onnx.checker.check_model(proto)
    except Exception as err:  # tf2onnx raises bare exceptions of many kinds
        raise ExportError(f"tf2onnx could not convert {what} at opset {opset}: {err}") from err
    return proto


def export_onnx(model: Any, path: str | Path, opset: int = DEFAULT_OPSET) -> OnnxInfo:
    """Convert a Keras model of :mod:`tapwatch.models.training.arch` to ``path`` and describe the file.

    The model must take (batch, T, F) float32 windows. Returns the card's ``onnx`` section (file name,
    sha256, opset, input name and shape, output names).
    """
    _, t, f = model.input_shape
    proto = convert(model, OUTPUT_NAME, model.name, opset)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(proto.SerializeToString())
    return OnnxInfo(
        file=path.name,
        sha256=sha256_file(path),
        opset=opset,
        input_name=INPUT_NAME,
        input_shape=[None, int(t), int(f)],
        output_names=[OUTPUT_NAME],
    )


@dataclass(frozen=True)
class Parity:
    """Keras against ONNX Runtime on the same windows.

    Parameters
    ----------
    n
        Number of windows compared.
    max_abs_diff
        Largest absolute difference of any class probability.
    argmax_equal
        Whether every window gets the same predicted class.
    atol
        The tolerance :attr:`ok` applies.
    """

    n: int
    max_abs_diff: float
    argmax_equal: bool
    atol: float = PARITY_ATOL

    @property
    def ok(self) -> bool:
        return self.argmax_equal and self.max_abs_diff <= self.atol


def check_parity(model: Any, onnx_path: str | Path, windows: np.ndarray[Any, Any], atol: float = PARITY_ATOL) -> Parity:
    """Run Keras and ORT (1 thread, all graph optimisations) on ``windows``; raise :class:`ExportError` if apart."""
    x = np.asarray(windows, dtype=np.float32)
    # Eager calls in chunks: model.predict traces a graph first, which costs more than 1,000 windows.
    chunks = [np.asarray(model(x[i : i + 1024], training=False)) for i in range(0, len(x), 1024)]
    keras_probs = np.concatenate(chunks) if chunks else np.zeros((0, 0), np.float32)
    session = open_session(onnx_path)
    ort_probs = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    result = Parity(
        n=len(x),
        max_abs_diff=float(np.max(np.abs(keras_probs - ort_probs))) if len(x) else 0.0,
        argmax_equal=bool(np.array_equal(keras_probs.argmax(axis=1), ort_probs.argmax(axis=1))),
        atol=atol,
    )
    if not result.ok:
        raise ExportError(
            f"{onnx_path}: ONNX Runtime disagrees with Keras on {result.n} windows: max abs diff "
            f"{result.max_abs_diff:.3g} (tolerance {atol:g}), argmax equal: {result.argmax_equal}"
        )
    return result


@dataclass(frozen=True)
class CardSpec:
    """Everything a card says beyond the ONNX file (see ../shared/DESIGN.md, "Model card").

    Parameters
    ----------
    name, version
        Model name and version (the worker reports both with every verdict).
    features
        The ordered input features; with ``window_length`` they give the card's ``feature_set_id``.
    window_length
        T.
    class_names, benign_class
        Output order of ``probs`` and the class that is not an attack.
    training_data
        Dataset, files with sha256, split.
    scaler
        The scaling the window builder applies.
    feature_stats
        From :func:`tapwatch.models.training.data_scaling.feature_stats` on the (unscaled) training rows.
    thresholds
        Decision threshold(s) and how they were chosen, e.g. ``{"attack_score": 0.5, "chosen": "..."}``.
    metrics
        Headline metrics and the report they come from.
    window_key
        How flows are grouped into windows (``src_ip``).

    Example
    -------
    >>> spec = CardSpec("m", "1", ("Protocol",), 1, ("BENIGN", "ATTACK"), TrainingData(dataset="none"))
    >>> spec.benign_class
    'BENIGN'
    """

    name: str
    version: str
    features: tuple[str, ...]
    window_length: int
    class_names: tuple[str, ...]
    training_data: TrainingData
    benign_class: str = "BENIGN"
    scaler: Scaler = field(default_factory=Scaler)
    feature_stats: tuple[FeatureStats, ...] = ()
    thresholds: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    window_key: str = "src_ip"


def framework_versions() -> dict[str, str]:
    """Installed versions of the libraries that trained and exported the model."""
    found: dict[str, str] = {}
    for dist in FRAMEWORKS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def build_card(info: OnnxInfo, spec: CardSpec, created: datetime | None = None) -> ModelCard:
    """The card for an exported file; raise :class:`ModelCardError` if the file's shape is not the spec's."""
    want = [None, spec.window_length, len(spec.features)]
    if list(info.input_shape) != want:
        raise ModelCardError(f"{info.file}: ONNX input shape {info.input_shape} is not (batch, T, F) = {want}")
    try:
        return ModelCard(
            name=spec.name,
            version=spec.version,
            created=(created or datetime.now(UTC)).isoformat(timespec="seconds"),
            framework_versions=framework_versions(),
            training_data=spec.training_data,
            feature_set_id=feature_set_id(spec.window_length, tuple(spec.features)),
            features=list(spec.features),
            scaler=spec.scaler,
            window_length=spec.window_length,
            window_key=spec.window_key,
            class_names=list(spec.class_names),
            benign_class=spec.benign_class,
            thresholds=dict(spec.thresholds),
            feature_stats=list(spec.feature_stats),
            metrics=dict(spec.metrics),
            onnx=info,
        )
    except ValueError as err:  # pydantic's ValidationError is a ValueError
        raise ModelCardError(f"{info.file}: invalid model card: {err}") from err


def write_card(onnx_path: str | Path, info: OnnxInfo, spec: CardSpec, card_path: str | Path | None = None) -> Path:
    """Write the card JSON beside ``onnx_path`` (default ``NAME.card.json``) after checking the file's sha256."""
    card = build_card(info, spec)
    if sha256_file(onnx_path) != info.sha256:
        raise ModelCardError(f"{onnx_path}: the file changed since export (sha256 differs from {info.sha256[:12]}…)")
    # Always the documented name: card_path_for would pick an existing NAME.json, which may not be a card.
    out = Path(card_path) if card_path is not None else Path(onnx_path).with_suffix(CARD_SUFFIX)
    out.write_text(card.model_dump_json(indent=2) + "\n")
    return out

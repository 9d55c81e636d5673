"""Tiny real artefacts for tests and examples: an ONNX model with its card, and window entries.

Every test model comes from :func:`write_tiny_model`; a :class:`TinySpec` says what differs. The model is a
real ONNX graph (needs the ``onnx`` package, a dev/train dependency; ONNX Runtime alone serves it): a linear
model over the whole window, input ``windows`` (N, T, F) float32 → flattened to (N, T·F) → MatMul + bias →
Softmax → ``probs`` (N, classes). With the default weights each row adds ``weight / T`` × feature k - 1 to
class k, so that class k follows the mean of feature k - 1 over the window, and the bias is 2 on the first
class: BENIGN wins on an all-zero window, the second class on windows whose feature 0 averages about 1 or
more, the third on feature 1. ``write_tiny_model(directory, window_length=4).onnx_path`` is the plain one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.features.card import ModelCard, OnnxInfo, TrainingData
from tapwatch.features.contract import FEATURE_NAMES, feature_set_id
from tapwatch.features.schema import ExpiryReason, FlowMeta, WindowEntry

OPSET = 17


@dataclass(frozen=True)
class TinySpec:
    """What a tiny model is: its graph, its card, and the name its files are written under.

    Parameters
    ----------
    name, version
        The card's; the files are ``NAME.onnx`` and ``NAME`` + ``card_suffix``.
    window_length, features, classes
        The input (N, T, F) and the output classes, in the card and in the graph.
    weight
        The default weights: each row adds ``weight / T`` × feature k - 1 to the logit of class k.
    weights
        (T, F, classes) weights instead of the default ones.
    bias
        One per class; None: 2 on the first (benign) class, 0 on the others.
    output
        The graph's output name (the card's ``onnx.output_names``).
    card
        Card fields, or fields of its ``onnx`` section (``input_shape``, ...), that replace the computed ones.
        A ``window_length`` here makes a card that claims another T than its graph.
    card_suffix
        ``.json`` (found beside the model as a fallback) or ``.card.json`` (as shipped models are named).

    Example
    -------
    ``write_tiny_model(d, TinySpec(window_length=4), card={"window_length": 5})`` writes a model whose card
    claims T = 5 for a graph of T = 4, which the worker must refuse.
    """

    name: str = "tiny"
    version: str = "1"
    window_length: int = 10
    features: tuple[str, ...] = FEATURE_NAMES
    classes: tuple[str, ...] = ("BENIGN", "DoS", "PortScan")
    weight: float = 4.0
    weights: np.ndarray[Any, Any] | None = field(default=None, compare=False)
    bias: tuple[float, ...] | None = None
    output: str = "probs"
    card: Mapping[str, Any] = field(default_factory=dict)
    card_suffix: str = ".json"

    def weight_tensor(self) -> np.ndarray[Any, Any]:
        """The (T, F, classes) weights as float32."""
        if self.weights is not None:
            return np.asarray(self.weights, dtype=np.float32)
        w = np.zeros((self.window_length, len(self.features), len(self.classes)), dtype=np.float32)
        for k in range(1, len(self.classes)):
            w[:, k - 1, k] = self.weight / self.window_length
        return w

    def bias_vector(self) -> np.ndarray[Any, Any]:
        """The per-class bias as float32."""
        if self.bias is not None:
            return np.asarray(self.bias, dtype=np.float32)
        b = np.zeros(len(self.classes), dtype=np.float32)
        b[0] = 2.0
        return b


@dataclass(frozen=True)
class TinyModel:
    """A tiny model :func:`write_tiny_model` wrote: its files, its card, and its scores computed with NumPy."""

    spec: TinySpec
    onnx_path: Path
    card_path: Path
    card: ModelCard

    @property
    def paths(self) -> tuple[Path, Path]:
        """``(onnx_path, card_path)``, as a worker or ``--model``/``--card`` take them."""
        return self.onnx_path, self.card_path

    def score(self, windows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """The attack score, 1 - P(first class), of (N, T, F) windows: the graph's arithmetic in float64."""
        w = self.spec.weight_tensor().astype(np.float64)
        logits = np.einsum("ntf,tfc->nc", windows.astype(np.float64), w) + self.spec.bias_vector()
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.asarray(1.0 - probs[:, 0] / probs.sum(axis=1))


def write_tiny_model(
    directory: str | Path, spec: TinySpec | None = None, *, onnx_bytes: bytes | None = None, **changes: Any
) -> TinyModel:
    """Write the model of ``spec`` (default :class:`TinySpec`, with ``changes`` to its fields) and its card.

    Each file is replaced atomically (a worker may be watching them). ``onnx_bytes`` are written instead of
    the graph while the card still names the graph's sha256: a damaged deployment.
    """
    spec = dataclasses.replace(spec or TinySpec(), **changes)
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = _graph_bytes(spec)
    card = _card(data, spec)
    onnx_path, card_path = d / f"{spec.name}.onnx", d / f"{spec.name}{spec.card_suffix}"
    for path, content in ((onnx_path, data if onnx_bytes is None else onnx_bytes),
                          (card_path, card.model_dump_json().encode())):  # fmt: skip
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(content)
        os.replace(tmp, path)
    return TinyModel(spec, onnx_path, card_path, card)


def _graph_bytes(spec: TinySpec) -> bytes:
    """The serialized ONNX graph of ``spec`` (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    t, f, c = spec.window_length, len(spec.features), len(spec.classes)
    nodes = [
        helper.make_node("Reshape", ["windows", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [spec.output], axis=-1),
    ]
    initializers = [
        numpy_helper.from_array(np.array([-1, t * f], np.int64), "flat_shape"),
        numpy_helper.from_array(spec.weight_tensor().reshape(t * f, c), "w"),
        numpy_helper.from_array(spec.bias_vector(), "b"),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["N", t, f])],
        [helper.make_tensor_value_info(spec.output, TensorProto.FLOAT, ["N", c])],
        initializer=initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def _card(data: bytes, spec: TinySpec) -> ModelCard:
    """The card of the graph ``data``: the spec's features and classes, then its ``card`` fields on top."""
    extra = dict(spec.card)
    t = extra.pop("window_length", spec.window_length)
    onnx_extra = {k: extra.pop(k) for k in list(extra) if k in OnnxInfo.model_fields}
    fields: dict[str, Any] = {
        "name": spec.name, "version": spec.version, "created": "1970-01-01T00:00:00Z",
        "training_data": TrainingData(dataset="none", split="synthetic test model"),
        "feature_set_id": feature_set_id(t, spec.features), "features": list(spec.features),
        "window_length": t, "class_names": list(spec.classes), "thresholds": {"attack": 0.5},
        "onnx": OnnxInfo(file=f"{spec.name}.onnx", sha256=hashlib.sha256(data).hexdigest(), opset=OPSET,
                         input_name="windows", input_shape=[None, t, len(spec.features)],
                         output_names=[spec.output]).model_copy(update=onnx_extra),
    }  # fmt: skip
    fields.update(extra)
    return ModelCard(**fields)


def sample_window(window_length: int = 10, level: float = 0.0, feature: int = 0, flow_id: int = 1) -> WindowEntry:
    """A window whose rows all hold ``level`` in column ``feature`` (zeros elsewhere)."""
    tensor = np.zeros((window_length, len(FEATURE_NAMES)), dtype=np.float32)
    tensor[:, feature] = level
    meta = FlowMeta(
        flow_id=flow_id, community_id="1:test", src_ip="192.0.2.1", src_port=40000 + flow_id % 20000,
        dst_ip="192.0.2.2", dst_port=80, protocol=6, first_seen_ms=1000, last_seen_ms=2000, packets=4, bytes=300,
        expiry=ExpiryReason.TCP_FIN, expired_at_ms=2000, sensor="test",
    )  # fmt: skip
    return WindowEntry("test", meta.src_ip, meta, tensor, window_length, feature_set_id(window_length))

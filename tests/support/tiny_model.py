"""Tiny real artefacts for tests and examples: an ONNX model with its card, and window entries.

The model is a real ONNX graph (needs the ``onnx`` package, a dev/train dependency; ONNX Runtime alone
serves it): input ``windows`` (N, T, F) float32 → mean over T → MatMul + bias → Softmax → ``probs``
(N, classes). With the default weights the first class (BENIGN) wins on an all-zero window, the second
class on windows whose feature 0 averages about 1 or more, the third on feature 1.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from tapwatch.features.card import ModelCard, OnnxInfo, TrainingData
from tapwatch.features.contract import FEATURE_NAMES, feature_set_id
from tapwatch.features.schema import ExpiryReason, FlowMeta, WindowEntry

OPSET = 17


def tiny_graph_bytes(window_length: int, n_classes: int, weight: float = 4.0, bias: float = 2.0) -> bytes:
    """The serialized ONNX model (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    f = len(FEATURE_NAMES)
    w = np.zeros((f, n_classes), dtype=np.float32)
    for k in range(1, n_classes):
        w[k - 1, k] = weight
    b = np.zeros(n_classes, dtype=np.float32)
    b[0] = bias
    nodes = [
        helper.make_node("ReduceMean", ["windows"], ["mean"], axes=[1], keepdims=0),
        helper.make_node("MatMul", ["mean", "w"], ["logits0"]),
        helper.make_node("Add", ["logits0", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["N", window_length, f])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", n_classes])],
        initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def tiny_card(
    data: bytes, *, name: str = "tiny", version: str = "1", window_length: int = 10, **extra: Any
) -> ModelCard:
    """A card for ``data`` with the contract's features and classes BENIGN, DoS, PortScan by default.

    ``extra`` overrides card fields, or fields of its ``onnx`` section (``input_shape``, ``output_names``, …).
    """
    import hashlib

    onnx_extra = {k: extra.pop(k) for k in list(extra) if k in OnnxInfo.model_fields}
    fields: dict[str, Any] = {
        "name": name, "version": version, "created": "1970-01-01T00:00:00Z",
        "training_data": TrainingData(dataset="none", split="synthetic test model"),
        "feature_set_id": feature_set_id(window_length), "features": list(FEATURE_NAMES),
        "window_length": window_length, "class_names": ["BENIGN", "DoS", "PortScan"],
        "thresholds": {"attack": 0.5},
        "onnx": OnnxInfo(file=f"{name}.onnx", sha256=hashlib.sha256(data).hexdigest(), opset=OPSET,
                         input_name="windows", input_shape=[None, window_length, len(FEATURE_NAMES)],
                         output_names=["probs"]).model_copy(update=onnx_extra),
    }  # fmt: skip
    fields.update(extra)
    return ModelCard(**fields)


def write_tiny_model(
    directory: str | Path, *, name: str = "tiny", version: str = "1", window_length: int = 10, weight: float = 4.0
) -> tuple[Path, Path]:
    """Write ``NAME.onnx`` and ``NAME.json`` (its card) into ``directory``; return both paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    data = tiny_graph_bytes(window_length, 3, weight)
    onnx_path, card_path = d / f"{name}.onnx", d / f"{name}.json"
    onnx_path.write_bytes(data)
    card_path.write_text(tiny_card(data, name=name, version=version, window_length=window_length).model_dump_json())
    return onnx_path, card_path


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

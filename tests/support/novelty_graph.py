"""A novelty graph whose error is known in advance: it reconstructs every window as zeros, so a window's error is
the mean square of its valid rows (clipped at ±10). No TensorFlow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper

from tapwatch.features.profile import Novelty, ProfileCard, ProfileModel, Rule, RuleKind, SiteProfile
from tapwatch.inference.model import Model


def zero_autoencoder(t: int, f: int) -> bytes:
    """``recon = windows * 0``: inputs ``windows`` and output ``recon`` of shape [batch, t, f]."""
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["windows", "zero"], ["recon"])], "zero-autoencoder",
        [helper.make_tensor_value_info("windows", TensorProto.FLOAT, ["batch", t, f])],
        [helper.make_tensor_value_info("recon", TensorProto.FLOAT, ["batch", t, f])], [zero],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    return bytes(model.SerializeToString())


def profile_for(model: Model, threshold: float = 1.0, rule: RuleKind = RuleKind.NOVEL, **kw: Any) -> SiteProfile:
    """A profile of ``model`` with the zero autoencoder (benign mean 0, std 1 for every feature)."""
    t, f = model.window_shape
    nov = Novelty.embed(zero_autoencoder(t, f), threshold=threshold, window_length=t, features=f,
                        feature_mean=[0.0] * f, feature_std=[1.0] * f)  # fmt: skip
    card = ProfileCard(model=ProfileModel(name=model.card.name, version=model.card.version, onnx_sha256=model.sha256),
                       flows=100, created="2026-12-07T00:00:00Z")  # fmt: skip
    return SiteProfile(card=card, novelty=nov, rule=Rule(kind=rule), **kw)


def write_profile(path: Path, profile: SiteProfile) -> Path:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(profile.model_dump_json())
    tmp.replace(path)  # atomic, as tapwatch learn writes it
    return path


def novelty_of(window: np.ndarray[Any, Any], valid_rows: int, threshold: float) -> float:
    x = np.clip(window[-valid_rows:], -10, 10).astype(np.float64)
    return float((x**2).mean() / threshold)

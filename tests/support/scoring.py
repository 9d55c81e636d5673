"""The scoring tests' kit: ``tapwatch score`` in-process, and reference scores computed the sensor's way (the
``Windower``) with the model itself."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from click.testing import CliRunner, Result

from tapwatch.app.cli import main
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord
from tapwatch.features.window import Windower
from tapwatch.inference.model import Model, load_model
from tests.support.env import REPO, need

SAMPLE_PCAP = REPO / "capture" / "samples" / "sample.pcap"
SHIPPED_DIR = REPO / "models"
DEPLOYMENT, ORIGINAL_MODEL, MLCVE_MODEL = "hybrid-cic", "hybrid-cic-original", "hybrid-cic-original-mlcve"


def score(*args: Any) -> Result:
    return CliRunner().invoke(main, ["score", *(str(a) for a in args)])


def scored(result: Result, out: Path) -> pd.DataFrame:
    assert result.exit_code == 0, result.output
    return pd.read_csv(out, dtype=str, keep_default_na=False)


def meta(src_ip: str, i: int) -> FlowMeta:
    return FlowMeta(flow_id=i, community_id="1:x", src_ip=src_ip, src_port=1, dst_ip="192.0.2.9", dst_port=80,
                    protocol=6, first_seen_ms=0, last_seen_ms=0, packets=2, bytes=100, expiry=ExpiryReason.IDLE,
                    expired_at_ms=0, sensor="test")  # fmt: skip


def attack_scores(model: Model, windows: np.ndarray) -> np.ndarray:
    probs = model.predict(windows)
    return np.asarray(1.0 - probs[:, model.card.class_names.index(model.card.benign_class)], dtype=np.float64)


def windower_scores(model: Model, values: np.ndarray, hosts: Sequence[str], order: Sequence[int]) -> np.ndarray:
    """The sensor's path: FlowRecords into ``Windower.add`` in ``order``, then the model."""
    windower = Windower(model.card)
    tensors = np.zeros((len(values), model.card.window_length, len(FEATURE_NAMES)), dtype=np.float32)
    for i in order:
        tensors[i] = windower.add(FlowRecord(meta(hosts[i], i), tuple(float(v) for v in values[i]))).tensor
    return attack_scores(model, tensors)


def shipped_session(name: str) -> Model:
    path = SHIPPED_DIR / f"{name}.onnx"
    need(path.exists(), f"{path} is not shipped")
    return load_model(path)

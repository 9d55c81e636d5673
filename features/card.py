"""Model cards: the JSON beside every ``.onnx``, where it is found, its schema, loader and checks.

A card says which features, in which order and at which time resolution a model expects, how to scale
them, the window length T, the class names and thresholds, per-feature training statistics (plain
numbers, for explanations) and the ONNX file's sha256. Loading never unpickles anything.

>>> card = identity_card()
>>> card.window_length, card.scaler.kind.value, len(card.features)
(10, 'identity', 82)
>>> card.feature_set_id == feature_set_id(10)
True
"""

from __future__ import annotations

import hashlib
import json
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from tapwatch.features.contract import FEATURE_NAMES, TIME_RESOLUTION_US, feature_set_id
from tapwatch.features.errors import ModelCardError

CARD_SCHEMA_VERSION = 1


class ScalerKind(str, Enum):
    IDENTITY = "identity"
    STANDARD = "standard"
    MINMAX = "minmax"


class Scaler(BaseModel):
    """Feature scaling applied by the window builder: optional signed log1p, then (x - center) / scale."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: ScalerKind = ScalerKind.IDENTITY
    log1p: bool = False
    center: list[float] = Field(default_factory=list)
    scale: list[float] = Field(default_factory=list)

    def arrays(self, n: int) -> tuple[np.ndarray[Any, np.dtype[np.float64]], np.ndarray[Any, np.dtype[np.float64]]]:
        if self.kind is ScalerKind.IDENTITY:
            return np.zeros(n), np.ones(n)
        if len(self.center) != n or len(self.scale) != n:
            raise ModelCardError(f"scaler has {len(self.center)}/{len(self.scale)} parameters for {n} features")
        scale = np.asarray(self.scale, dtype=np.float64)
        return np.asarray(self.center, dtype=np.float64), np.where(scale == 0, 1.0, scale)


class FeatureStats(BaseModel):
    """Training statistics of one feature (explanations sample from them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    feature: str
    mean: float
    std: float
    quantiles: dict[str, float] = Field(default_factory=dict)


class OnnxInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    file: str
    sha256: str
    opset: int
    input_name: str
    input_shape: list[int | None]
    output_names: list[str]


class TrainingData(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")
    dataset: str
    files: list[dict[str, str]] = Field(default_factory=list)
    split: str = ""


class ModelCard(BaseModel):
    """The model card schema (see ../shared/DESIGN.md, "Model card")."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    schema_version: int = CARD_SCHEMA_VERSION
    name: str
    version: str
    created: str
    framework_versions: dict[str, str] = Field(default_factory=dict)
    training_data: TrainingData
    feature_set_id: str
    features: list[str]
    time_resolution_us: int = TIME_RESOLUTION_US
    scaler: Scaler = Field(default_factory=Scaler)
    window_length: int = Field(ge=1, le=1024)
    window_key: str = "src_ip"
    class_names: list[str]
    benign_class: str = "BENIGN"
    thresholds: dict[str, Any] = Field(default_factory=dict)
    feature_stats: list[FeatureStats] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    onnx: OnnxInfo | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModelCard:
        if self.schema_version != CARD_SCHEMA_VERSION:
            raise ValueError(f"unknown card schema_version {self.schema_version}")
        expected = feature_set_id(self.window_length, tuple(self.features))
        if self.feature_set_id != expected:
            raise ValueError(f"feature_set_id {self.feature_set_id!r} does not match features and T ({expected!r})")
        if self.benign_class not in self.class_names:
            raise ValueError(f"benign_class {self.benign_class!r} is not among class_names")
        return self


def load_card(path: str | Path) -> ModelCard:
    """Read and validate a card; raise :class:`ModelCardError` naming the file and the problem."""
    p = Path(path)
    if not p.is_file():
        raise ModelCardError(f"{p}: no such model card" + (" (a directory)" if p.is_dir() else ""))
    try:
        return ModelCard.model_validate(json.loads(p.read_text()))
    except (OSError, json.JSONDecodeError, ValidationError) as err:
        raise ModelCardError(f"{p}: invalid model card: {err}") from err


CARD_SUFFIX = ".card.json"
"""The documented name of a model's card: ``NAME.onnx`` → ``NAME.card.json`` (what ``tapwatch export`` writes)."""
SHORT_CARD_SUFFIX = ".json"
"""The other name a card is found under, ``NAME.json`` (the test kits write it), when no ``NAME.card.json`` exists."""


def card_path_for(onnx_path: str | Path) -> Path:
    """The card of a model, beside it: ``NAME.card.json``; else ``NAME.json`` when only that one exists.

    When neither exists the documented name is returned, so that the error of loading it names the file to write.

    >>> card_path_for("models/hybrid-cic.onnx").as_posix()
    'models/hybrid-cic.card.json'
    >>> import tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     _ = (Path(d) / "m.json").write_text("{}")
    ...     card_path_for(Path(d) / "m.onnx").name
    'm.json'
    """
    onnx = Path(onnx_path)
    documented, short = onnx.with_suffix(CARD_SUFFIX), onnx.with_suffix(SHORT_CARD_SUFFIX)
    return short if short.exists() and not documented.exists() else documented


def verify_onnx_file(card: ModelCard, onnx_path: str | Path) -> None:
    """Check the ONNX file's sha256 against the card."""
    if card.onnx is None:
        raise ModelCardError(f"card {card.name} {card.version} names no ONNX file")
    digest = hashlib.sha256(Path(onnx_path).read_bytes()).hexdigest()
    if digest != card.onnx.sha256:
        raise ModelCardError(f"{onnx_path}: sha256 {digest[:12]}… does not match the card ({card.onnx.sha256[:12]}…)")


def identity_card(window_length: int = 10) -> ModelCard:
    """A card with the contract's features and an identity scaler, until trained models ship."""
    return ModelCard(
        name="test-identity",
        version="0",
        created="1970-01-01T00:00:00Z",
        training_data=TrainingData(dataset="none", split="none: test card"),
        feature_set_id=feature_set_id(window_length),
        features=list(FEATURE_NAMES),
        window_length=window_length,
        class_names=["BENIGN", "ATTACK"],
    )

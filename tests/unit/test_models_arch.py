"""The model presets validate their parameters (no TensorFlow needed; the architectures built, trained and
exported: tests/e2e/test_models_arch_e2e.py)."""

from __future__ import annotations

import pytest

from tapwatch.models.training.arch import HybridParams, preset


def test_presets_validate_their_parameters() -> None:
    with pytest.raises(ValueError, match="unknown model preset"):
        preset("hybrid-huge", 10, 82, 2)
    with pytest.raises(ValueError, match="decoder filters"):
        HybridParams(window_length=10, n_features=82, n_classes=2, filters=(8, 16, 8))
    with pytest.raises(ValueError, match="n_classes"):
        preset("mlp", 10, 82, 1)

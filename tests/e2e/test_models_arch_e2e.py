"""Contract suite of the model architectures: shapes, learning, ONNX export parity, model cards, cost.

Every architecture is built tiny (a few filters), and each is taken through the models stage's whole path:
built, trained, exported to ONNX, checked for parity, given a card, loaded again without TensorFlow. That
still takes about a minute on 2 cores, the unit layer's whole budget, so it runs with the end-to-end tests.
The TensorFlow tests skip without the ``train`` extra, and fail instead under CI=true (see ``need``). The
presets' parameter checks: tests/unit/test_models_arch.py.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tapwatch.features.card import TrainingData, load_card
from tapwatch.features.contract import FEATURE_NAMES, feature_set_id
from tapwatch.features.errors import ModelCardError
from tapwatch.models.training.arch import INPUT_NAME, OUTPUT_NAME, preset
from tests.support.env import need

TRAIN_STACK = ("tensorflow", "keras", "tf2onnx", "onnx")
HAVE_TRAIN_STACK = all(importlib.util.find_spec(m) is not None for m in TRAIN_STACK)

# Tiny versions of every preset: the same topology (and unrolling) with a few filters.
TINY: dict[str, dict[str, Any]] = {
    "hybrid-full": {"filters": (4, 8, 8), "head_units": 8, "dropout": 0.0},
    "hybrid-fast": {"projection": 4, "filters": (4, 4, 4), "head_units": 8, "dropout": 0.0},
    "hybrid-lstm": {"filters": (4, 8, 8), "head_units": 8, "dropout": 0.0},
    "hybrid-nodecoder": {"filters": (4, 8, 8), "head_units": 8, "dropout": 0.0},
    "seq2seq": {"units": 8, "dropout": 0.0},
    "lunet": {"filters": (4, 8, 8), "final_filters": 8, "dropout": 0.0},
    "mlp": {"hidden": (16,), "dropout": 0.0},
}
EXPORTED = ("hybrid-full", "hybrid-fast", "seq2seq", "lunet", "mlp")
T, F, CLASSES = 10, 7, 3
# Trained and exported models use a shorter window: unrolled graphs take tf2onnx seconds per time step.
T_TRAIN = 4


@pytest.fixture(scope="module")
def keras() -> Any:
    need(HAVE_TRAIN_STACK, f"the train extra is not installed (needs {', '.join(TRAIN_STACK)})")
    import keras

    return keras


def tiny(name: str, window_length: int = T, n_features: int = F, n_classes: int = CLASSES) -> Any:
    return preset(name, window_length, n_features, n_classes, **TINY[name])


def separable(n: int, window_length: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Noise windows whose last flow (alone: causal labels) is shifted by -2, 0 or +2 according to its class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, size=n)
    x = rng.normal(size=(n, window_length, F)).astype(np.float32)
    x[:, -1, :] += 2.0 * (y[:, None] - 1)
    return x, y


def loss(model: Any, x: np.ndarray[Any, Any], y: np.ndarray[Any, Any]) -> float:
    """Mean cross-entropy of one eager forward pass in training mode.

    Training mode normalises with the batch's statistics: after 24 steps the BatchNorm moving averages
    (momentum 0.99) are still near their initial values, which says nothing about whether the model learns.
    The tiny models have no dropout, so the pass is deterministic.
    """
    probs = np.asarray(model(x, training=True), dtype=np.float64)
    return float(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-12, None)).mean())


@pytest.fixture(scope="module")
def trained(keras: Any) -> dict[str, tuple[Any, float, float]]:
    """Each exported preset, tiny, trained for a few epochs: model, loss before, loss after."""
    from tapwatch.models.training.arch import build

    keras.utils.set_random_seed(0)
    x, y = separable(256, T_TRAIN)
    out: dict[str, tuple[Any, float, float]] = {}
    for name in EXPORTED:
        model = build(tiny(name, T_TRAIN))
        # No XLA: compiling the recurrences costs more than the 24 steps it would speed up.
        model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy", jit_compile=False)
        before = loss(model, x, y)
        model.fit(x, y, epochs=3, batch_size=32, verbose=0)
        out[name] = (model, before, loss(model, x, y))
    return out


@pytest.mark.parametrize("window_length", [1, 10])
@pytest.mark.parametrize("name", sorted(TINY))
def test_builds_for_t1_and_t10_with_softmax_output(keras: Any, name: str, window_length: int) -> None:
    from tapwatch.models.training.arch import build

    model = build(tiny(name, window_length))
    assert model.input_shape == (None, window_length, F)
    assert model.layers[0].name == INPUT_NAME and model.layers[-1].name == OUTPUT_NAME
    probs = np.asarray(model(np.random.default_rng(1).normal(size=(4, window_length, F)).astype(np.float32)))
    assert probs.shape == (4, CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_same_params_build_the_same_graph(keras: Any) -> None:
    from tapwatch.models.training.arch import build

    a, b = build(tiny("hybrid-fast")), build(tiny("hybrid-fast"))
    assert a.to_json() == b.to_json() and a.count_params() == b.count_params()


@pytest.mark.parametrize("name", EXPORTED)
def test_a_few_training_steps_decrease_the_loss(trained: dict[str, tuple[Any, float, float]], name: str) -> None:
    _, before, after = trained[name]
    assert after < 0.8 * before, f"{name}: loss {before:.3f} -> {after:.3f}"


@pytest.mark.parametrize("name", EXPORTED)
def test_onnx_export_matches_keras_on_1000_windows(
    trained: dict[str, tuple[Any, float, float]], tmp_path: Path, name: str
) -> None:
    from tapwatch.models.training.export import check_parity, export_onnx

    model = trained[name][0]
    info = export_onnx(model, tmp_path / f"{name}.onnx")
    want = (17, "windows", [None, T_TRAIN, F], ["probs"])
    assert (info.opset, info.input_name, info.input_shape, info.output_names) == want
    x, _ = separable(1000, T_TRAIN, seed=3)
    parity = check_parity(model, tmp_path / f"{name}.onnx", x)
    assert parity.ok and parity.n == 1000 and parity.max_abs_diff <= 1e-4


def spec_for(window_length: int, **kw: Any) -> Any:
    from tapwatch.models.training.export import CardSpec

    return CardSpec(
        name="mlp-test",
        version="0.0.1",
        features=FEATURE_NAMES,
        window_length=window_length,
        class_names=("BENIGN", "DoS", "PortScan"),
        training_data=TrainingData(dataset="synthetic", split="none: test"),
        thresholds={"attack_score": 0.5, "chosen": "fixed, test"},
        **kw,
    )


@pytest.fixture(scope="module")
def shipped(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Any]:
    """A tiny MLP on the contract's 82 features, T = 2, exported with its card: (onnx, card, model)."""
    import pandas as pd

    from tapwatch.models.training.arch import build
    from tapwatch.models.training.data_scaling import feature_stats
    from tapwatch.models.training.export import export_onnx, write_card

    model = build(preset("mlp", 2, len(FEATURE_NAMES), 3, hidden=(8,)))
    onnx_path = tmp_path_factory.mktemp("shipped") / "mlp-test.onnx"
    info = export_onnx(model, onnx_path)
    rows = pd.DataFrame(np.random.default_rng(0).normal(size=(50, len(FEATURE_NAMES))), columns=list(FEATURE_NAMES))
    card_path = write_card(onnx_path, info, spec_for(2, feature_stats=tuple(feature_stats(rows))))
    return onnx_path, card_path, model


def test_card_round_trip(shipped: tuple[Path, Path, Any]) -> None:
    from tapwatch.inference.model import load_model

    onnx_path, card_path, model = shipped
    assert card_path == onnx_path.with_name("mlp-test.card.json")
    card = load_card(card_path)
    assert card.feature_set_id == feature_set_id(2, tuple(card.features)) == feature_set_id(2)
    assert card.onnx is not None and card.onnx.file == "mlp-test.onnx" and card.onnx.opset == 17
    assert len(card.feature_stats) == len(FEATURE_NAMES) and "p50" in card.feature_stats[0].quantiles
    assert {"tensorflow", "tf2onnx", "onnxruntime"} <= set(card.framework_versions)
    loaded = load_model(onnx_path, card_path)
    x = np.random.default_rng(2).normal(size=(5, 2, len(FEATURE_NAMES))).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x), np.asarray(model(x)), atol=1e-5)
    assert load_model(onnx_path).card == card  # the card beside the file is the default


def test_tampered_onnx_is_refused(shipped: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from tapwatch.inference.model import load_model

    onnx_path, card_path, _ = shipped
    bad = tmp_path / onnx_path.name
    bad.write_bytes(onnx_path.read_bytes() + b"\0")
    with pytest.raises(ModelCardError, match="sha256"):
        load_model(bad, card_path)


def test_card_with_another_input_shape_is_refused(shipped: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from tapwatch.inference.model import load_model

    onnx_path, card_path, _ = shipped
    card = load_card(card_path)
    assert card.onnx is not None
    onnx_info = card.onnx.model_copy(update={"input_shape": [None, 3, len(FEATURE_NAMES)]})
    other = card.model_copy(update={"window_length": 3, "feature_set_id": feature_set_id(3), "onnx": onnx_info})
    wrong = tmp_path / "wrong.card.json"
    wrong.write_text(other.model_dump_json())
    with pytest.raises(ModelCardError, match=r"shape \[None, 2, 82\].*expects \[None, 3, 82\]"):
        load_model(onnx_path, wrong)


def test_write_card_refuses_a_spec_of_another_shape(shipped: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from tapwatch.models.training.export import write_card

    onnx_path, card_path, _ = shipped
    info = load_card(card_path).onnx
    assert info is not None
    with pytest.raises(ModelCardError, match="input shape"):
        write_card(onnx_path, info, spec_for(5), tmp_path / "x.card.json")


def test_invalid_card_json_is_refused(shipped: tuple[Path, Path, Any], tmp_path: Path) -> None:
    from tapwatch.inference.model import load_model

    onnx_path, card_path, _ = shipped
    data = json.loads(card_path.read_text())
    data["features"] = data["features"][::-1]  # the feature_set_id no longer matches the order
    bad = tmp_path / "bad.card.json"
    bad.write_text(json.dumps(data))
    with pytest.raises(ModelCardError, match="feature_set_id"):
        load_model(onnx_path, bad)


def test_inference_loads_without_tensorflow(shipped: tuple[Path, Path, Any]) -> None:
    onnx_path, _, _ = shipped
    code = (
        "import sys, numpy as np\n"
        "from tapwatch.inference.model import load_model\n"
        f"m = load_model({str(onnx_path)!r})\n"
        "p = m.predict(np.zeros((3, 2, 82), np.float32))\n"
        "assert p.shape == (3, 3), p.shape\n"
        "bad = sorted(k for k in sys.modules if k.split('.')[0] in ('tensorflow', 'keras', 'tf2onnx'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_macs_of_the_reconstruction_and_of_the_fast_variant(keras: Any) -> None:
    from tapwatch.models.evaluation.cost import count_macs
    from tapwatch.models.training.arch import build

    full = count_macs(build(preset("hybrid-full", 10, 82, 2)))
    # Issue 3: "about 150 million multiply-adds per window"; the ConvLSTMs alone are 151.5 M.
    assert 150e6 < full < 153e6
    assert count_macs(build(preset("hybrid-fast", 10, 82, 2))) < full / 100
    assert count_macs(build(preset("mlp", 1, 4, 2, hidden=(3,)))) == 4 * 3 + 3 * 2


def test_cost_row_of_a_tiny_model(keras: Any, tmp_path: Path) -> None:
    from tapwatch.models.evaluation.cost import cost_row, to_markdown

    row = cost_row("mlp", tiny("mlp"), tmp_path, seconds=0.02)
    assert row.params > 0 and row.onnx_bytes > 0 and row.macs_per_window == T * F * 16 + 16 * CLASSES
    assert set(row.windows_per_s) == {1, 256} and min(row.windows_per_s.values()) > 0
    assert "| mlp |" in to_markdown([row])

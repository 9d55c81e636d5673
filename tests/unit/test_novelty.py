"""The site novelty model: training to ONNX, serving with :class:`NoveltyScorer`, and what the scorer refuses.

One small autoencoder is trained once for the module (needs TensorFlow, skipped without it) on synthetic benign
windows with structure (two AR(1) latents mixed into 6 features, so that there is something to learn); the graph
checks and the error function need only ONNX Runtime and the ``onnx`` package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from tapwatch.features.errors import ModelCardError
from tapwatch.inference.novelty import NoveltyScorer, reconstruction_errors
from tapwatch.models.training.novelty import NoveltyArtifact, NoveltyConfig, split_indices, train_novelty

T, F = 10, 6
CFG = NoveltyConfig(units=16, epochs=25, batch_size=32, seed=3)


def benign(n: int, seed: int = 0) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """``n`` left-padded windows: two smooth latents mixed into F features plus a little noise."""
    rng = np.random.default_rng(seed)
    z = np.zeros((n, T, 2))
    z[:, 0] = rng.normal(size=(n, 2))
    for t in range(1, T):
        z[:, t] = 0.9 * z[:, t - 1] + 0.3 * rng.normal(size=(n, 2))
    mix = np.array([[1.0, 0.5, -0.5, 0.0, 1.0, 0.3], [0.0, 1.0, 0.5, -1.0, 0.2, 0.8]])
    x = (z @ mix + 0.05 * rng.normal(size=(n, T, F))).astype(np.float32)
    valid = rng.choice([T, T, T, 6, 3], size=n)
    x[np.arange(T)[None, :] < (T - valid)[:, None]] = 0.0  # padding at the front, zeros as the builder writes
    return x, valid


@pytest.fixture(scope="module")
def trained() -> tuple[NoveltyArtifact, np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    pytest.importorskip("tensorflow")
    x, valid = benign(600)
    return train_novelty(x, valid, CFG), x, valid


def test_artifact_serves_as_trained(trained: tuple[NoveltyArtifact, Any, Any]) -> None:
    art, x, valid = trained
    train, hold = split_indices(valid, CFG)
    assert (art.windows, art.holdout_windows) == (len(train), len(hold)) == (480, 120)
    assert (art.window_length, art.features) == (T, F) and art.seconds > 0
    scorer = NoveltyScorer(art.onnx, art.threshold)
    assert (scorer.window_length, scorer.features) == (T, F)
    held = scorer.errors(x[hold], valid[hold])
    # ONNX errors on the held-out windows are the training side's (Keras) errors: same quantiles.
    for key, q in {"q50": 0.5, "q90": 0.9, "q99": 0.99, "q999": 0.999}.items():
        assert np.quantile(held, q) == pytest.approx(art.error_quantiles[key], rel=1e-4)
    assert art.threshold == pytest.approx(art.error_quantiles["q999"]) and art.threshold > 0
    assert np.mean(held <= art.threshold) >= 0.99  # the 0.999 quantile of 120 errors: at most one above
    assert art.error_quantiles["q50"] < art.error_quantiles["q90"] < art.threshold


def test_novel_windows_score_above_one(trained: tuple[NoveltyArtifact, Any, Any]) -> None:
    art, _, _ = trained
    scorer = NoveltyScorer(art.onnx, art.threshold)
    fresh, valid = benign(300, seed=1)  # unseen benign windows of the same site
    benign_ratios = scorer.ratios(fresh, valid)
    shifted = np.where(fresh != 0, fresh + 5.0, fresh).astype(np.float32)  # every real value +5
    novel_ratios = scorer.ratios(shifted, valid)
    assert np.mean(benign_ratios < 1.0) >= 0.95
    assert np.min(novel_ratios) > 10.0 and np.median(novel_ratios) > 10 * np.median(benign_ratios)


def test_padded_rows_do_not_change_the_error(trained: tuple[NoveltyArtifact, Any, Any]) -> None:
    art, x, _ = trained
    scorer = NoveltyScorer(art.onnx, art.threshold)
    windows = x[:50].copy()
    valid = np.full(50, 4)
    windows[:, : T - 4] = 0.0
    noisy = windows.copy()
    noisy[:, : T - 4] = np.random.default_rng(2).normal(0, 30, size=(50, T - 4, F))
    zero = scorer.errors(windows, valid)
    np.testing.assert_array_equal(scorer.errors(noisy, valid), zero)
    assert np.all(zero > 0)
    empty = scorer.errors(noisy[:3], np.zeros(3, np.int64))  # no real flow: error 0.0
    assert empty.tolist() == [0.0, 0.0, 0.0]


def test_error_ignores_padded_rows_and_clips() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, T, F)).astype(np.float32)
    recon = rng.normal(size=(4, T, F)).astype(np.float32)
    valid = np.array([T, 5, 1, 0])
    base = reconstruction_errors(x, recon, valid)
    recon2 = recon.copy()
    recon2[1, :5] += 100.0  # padded rows of window 1
    recon2[2, : T - 1] -= 100.0  # padded rows of window 2
    np.testing.assert_array_equal(reconstruction_errors(x, recon2, valid), base)
    expected = np.mean((x[1, 5:].astype(np.float64) - recon[1, 5:]) ** 2)
    assert base[1] == pytest.approx(expected) and base[3] == 0.0
    with pytest.raises(ValueError, match="valid_rows must be in"):
        reconstruction_errors(x, recon, np.array([T + 1, 0, 0, 0]))


def _graph(inp: tuple[str, list[Any]], out: tuple[str, list[Any]], matmul_to: int | None = None) -> bytes:
    """Identity (or MatMul by a (F, matmul_to) weight) from ``inp`` to ``out``, each (name, shape)."""
    init = []
    if matmul_to is None:
        node = helper.make_node("Identity", [inp[0]], [out[0]])
    else:
        weight = np.ones((inp[1][-1], matmul_to), np.float32)
        init = [helper.make_tensor("w", TensorProto.FLOAT, weight.shape, weight.ravel())]
        node = helper.make_node("MatMul", [inp[0], "w"], [out[0]])
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(inp[0], TensorProto.FLOAT, inp[1])],
        [helper.make_tensor_value_info(out[0], TensorProto.FLOAT, out[1])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    data: bytes = model.SerializeToString()
    return data


def test_identity_graph_of_the_right_form_is_accepted() -> None:
    scorer = NoveltyScorer(_graph(("windows", ["n", T, F]), ("recon", ["n", T, F])), threshold=0.5)
    x = np.ones((2, T, F), np.float32)
    assert scorer.errors(x, np.array([T, 3])).tolist() == [0.0, 0.0]  # a perfect reconstruction


@pytest.mark.parametrize(
    ("graph", "problem"),
    [
        (lambda: _graph(("x", ["n", T, F]), ("recon", ["n", T, F])), "inputs ['x'], expected ['windows']"),
        (lambda: _graph(("windows", ["n", T, F]), ("probs", ["n", T, F])), "outputs ['probs'], expected ['recon']"),
        (lambda: _graph(("windows", ["n", T * F]), ("recon", ["n", T * F])), "input 'windows' has shape [None, 60]"),
        (lambda: _graph(("windows", [1, T, F]), ("recon", [1, T, F])), "has shape [1, 10, 6], expected [None, T, F]"),
        (lambda: _graph(("windows", ["n", T, F]), ("recon", ["n", T, 5]), matmul_to=5), "output 'recon' has shape"),
        (lambda: b"not an onnx graph", "ONNX Runtime cannot load it"),
    ],
    ids=["input-name", "output-name", "rank", "fixed-batch", "output-shape", "garbage"],
)
def test_scorer_refuses_a_wrong_graph(graph: Any, problem: str) -> None:
    with pytest.raises(ModelCardError) as info:
        NoveltyScorer(graph(), threshold=1.0)
    assert problem in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize("threshold", [0.0, -1.0, float("nan"), float("inf")])
def test_scorer_refuses_a_bad_threshold(threshold: float) -> None:
    with pytest.raises(ModelCardError, match="threshold must be a finite number > 0"):
        NoveltyScorer(_graph(("windows", ["n", T, F]), ("recon", ["n", T, F])), threshold)


def test_too_few_windows_is_a_value_error() -> None:
    x, valid = benign(49)
    with pytest.raises(ValueError, match="at least 50 benign windows with a real flow, got 49"):
        train_novelty(x, valid, CFG)
    x, valid = benign(60)
    valid[:20] = 0  # 60 windows, but only 40 with a real flow
    with pytest.raises(ValueError, match="got 40 \\(of 60 windows\\)"):
        train_novelty(x, valid, CFG)


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="holdout must be in"):
        NoveltyConfig(holdout=1.0)
    with pytest.raises(ValueError, match="quantile must be in"):
        NoveltyConfig(quantile=0.0)

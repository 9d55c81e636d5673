"""LIME over a real (tiny) ONNX model: faithfulness, what is perturbed, and the budget that keeps alerts on time."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.alert import Contribution, ExplanationStatus
from tapwatch.alerting.budget import BudgetConfig, ExplainQueue
from tapwatch.alerting.errors import ExplainerUnavailable
from tapwatch.alerting.explain import ExplainConfig, LimeExplainer, load_onnx_explainer
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.features.card import identity_card
from tapwatch.features.contract import FEATURE_NAMES
from tests.support.alerting import STRONG, T, alert_model_spec, alert_windows
from tests.support.tiny_model import TinyModel, write_tiny_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> TinyModel:
    return write_tiny_model(tmp_path_factory.mktemp("model"), alert_model_spec())


@pytest.fixture(scope="module")
def explainer(model: TinyModel) -> LimeExplainer:
    return load_onnx_explainer(model.card, model.card_path, None, ExplainConfig(samples=500, top_k=5, seed=1))


def moved(model: TinyModel, window: np.ndarray[Any, Any], feature: str) -> float:
    """Mean |score change| when the newest flow's feature moves one training std (1.0) either way."""
    j = FEATURE_NAMES.index(feature)
    base = model.score(window[None])[0]
    deltas = []
    for step in (-1.0, 1.0):
        w = window.copy()
        w[-1, j] += step
        deltas.append(abs(model.score(w[None])[0] - base))
    return float(np.mean(deltas))


def test_explanation_is_faithful_over_50_alerts(model: TinyModel, explainer: LimeExplainer) -> None:
    hits, found_strong = 0, 0
    for window in alert_windows(model, 50):
        exp = explainer.explain(window)
        assert len(exp) == 5 and all(isinstance(c, Contribution) for c in exp)
        top, low = max(exp, key=lambda c: abs(c.weight)), min(exp, key=lambda c: abs(c.weight))
        hits += moved(model, window, top.feature) > moved(model, window, low.feature)
        found_strong += set(STRONG) <= {c.feature for c in exp}
    assert hits >= 40, f"top-weighted feature moved the score more in only {hits}/50 alerts"
    # A driving feature near its training mean contributes little at that point, so LIME may rank it low.
    assert found_strong >= 30, f"the three driving features were among the top 5 in only {found_strong}/50"


def test_explanation_reports_the_newest_flows_raw_values(model: TinyModel, explainer: LimeExplainer) -> None:
    window = alert_windows(model, 1, seed=11)[0]
    for c in explainer.explain(window):
        assert c.value == pytest.approx(float(window[-1, FEATURE_NAMES.index(c.feature)]), rel=1e-6)
    w = STRONG["Flow Duration"]
    weight = {c.feature: c.weight for c in explainer.explain(window)}.get("Flow Duration")
    assert weight is not None and np.sign(weight) == np.sign(w)


def test_only_the_newest_row_is_perturbed(model: TinyModel) -> None:
    seen: list[np.ndarray[Any, Any]] = []

    def score(batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        seen.append(batch.copy())
        return model.score(batch)

    window = alert_windows(model, 1)[0]
    LimeExplainer(score, model.card, ExplainConfig(samples=300, batch=128, seed=0)).explain(window)
    batches = np.concatenate(seen)
    assert batches.shape == (300, T, len(FEATURE_NAMES)) and len(seen) == 3
    assert np.array_equal(batches[:, :-1, :], np.broadcast_to(window[:-1], (300, T - 1, len(FEATURE_NAMES))))
    assert np.array_equal(batches[0, -1], window[-1])
    spread = batches[1:, -1, :].std(axis=0)
    assert 0.5 < spread.mean() < 1.5  # sampled from the card's N(0, 1) statistics


def test_sampling_follows_the_card_quantiles(model: TinyModel) -> None:
    stats = [s.model_copy(update={"quantiles": {"p1": 100.0, "p50": 110.0, "p99": 120.0}}) for s in
             model.card.feature_stats]  # fmt: skip
    card = model.card.model_copy(update={"feature_stats": stats})
    seen: list[np.ndarray[Any, Any]] = []
    LimeExplainer(lambda b: seen.append(b) or model.score(b), card, ExplainConfig(samples=200, seed=0)).explain(
        alert_windows(model, 1)[0]
    )
    sampled = np.concatenate(seen)[1:, -1, :]
    assert sampled.min() >= 100.0 and sampled.max() <= 120.0


def test_a_card_without_statistics_cannot_explain(model: TinyModel) -> None:
    with pytest.raises(ExplainerUnavailable, match="feature_stats"):
        LimeExplainer(model.score, identity_card(T))


def test_a_card_whose_onnx_does_not_match_is_refused(model: TinyModel, tmp_path: Path) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(model.onnx_path.read_bytes() + b"\0")
    with pytest.raises(ExplainerUnavailable, match="sha256"):
        load_onnx_explainer(model.card, model.card_path, other, ExplainConfig())


class Slow:
    def __init__(self, delay_s: float) -> None:
        self.delay_s = delay_s

    def explain(self, window: Any) -> tuple[Contribution, ...]:
        time.sleep(self.delay_s)
        return (Contribution("Flow Duration", 1.0, 0.5),)


def test_budget_exhaustion_skips_explanations() -> None:
    clock = [0.0]
    m = AlerterMetrics(CollectorRegistry())
    q = ExplainQueue(Slow(0.0), BudgetConfig(per_second=3, queue=100, deadline_ms=2000), m, clock=lambda: clock[0])
    tickets = [q.submit(np.zeros((T, 2))) for _ in range(10)]
    statuses = [q.result(t)[1] for t in tickets]
    assert statuses == [ExplanationStatus.OK] * 3 + [ExplanationStatus.BUDGET] * 7
    clock[0] = 1.0  # a second later the budget is back
    assert q.result(q.submit(np.zeros((T, 2))))[1] is ExplanationStatus.OK
    q.close()
    assert m.registry.get_sample_value("tapwatch_alerting_explanation_latency_seconds_count") == 4


def test_a_slow_explanation_never_delays_the_alert() -> None:
    q = ExplainQueue(Slow(0.5), BudgetConfig(per_second=100, queue=8, deadline_ms=50))
    start = time.monotonic()
    tickets = [q.submit(np.zeros((T, 2))) for _ in range(3)]
    results = [q.result(t) for t in tickets]
    assert time.monotonic() - start < 0.3
    assert [r for r in results] == [(None, ExplanationStatus.DEADLINE)] * 3
    q.close()


def test_a_full_queue_skips_at_once() -> None:
    q = ExplainQueue(Slow(0.3), BudgetConfig(per_second=100, queue=1, deadline_ms=20))
    tickets = [q.submit(np.zeros((T, 2))) for _ in range(5)]
    assert sum(t.status is ExplanationStatus.QUEUE_FULL for t in tickets) >= 3
    assert all(q.result(t)[0] is None for t in tickets)
    q.close()


def test_an_explainer_error_is_reported_not_raised() -> None:
    class Broken:
        def explain(self, window: Any) -> tuple[Contribution, ...]:
            raise ValueError("bad window")

    q = ExplainQueue(Broken(), BudgetConfig(per_second=10, queue=2, deadline_ms=1000))
    assert q.result(q.submit(np.zeros((T, 2)))) == (None, ExplanationStatus.ERROR)
    q.close()


class Burn:
    """An explainer that takes ``cpu_s`` of CPU on its thread per explanation, and counts the calls."""

    def __init__(self, cpu_s: float) -> None:
        self.cpu_s = cpu_s
        self.calls = 0

    def explain(self, window: Any) -> tuple[Contribution, ...]:
        self.calls += 1
        start = time.thread_time()
        while time.thread_time() - start < self.cpu_s:
            pass
        return (Contribution("Flow Duration", 1.0, 0.5),)


def test_the_cpu_share_caps_explanations_the_count_budget_allows() -> None:
    clock = [0.0]
    burn = Burn(0.02)
    q = ExplainQueue(burn, BudgetConfig(per_second=100, queue=8, deadline_ms=60_000, cpu_share=0.01),
                     clock=lambda: clock[0])  # fmt: skip
    assert q.result(q.submit(np.zeros((T, 2))))[1] is ExplanationStatus.OK  # 0.01 s of share, 0.02 s used
    assert q.submit(np.zeros((T, 2))).status is ExplanationStatus.BUDGET  # the overrun is paid back first
    clock[0] = 3.0  # the share refills at 0.01 CPU-s per second, capped at one second's worth
    assert q.result(q.submit(np.zeros((T, 2))))[1] is ExplanationStatus.OK
    assert burn.calls == 2 and q.cpu.expected_s >= 0.02
    q.close()


def test_an_explanation_that_cannot_end_by_its_deadline_is_not_started() -> None:
    burn = Burn(0.03)
    q = ExplainQueue(burn, BudgetConfig(per_second=100, queue=8, deadline_ms=10, cpu_share=1.0))
    q.result(q.submit(np.zeros((T, 2))))  # learns that one takes about 30 ms (it may miss this deadline)
    calls = burn.calls
    assert [q.result(q.submit(np.zeros((T, 2))))[1] for _ in range(3)] == [ExplanationStatus.DEADLINE] * 3
    assert burn.calls == calls  # skipped before running: no CPU spent on an explanation no alert would carry
    q.close()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_the_surrogate_is_limes_own(seed: int) -> None:
    """lime_surrogate (NumPy) picks the same features with the same weights as lime's LimeBase, which it replaces
    on the hot path only because importing LIME (scikit-learn, SciPy) costs every `detect` a second."""
    from lime.lime_base import LimeBase

    from tapwatch.alerting.explain import _kernel, lime_surrogate

    rng = np.random.default_rng(seed)
    z = rng.normal(size=(500, 82))
    z[:, rng.choice(82, 5, replace=False)] = 0.0  # features the statistics never vary (zeroed, as _standardise does)
    z[0] = rng.normal(scale=3.0, size=82) * (z[1] != 0)
    scores = 1 / (1 + np.exp(-(z[:, :6] @ rng.normal(size=6)))) + rng.normal(scale=0.01, size=500)
    distances = np.linalg.norm(z - z[0], axis=1)
    kernel = _kernel(0.75 * np.sqrt(82))
    _, expected, _, _ = LimeBase(kernel, random_state=seed).explain_instance_with_data(
        z, scores[:, None], distances, 0, 5, feature_selection="highest_weights"
    )
    got = lime_surrogate(z, scores, kernel(distances), 5)
    assert [i for i, _ in got] == [int(i) for i, _ in expected]
    np.testing.assert_allclose([w for _, w in got], [w for _, w in expected], rtol=1e-7, atol=1e-12)

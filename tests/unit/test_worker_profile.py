"""The worker with a site profile: each verdict's novelty, the drift metrics, hot reload and its refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from tapwatch.bus.streams import WINDOWS_STREAM, MemoryBus
from tapwatch.features.errors import ConfigError
from tapwatch.features.profile import ProfileCard, ProfileModel
from tapwatch.inference.metrics import InferenceMetrics
from tapwatch.inference.model import load_model
from tapwatch.inference.profiled import ProfileReloader, serve_profile
from tapwatch.inference.service import worker_profile
from tapwatch.inference.worker import Worker
from tests.support.novelty_graph import novelty_of, profile_for, write_profile
from tests.support.tiny_model import sample_window, write_tiny_model
from tests.support.worker import FAST, run_until_idle, sample, verdicts_of

T = 4


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_each_verdict_carries_its_novelty_and_the_worker_exports_drift(tmp_path: Path) -> None:
    model = load_model(write_tiny_model(tmp_path, window_length=T).onnx_path)
    path = write_profile(tmp_path / "site.profile.json", profile_for(model, threshold=1.0))
    bus = MemoryBus()
    quiet, loud = sample_window(T, level=0.5, flow_id=1), sample_window(T, level=30.0, feature=3, flow_id=2)
    bus.add_many(WINDOWS_STREAM, [quiet.encode(), loud.encode()])
    worker = Worker(bus, model, FAST, InferenceMetrics(CollectorRegistry()), profile=serve_profile(path, model))
    run_until_idle(worker)
    got = {v.flow.flow_id: v.novelty for v in verdicts_of(bus)}
    assert got[1] == pytest.approx(novelty_of(quiet.tensor, T, 1.0)) and got[1] < 1
    assert got[2] == pytest.approx(100 / 82) and got[2] > 1  # 30 clipped to 10 in one of the 82 features
    assert sample(worker, "tapwatch_inference_novelty_scored_windows_total") == 2
    assert sample(worker, "tapwatch_inference_novel_windows_total") == 1
    assert sample(worker, "tapwatch_inference_novel_share") == 0.5  # the first batch sets the average
    feature = model.card.features[3]
    # the newest rows' mean of feature 3 is 15 (one window at 30, one at 0); the profile's benign mean 0, std 1
    assert sample(worker, "tapwatch_inference_feature_shift", {"feature": feature}) == pytest.approx(15.0)
    assert sample(worker, "tapwatch_profile_info", {"path": str(path), "model": f"{model.card.name} "
                  f"{model.card.version}", "flows": "100", "created": "2026-12-07T00:00:00Z"}) == 1  # fmt: skip


def test_a_changed_profile_is_reloaded_and_a_bad_one_refused_keeping_the_old(tmp_path: Path) -> None:
    model = load_model(write_tiny_model(tmp_path, window_length=T).onnx_path)
    path = write_profile(tmp_path / "site.profile.json", profile_for(model, threshold=2.0))
    clock = Clock()
    reloader = ProfileReloader(path, poll_s=1.0, clock=clock)
    bus = MemoryBus()
    worker = Worker(bus, model, FAST, InferenceMetrics(CollectorRegistry()), profile=serve_profile(path, model),
                    profile_reloader=reloader)  # fmt: skip

    def settle() -> None:  # a change must hold still for one poll
        for _ in range(3):
            clock.now += 1.5
            run_until_idle(worker)

    other = profile_for(model, threshold=2.0)
    other = other.model_copy(update={"card": ProfileCard(model=ProfileModel(name="another", version="9",
                                                                            onnx_sha256="00"))})  # fmt: skip
    write_profile(path, other)
    settle()
    assert sample(worker, "tapwatch_inference_profile_reloads_total", {"result": "failed"}) == 1
    assert worker.profile is not None and worker.profile.scorer is not None and worker.profile.scorer.threshold == 2.0

    path.write_text("{ half a file")
    settle()
    assert sample(worker, "tapwatch_inference_profile_reloads_total", {"result": "failed"}) == 2

    write_profile(path, profile_for(model, threshold=8.0))
    settle()
    assert sample(worker, "tapwatch_inference_profile_reloads_total", {"result": "ok"}) == 1
    assert worker.profile is not None and worker.profile.scorer is not None and worker.profile.scorer.threshold == 8.0
    w = sample_window(T, level=1.0, flow_id=7)
    bus.add_many(WINDOWS_STREAM, [w.encode()])
    run_until_idle(worker)
    assert verdicts_of(bus)[-1].novelty == pytest.approx(novelty_of(w.tensor, T, 8.0))


def test_the_default_profile_is_the_one_beside_the_model_and_a_refused_one_stops_the_start(tmp_path: Path) -> None:
    model = load_model(write_tiny_model(tmp_path, window_length=T).onnx_path)
    assert worker_profile(None, model, 1, 2.0) == (None, None)  # none beside it: no profile, no novelty
    beside = model.onnx_path.with_suffix(".profile.json")
    write_profile(beside, profile_for(model))
    served, reloader = worker_profile(None, model, 1, 2.0)
    assert served is not None and served.path == beside and reloader is not None
    wrong = profile_for(model).model_copy(
        update={"card": ProfileCard(model=ProfileModel(name=model.card.name, version="0.0.9", onnx_sha256="00"))}
    )
    write_profile(tmp_path / "old.profile.json", wrong)
    with pytest.raises(ConfigError) as err:
        worker_profile(tmp_path / "old.profile.json", model, 1, 2.0)
    assert str(err.value) == (f"profile: {tmp_path}/old.profile.json: learned for model {model.card.name} 0.0.9, "
                              f"not {model.card.name} {model.card.version}")  # fmt: skip


def test_a_novelty_model_of_another_window_shape_is_refused(tmp_path: Path) -> None:
    model = load_model(write_tiny_model(tmp_path, window_length=T).onnx_path)
    other = load_model(write_tiny_model(tmp_path / "b", window_length=6).onnx_path)
    p = profile_for(other).model_copy(update={"card": profile_for(model).card})
    path = write_profile(tmp_path / "x.profile.json", p)
    with pytest.raises(ConfigError, match="novelty model takes windows of 6 x"):
        serve_profile(path, model)
    assert np.isfinite(T)


def test_the_alerter_swaps_in_a_changed_profile_and_keeps_its_own_when_one_is_refused(tmp_path: Path) -> None:
    from tapwatch.alerting.metrics import AlerterMetrics
    from tapwatch.alerting.service import build_episode_alerter
    from tests.support.alerting import settings

    tiny = write_tiny_model(tmp_path, window_length=T)
    model = load_model(tiny.onnx_path)
    path = write_profile(tmp_path / "site.profile.json", profile_for(model, thresholds={"scan": 0.6}))
    s = settings(onnx=str(tiny.onnx_path), profile=str(path), reload_poll_s=1.0)
    alerter = build_episode_alerter(s, MemoryBus(), AlerterMetrics(CollectorRegistry()), reload_profile=True)
    assert alerter.policy.gate is not None and alerter.policy.gate.thresholds == (("scan", 0.6),)
    assert alerter.profile_swap is not None
    clock = Clock()
    alerter.profile_swap.reloader = ProfileReloader(path, poll_s=1.0, clock=clock)

    def settle() -> None:
        for _ in range(3):
            clock.now += 1.5
            alerter._maybe_swap_profile()

    def reloads(result: str) -> float | None:
        return alerter.metrics.registry.get_sample_value("tapwatch_alerting_profile_reloads_total", {"result": result})

    path.write_text('{"format": "tapwatch-site-profile", "schema_version": 2}')
    settle()
    assert reloads("failed") == 1 and alerter.policy.gate.thresholds == (("scan", 0.6),)
    write_profile(path, profile_for(model, thresholds={"scan": 0.9, "dos": 0.7}))
    settle()
    assert reloads("ok") == 1 and alerter.policy.gate.thresholds == (("dos", 0.7), ("scan", 0.9))
    alerter.close()

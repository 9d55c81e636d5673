"""The evaluation plan's optional ablations and their report section (no training: committed cached runs).

``--ablations`` adds the Hybrid's ablations to the runs ``tapwatch evaluate --dataset cic-ids2017`` trains;
without it the default run set is unchanged and the ablations are reported only when all their runs are
cached. The rendering test, which reads the committed cache of models/reports and the CIC-IDS2017 subset in
../shared: tests/corpus/test_models_evaluate_corpus.py.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tapwatch.models.evaluation.evaluate import (
    HYBRID_BATCH,
    LGBM,
    MAIN_WEIGHTING,
    Plan,
    Runner,
    cic_plan,
    make_plan,
    run_key,
)
from tapwatch.models.training.arch import Cell
from tapwatch.models.training.train import TrainConfig
from tests.support.evaluation import CACHE, ablations


def _trained(plan: Plan) -> list[TrainConfig]:
    return [c for p in plan.protocols if not p.optional for c in p.runs]


def test_ablation_flag_adds_the_ablation_runs_and_leaves_the_default_run_set() -> None:
    default, with_flag = make_plan("cic-ids2017"), make_plan("cic-ids2017", ablations=True)
    base = TrainConfig(dataset="cic-ids2017", model="mlp", epochs=6, max_train=8000, patience=2)
    assert _trained(default) == [c for p in cic_plan((0, 1, 2), base) for c in p.runs]
    assert all(not p.optional for p in with_flag.protocols)
    abl = [c for p in with_flag.protocols if p.name in ("ablation-arch", "ablation-t") for c in p.runs]
    assert all(c.seed == 0 and c.max_train == 8000 and c.split.value == "time" for c in abl)
    variants = {(c.model, c.window, c.overrides) for c in abl}
    assert ("hybrid-fast", 0, (("cell", Cell.LSTM),)) in variants
    assert ("hybrid-fast", 0, (("decoder", False),)) in variants
    for t in (1, 5, 0, 20):  # T = 10 is the default window (0): the main protocol's own runs
        assert ("hybrid-fast", t, ()) in variants and (LGBM, t, ()) in variants
    assert len(variants) == 10 and any(c not in _trained(default) for c in abl)
    # Every hybrid variant trains exactly like the main protocol's hybrid-fast seed 0, on the same subsample.
    main = next(c for c in default.protocols[0].runs if c.model == "hybrid-fast" and c.seed == 0)
    recipes = {(c.batch_size, c.epochs, c.patience, c.learning_rate, c.max_train) for c in abl if c.model != LGBM}
    assert recipes == {(main.batch_size, main.epochs, main.patience, main.learning_rate, main.max_train)}
    assert main.batch_size == HYBRID_BATCH
    full = next(p for p in with_flag.protocols if p.name == "ablation-full").runs
    assert [c.model for c in full] == ["hybrid-full", "hybrid-lstm", "hybrid-nodecoder"]
    assert {(c.max_train, c.epochs, c.batch_size, c.seed) for c in full} == {(3000, 3, 256, 0)}


@pytest.mark.parametrize("dataset", ["unsw-nb15", "nsl-kdd", "ton-iot"])
def test_every_dataset_gets_the_hybrid_recipe_check_only_with_the_flag(dataset: str) -> None:
    default, with_flag = make_plan(dataset), make_plan(dataset, ablations=True)
    extra = [c for c in _trained(with_flag) if c not in _trained(default)]
    # New: the batch check (the Hybrid at batch 256 and 64, every seed, at the balanced weighting that choice was
    # made under), and the weighting check (MLP and Hybrid, seed 0, with the two weightings the main protocol
    # does not use).
    got = {(c.model, c.batch_size, c.class_weighting, c.seed) for c in extra}
    batch = {("hybrid-fast", b, "balanced", s) for b in (256, HYBRID_BATCH) for s in (0, 1, 2)}
    weighting = {("mlp", 256, "balanced", 0), ("mlp", 256, "none", 0), ("hybrid-fast", HYBRID_BATCH, "none", 0)}
    assert got == batch | weighting
    hybrid = [c for c in _trained(default) if c.model.startswith("hybrid")]
    assert hybrid and all(c.batch_size == HYBRID_BATCH for c in hybrid)
    assert all(c.batch_size == 256 for c in _trained(default) if not c.model.startswith("hybrid"))
    neural = [c for c in _trained(default) if c.model != LGBM]
    assert neural and all(c.class_weighting == MAIN_WEIGHTING for c in neural)
    assert all(c.class_weighting == "balanced" for c in _trained(default) if c.model == LGBM)  # LightGBM's own


def test_optional_protocols_are_reported_only_when_cached(tmp_path: Path) -> None:
    arch = ablations()[0]
    missing = [c for c in arch.runs if not (CACHE / f"{run_key(c)}.json").exists()]
    assert not missing, f"the committed cache lacks {len(missing)} ablation runs: run evaluate --ablations"
    for c in arch.runs:
        shutil.copy(CACHE / f"{run_key(c)}.json", tmp_path)
    plan = Plan("cic-ids2017", (arch,), "budget")
    assert [r["config"] for r in Runner(plan, tmp_path).run()["ablation-arch"]] == [c.key() for c in arch.runs]
    (tmp_path / f"{run_key(arch.runs[1])}.json").unlink()  # one run missing: skipped, not trained
    assert Runner(plan, tmp_path).run() == {}

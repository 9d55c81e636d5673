"""The evaluation report's ablation section, rendered from the committed cache of runs (no training) on the
CIC-IDS2017 subset in ../shared (the plans and the cache: tests/unit/test_models_evaluate.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

from tapwatch.models.evaluation.evaluate import Plan, Runner, run_key
from tests.support.env import CIC_SUBSET, need
from tests.support.evaluation import CACHE, ablations


def _no_training(msg: str) -> None:
    raise AssertionError(f"the report must come from the cache, not train: {msg}")


def test_report_renders_the_ablation_section_from_cached_runs(tmp_path: Path) -> None:
    need(importlib.util.find_spec("lightgbm") is not None, "the train extra is not installed")
    need(CIC_SUBSET.exists(), f"the CIC-IDS2017 subset is not at {CIC_SUBSET}")
    from tapwatch.models.evaluation.report import write_report

    protocols = ablations()
    cache = tmp_path / "cache"
    cache.mkdir()
    for c in (c for p in protocols for c in p.runs):
        shutil.copy(CACHE / f"{run_key(c)}.json", cache)
    plan = Plan("cic-ids2017", protocols, "budget", quick=True, rows=2000)
    runner = Runner(plan, cache, on_progress=_no_training)
    md = write_report(plan, runner, runner.run(), tmp_path, 0.0).read_text()
    assert "## Ablation: ConvLSTM vs LSTM cells" in md and "## Ablation: window length T" in md
    assert "| hybrid-fast cell=lstm | 10 | 0 |" in md and "| hybrid-fast decoder=False | 10 | 0 |" in md
    for t in (1, 5, 10, 20):
        assert f"| hybrid-fast | {t} | 0 |" in md and f"| lgbm | {t} | 0 |" in md
    doc = json.loads((tmp_path / "cic-ids2017-quick.json").read_text())
    rows = {(r["variant"], r["T"]) for p in doc["protocols"] for r in p["rows"]}
    assert ("hybrid-fast cell=lstm", 10) in rows and ("lgbm", 20) in rows
    cached = json.loads((cache / f"{run_key(protocols[1].runs[-2])}.json").read_text())
    assert f"{cached['metrics']['attack']['f1']:.4f}" in md  # hybrid-fast at T = 20: the cached test F1

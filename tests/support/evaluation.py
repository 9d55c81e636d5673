"""The evaluation tests' kit: the committed cache of evaluation runs (models/reports) and the ablation protocols."""

from __future__ import annotations

from tapwatch.models.evaluation.evaluate import Protocol, make_plan
from tests.support.env import REPO

REPORTS = REPO / "models" / "reports"


CACHE = REPORTS / "cache" / "cic-ids2017"


def ablations() -> tuple[Protocol, ...]:
    """The CIC plan's ablation protocols (arch, T), as the default command lists them (optional)."""
    out = tuple(p for p in make_plan("cic-ids2017").protocols if p.name in ("ablation-arch", "ablation-t"))
    assert len(out) == 2 and all(p.optional for p in out)
    return out

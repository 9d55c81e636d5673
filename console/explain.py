"""An episode's explanation as the episode page draws it: one bar per feature, its weight on the score, its value
in the episode's flow beside the benign median (inline SVG sizes, no style attributes: the console's
Content-Security-Policy allows no inline styles)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tapwatch.features.baseline import load_baseline, shipped_baseline

WIDTH = 240
"""Pixels of the longest bar."""


@dataclass(frozen=True)
class Bar:
    feature: str
    value: float | None
    median: float | None
    weight: float
    width: int
    """Pixels, at least 1."""
    toward_attack: bool


def benign_medians() -> dict[str, float]:
    """Per-feature benign medians of the shipped site baseline (empty when it is not installed)."""
    path = shipped_baseline()
    return dict(load_baseline(path).feature_medians) if path is not None else {}


def bars(ml: dict[str, Any], medians: dict[str, float] | None = None) -> list[Bar]:
    """The explanation's features, largest weight first."""
    medians = medians or {}
    items = [c for c in ml.get("explanation") or [] if isinstance(c, dict) and "feature" in c]
    top = max((abs(float(c.get("weight") or 0.0)) for c in items), default=0.0) or 1.0
    out = []
    for c in sorted(items, key=lambda c: -abs(float(c.get("weight") or 0.0))):
        w = float(c.get("weight") or 0.0)
        value = c.get("value")
        out.append(Bar(str(c["feature"]), float(value) if isinstance(value, int | float) else None,
                       medians.get(str(c["feature"])), w, max(1, round(abs(w) / top * WIDTH)), w >= 0))  # fmt: skip
    return out

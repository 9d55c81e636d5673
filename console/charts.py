"""Small SVG charts drawn on the server (no chart library, no inline style: the CSP allows neither)."""

from __future__ import annotations

from dataclasses import dataclass

PALETTE = {"scan": "#0b5cad", "dos": "#b3261e", "bruteforce": "#c26a00", "webattack": "#6b3fa0", "botnet": "#2e7d32",
           "benign": "#9aa6b2"}  # fmt: skip
OTHER = "#5a6b7b"


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    width: float
    height: float
    fill: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    rects: list[Rect]
    labels: list[tuple[float, str]]
    """(x, text) under the bars."""
    legend: list[tuple[str, str]]
    """(colour, name)."""


def stacked(buckets: list[tuple[str, dict[str, int]]], width: int = 720, height: int = 160) -> Chart:
    """Stacked bars: one per (label, counts by series), series coloured by family."""
    series = sorted({s for _, counts in buckets for s in counts})
    top = max((sum(c.values()) for _, c in buckets), default=0) or 1
    step = width / max(1, len(buckets))
    rects, labels = [], []
    for i, (label, counts) in enumerate(buckets):
        y = float(height)
        for s in series:
            n = counts.get(s, 0)
            if not n:
                continue
            h = n / top * (height - 4)
            y -= h
            rects.append(Rect(i * step + 1, y, max(1.0, step - 2), h, PALETTE.get(s, OTHER), f"{label} {s}: {n}"))
        if i % max(1, len(buckets) // 8) == 0:
            labels.append((i * step, label))
    return Chart(width, height, rects, labels, [(PALETTE.get(s, OTHER), s) for s in series])


def spark(values: list[float], width: int = 160, height: int = 20) -> list[Rect]:
    """A sparkline of scores in [0, 1] as thin bars."""
    step = width / max(1, len(values))
    return [Rect(i * step, height - v * height, max(1.0, step - 1), max(1.0, v * height),
                 "#b3261e" if v >= 0.9 else "#0b5cad", f"{v:.2f}") for i, v in enumerate(values)]  # fmt: skip

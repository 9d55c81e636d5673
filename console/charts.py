"""Small SVG charts drawn on the server (no chart library, no inline style: the CSP allows neither)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


LABEL_PX = 80
"""Room a time label under the bars takes ("11-25 18:00" in 11 px type)."""


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
        if i % max(1, len(buckets) // 8) == 0 and i * step <= width - LABEL_PX:  # a label must fit in the chart
            labels.append((i * step, label))
    return Chart(width, height, rects, labels, [(PALETTE.get(s, OTHER), s) for s in series])


def spark(values: list[float], width: int = 160, height: int = 20) -> list[Rect]:
    """A sparkline of scores in [0, 1] as thin bars."""
    step = width / max(1, len(values))
    return [Rect(i * step, height - v * height, max(1.0, step - 1), max(1.0, v * height),
                 "#b3261e" if v >= 0.9 else "#0b5cad", f"{v:.2f}") for i, v in enumerate(values)]  # fmt: skip


@dataclass(frozen=True)
class Timeline:
    width: int
    height: int
    marks: list[Rect]
    start_ms: int
    end_ms: int


def timeline(episode: Any, lines: Sequence[Any], flows: Sequence[Any], width: int = 720) -> Timeline:
    """An episode's alert lines (tall marks, by state) and flows (short ticks, by family) on one time axis."""
    times: list[int] = [int(x.at_ms) for x in lines] + [int(f.at_ms) for f in flows]
    times += [int(episode.first_ms), int(episode.last_ms)]
    start, end = min(times), max(times)
    span = max(1, end - start)

    def x(t: int) -> float:
        return round(float(t - start) / span * (width - 4) + 2, 1)

    colour = {"open": "#b3261e", "update": "#c26a00", "close": "#5a6b7b"}
    marks = [Rect(x(f.at_ms), 30, 1.5, 14, PALETTE.get(f.family, OTHER), f"{f.family} {f.predicted} {f.score:.2f}")
             for f in flows]  # fmt: skip
    marks += [Rect(x(a.at_ms) - 1, 4, 3, 22, colour.get(a.state, OTHER), f"{a.state} line") for a in lines]
    return Timeline(width, 48, marks, start, end)

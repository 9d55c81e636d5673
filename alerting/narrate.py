"""An episode's explanation and its summary in words, computed once per episode.

``ml.explanation`` lists ``{feature, value, weight}``: for an episode a window opened, LIME's top features of
its representative window (:class:`~tapwatch.alerting.explain.LimeExplainer`, run synchronously, once: an
episode is rare, so no queue or budget can skip it); for one the volume view opened, the aggregate counts that
crossed their thresholds (weight: the value over its threshold). ``ml.summary`` says the same in one or two
sentences for an analyst without ML training, with the benign median beside each value.

>>> facts = [["distinct_ports", 1000.0, 3.0, 66.7, "{value} destination ports in {seconds} s (benign hosts "
...           "here: {median})"], ["unanswered_or_reset", 0.99, None, 0.99, "{percent} unanswered or reset"]]
>>> ep = {"family": "scan", "entity": "10.0.0.9", "role": "source", "facts": facts, "rep_view": "volume",
...       "rep_detail": "vertical port scan", "evidence": 1, "max_score": 1.0, "n_targets": 1, "targets": {}}
>>> print(*summary_of(ep, (), 10.0, {}).split("; "), sep=";\\n")
Network scan from 10.0.0.9 (vertical port scan): 1,000 destination ports in 10 s (benign hosts here: 3);
99% unanswered or reset.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tapwatch.alerting.alert import Contribution
from tapwatch.features.families import Family

log = logging.getLogger(__name__)

Explain = Callable[[np.ndarray[Any, Any]], tuple[Contribution, ...]]


def number(v: float | None) -> str:
    """A value as an analyst reads it: thousands separators, at most two decimals.

    >>> number(4000), number(0.12345), number(None)
    ('4,000', '0.12', 'n/a')
    """
    if v is None:
        return "n/a"
    v = round(float(v), 2)  # float32 features: 0.99999994 is 1
    if v.is_integer():
        return f"{int(v):,}"
    return f"{v:,.2f}"


def facts_explanation(facts: Sequence[Sequence[Any]]) -> tuple[Contribution, ...]:
    """The volume view's explanation: each fact with its weight (value over threshold)."""
    return tuple(Contribution(str(f[0]), float(f[1]), float(f[3])) for f in facts)


def window_explanation(tensor: np.ndarray[Any, Any] | None, explain: Explain | None) -> tuple[Contribution, ...]:
    """LIME on the window, or () when impossible (no tensor, no explainer, an error: logged)."""
    if tensor is None or explain is None:
        return ()
    try:
        return explain(tensor)
    except Exception:  # an explanation must never cost the alert; the line says what it can without one
        log.warning("LIME failed on an episode's window; its line explains the score only", exc_info=True)
        return ()


def fallback_explanation(episode: dict[str, Any]) -> tuple[Contribution, ...]:
    """When nothing better exists: the score and the amount of evidence."""
    return (
        Contribution("attack_score", float(episode["max_score"]), 1.0),
        Contribution("windows_or_buckets", float(episode["evidence"]), 0.0),
    )


def _fact_text(fact: Sequence[Any], seconds: float) -> str:
    _, value, median, _, text = fact
    percent = f"{round(float(value) * 100):d}%"
    return str(text).format(value=number(value), median=number(median), seconds=number(seconds), percent=percent)


def _at_median(value: float, median: float | None) -> bool:
    """The value reads as the median does (features come back from float32 scaling with residues like 1e-7)."""
    return median is not None and number(value) == number(median)


def summary_of(
    episode: dict[str, Any], explanation: tuple[Contribution, ...], seconds: float, medians: dict[str, float]
) -> str:
    """One or two sentences: who, what, and the numbers with the benign median beside each."""
    family = Family(episode["family"])
    who = ("against " if episode["role"] == "victim" else "from ") + episode["entity"]
    detail = episode.get("rep_detail", "")
    # A model whose classes are the families names no finer class: no "(scan)" after "Network scan".
    head = f"{family.label} {who}" + (f" ({detail})" if detail and detail != family.value else "")
    if episode.get("rep_view") == "volume" and episode.get("facts"):
        return head + ": " + "; ".join(_fact_text(f, seconds) for f in episode["facts"]) + "."
    windows = episode["evidence"]
    said = (
        f"{head}: the model judged {number(windows)} windows of this host's recent connections as "
        f"{episode.get('rep_detail', family.value)} (score up to {episode['max_score']:.2f})."
    )
    # A sign is a feature that pushed towards the attack and whose value is not the benign median's (a value
    # equal to what benign flows have tells an analyst nothing).
    signs = [
        f"{c.feature} {number(c.value)} (benign median {number(medians.get(c.feature))})"
        for c in explanation
        if c.weight > 0 and not _at_median(c.value, medians.get(c.feature))
    ][:3]
    return said + (" Strongest signs: " + ", ".join(signs) + "." if signs else "")

"""The summary sentence of a window-view episode: what it names, and which signs it tells an analyst."""

from __future__ import annotations

from tapwatch.alerting.alert import Contribution
from tapwatch.alerting.narrate import summary_of

EPISODE = {"family": "scan", "role": "source", "entity": "10.0.0.1", "rep_view": "window", "evidence": 3,
           "max_score": 0.9998}  # fmt: skip


def test_signs_at_the_benign_median_are_not_told() -> None:
    explanation = (
        Contribution("Fwd RST Flags", 3e-7, 0.10),  # pushed towards the attack, but reads as the benign median
        Contribution("Total Bwd packets", 1.0, -0.09),  # pushed away: never a sign
        Contribution("SYN Flag Count", 1.0, 0.05),
        Contribution("Flow Duration", 120.0, 0.01),
    )
    medians = {"Fwd RST Flags": 0.0, "Total Bwd packets": 11.0, "SYN Flag Count": 2.0, "Flow Duration": 7000.0}
    text = summary_of({**EPISODE, "rep_detail": "Portscan"}, explanation, 10.0, medians)
    assert "Fwd RST Flags" not in text and "Total Bwd packets" not in text
    assert "Strongest signs: SYN Flag Count 1 (benign median 2), Flow Duration 120 (benign median 7,000)." in text


def test_a_class_named_after_its_family_is_not_repeated() -> None:
    named = summary_of({**EPISODE, "rep_detail": "scan"}, (), 10.0, {})
    assert named.startswith("Network scan from 10.0.0.1: the model judged 3 windows") and "(scan)" not in named
    cic = summary_of({**EPISODE, "rep_detail": "Portscan"}, (), 10.0, {})
    assert cic.startswith("Network scan from 10.0.0.1 (Portscan): ") and "Strongest signs" not in cic

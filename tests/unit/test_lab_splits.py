"""Splits of the lab corpus (lab.splits): whole episodes and whole runs on one side only."""

from __future__ import annotations

import pandas as pd
import pytest

from lab.splits import TEST, TRAIN, check_disjoint, split_by_episode, split_by_run
from lab.topo_plan import LabError


def _corpus() -> pd.DataFrame:
    rows = []
    for seed in (1, 2):
        for prof in ("none", "wan", "lossy"):
            unit = f"office-day-{prof}-s{seed}"
            for ep, fam in (("e001", "scan"), ("e002", "dos"), ("e003", "scan"), ("b-c1", "benign"),
                            ("b-c2", "benign")):  # fmt: skip
                rows += [{"unit": unit, "scenario": "office-day", "seed": seed, "link_profile": prof,
                          "episode_id": ep, "family": fam}] * 4  # fmt: skip
    return pd.DataFrame(rows)


def test_a_split_by_episode_keeps_each_episode_on_one_side_and_each_family_on_both() -> None:
    frame = _corpus()
    sides = split_by_episode(frame, test_share=0.3, seed=5)
    assert check_disjoint(frame, sides)["episode"] == 0
    for family, rows in frame.groupby("family"):
        assert set(sides[rows.index]) == {TRAIN, TEST}, family
    assert sides.equals(split_by_episode(frame, test_share=0.3, seed=5))
    assert not sides.equals(split_by_episode(frame, test_share=0.3, seed=6))


def test_a_split_by_run_shares_no_seed_or_profile_it_holds_out() -> None:
    frame = _corpus()
    sides = split_by_run(frame, test_seeds=(2,))
    assert check_disjoint(frame, sides, ("seed",)) == {"episode": 0, "seed": 0}
    sides = split_by_run(frame, test_profiles=("lossy",))
    assert check_disjoint(frame, sides, ("link_profile",)) == {"episode": 0, "link_profile": 0}
    assert (sides == TEST).sum() == (frame["link_profile"] == "lossy").sum()


def test_splits_refuse_what_would_be_meaningless() -> None:
    with pytest.raises(LabError, match="needs test seeds"):
        split_by_run(_corpus())
    with pytest.raises(LabError, match="between 0 and 1"):
        split_by_episode(_corpus(), test_share=1.0)

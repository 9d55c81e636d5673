"""The small lab corpus committed for tests (lab/samples/ci-corpus: ci-short over the four link profiles, made by
``python -m lab.corpus build --scenarios ci-short --seeds 1`` and ``relabel``): what it holds, that its labels are
today's rule applied to its episodes, and that each unit's handshake RTT matched its profile when it ran."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from lab.delayline import Profile
from lab.episodes import Family, read_episodes
from lab.labels import LABEL_COLUMNS, LabelIndex, hosts_from_episodes, label_frame
from lab.run_manifest import sha256_of
from tests.support.env import REPO

SAMPLE = REPO / "lab" / "samples" / "ci-corpus"


@pytest.fixture(scope="module")
def corpus() -> tuple[dict, pd.DataFrame]:
    manifest = json.loads((SAMPLE / "manifest.json").read_text())
    return manifest, pd.read_csv(SAMPLE / manifest["dataset"], low_memory=False)


def test_the_sample_is_what_its_manifest_says(corpus: tuple[dict, pd.DataFrame]) -> None:
    manifest, flows = corpus
    assert sha256_of(SAMPLE / manifest["dataset"]) == manifest["dataset_sha256"]
    assert len(flows) == manifest["flows"] == sum(u["flows_total"] for u in manifest["units"])
    assert sorted(flows["link_profile"].unique()) == sorted(p.value for p in Profile)
    assert sum(f.stat().st_size for f in SAMPLE.rglob("*")) < 5_000_000


def test_every_unit_has_flows_of_every_family(corpus: tuple[dict, pd.DataFrame]) -> None:
    _, flows = corpus
    for unit, rows in flows.groupby("unit"):
        assert set(rows["family"]) == {f.value for f in Family}, unit


def test_the_labels_are_the_rule_applied_to_the_units_episodes(corpus: tuple[dict, pd.DataFrame]) -> None:
    _, flows = corpus
    for unit, rows in flows.groupby("unit"):
        episodes = read_episodes(SAMPLE / "episodes" / f"{unit}.csv")
        again = label_frame(
            rows.drop(columns=list(LABEL_COLUMNS)), LabelIndex.build(episodes, hosts_from_episodes(episodes))
        )
        assert again["episode_id"].tolist() == rows["episode_id"].tolist(), unit
        assert set(rows["episode_id"]) - {e.episode_id for e in episodes} <= {"b-router", "b-outside"}


def test_each_units_handshake_rtt_matched_its_profile(corpus: tuple[dict, pd.DataFrame]) -> None:
    manifest, _ = corpus
    for unit in manifest["units"]:
        target, got = unit["profile_rtt_ms"], unit["handshake_rtt"]["median_ms"]
        assert unit["handshake_rtt"]["count"] > 100
        assert abs(got - target) <= max(0.1 * target, 0.2), (unit["unit"], got, target)

"""Training on tapwatch's own flows: the lab corpus loader, its splits by episode and the joined CIC + lab dataset.

The committed sample corpus (lab/samples/ci-corpus: real flows tapwatch wrote from the lab's packets) stands in
for the full corpus, which is built on the lab machine and never committed.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapwatch.features.card import Scaler
from tapwatch.features.errors import BadInputError, ConfigError
from tapwatch.features.families import Family, family_of_class
from tapwatch.models.training.data_lab import (
    LAB_CLASSES,
    cic_lab_split,
    episode_groups,
    episode_split,
    load_lab,
)
from tapwatch.models.training.sequences import Order, make_windows
from tapwatch.models.training.train import SplitKind, TrainConfig
from tests.support.env import REPO

SAMPLE = REPO / "lab" / "samples" / "ci-corpus"


@pytest.fixture(scope="module")
def lab() -> object:
    return load_lab([SAMPLE])


@pytest.fixture(scope="module")
def raw() -> pd.DataFrame:
    return pd.read_csv(SAMPLE / "flows.csv.gz", low_memory=False)


def test_the_lab_dataset_holds_the_scored_flows_labelled_by_family(lab, raw: pd.DataFrame) -> None:
    scored = raw[raw["packets"] >= 2]
    assert len(lab.y) == len(scored) < len(raw)
    assert set(lab.y) <= set(LAB_CLASSES) and lab.benign_class == "benign"
    assert lab.y.tolist() == scored["family"].tolist()
    assert lab.counts["one_packet_flows_dropped"] == len(raw) - len(scored)
    assert (lab.meta["Src IP"] == (scored["unit"] + "|" + scored["Src IP"]).to_numpy()).all()
    assert lab.files[0].rows == len(raw) and len(lab.files[0].sha256) == 64


def test_emitted_order_is_the_runs_file_order(lab, raw: pd.DataFrame) -> None:
    emitted = lab.meta["Emitted"].to_numpy()
    assert (np.diff(emitted) > 0).all()
    kept = np.flatnonzero(raw["packets"].to_numpy() >= 2)
    assert (emitted == kept).all()  # the row's place in the file, one-packet rows skipped


def test_windows_follow_the_order_the_sensor_emitted(lab) -> None:
    rows = np.arange(len(lab.y))
    scaler = Scaler()
    w = make_windows(lab, rows, scaler, 4, Order.EMITTED)
    host = lab.meta["Src IP"].to_numpy()
    emitted = lab.meta["Emitted"].to_numpy()
    full = w.rows[(w.rows >= 0).all(axis=1)]
    assert len(full) > 100
    assert (host[full] == host[full[:, :1]]).all()  # one host (and so one run) per window
    assert (np.diff(emitted[full], axis=1) > 0).all()  # earlier emitted first


def test_validation_takes_whole_episodes_across_link_profiles(lab) -> None:
    rows = np.arange(len(lab.y))
    train, val = episode_split(lab, rows, val_share=0.3, seed=0)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(rows)
    groups = episode_groups(lab.meta)
    assert not set(groups.iloc[train]) & set(groups.iloc[val])
    assert lab.meta["link_profile"].nunique() == 4  # the same schedule over four profiles: one group each
    per_family = pd.DataFrame({"g": groups, "f": lab.y}).groupby("f")["g"].nunique()
    assert per_family["benign"] >= 2
    for family, count in per_family.items():
        on_both = (lab.y.iloc[val] == family).any() and (lab.y.iloc[train] == family).any()
        assert on_both == (count >= 2), family  # one episode stays whole on the training side


def test_a_lab_split_sends_held_out_corpora_to_test(lab) -> None:
    both = load_lab([SAMPLE], test_corpora=[SAMPLE])
    split = cic_lab_split(both)
    half = len(lab.y)
    assert (split.test >= half).all() and len(split.test) == half
    assert (np.concatenate([split.train, split.val]) < half).all()


def test_corpus_errors_name_the_file_and_the_problem(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no lab corpus here"):
        load_lab([tmp_path / "nowhere"])
    frame = pd.read_csv(SAMPLE / "flows.csv.gz", nrows=20, low_memory=False)
    frame.loc[3, "family"] = "ransom"
    bad = tmp_path / "bad" / "flows.csv.gz"
    bad.parent.mkdir()
    with gzip.open(bad, "wt") as fh:
        frame.to_csv(fh, index=False)
    with pytest.raises(BadInputError, match=r"unknown families \['ransom'\]"):
        load_lab([bad.parent])
    with gzip.open(bad, "wt") as fh:
        frame.drop(columns=["episode_id"]).to_csv(fh, index=False)
    with pytest.raises(BadInputError, match=r"missing columns \['episode_id'\]"):
        load_lab([bad.parent])


def test_model_classes_named_by_family_map_to_their_family() -> None:
    assert [family_of_class(c) for c in LAB_CLASSES] == list(Family)


def test_lab_configs_order_by_emission_and_split_by_time_or_episode() -> None:
    cfg = TrainConfig(dataset="cic-ids2017+lab", model="hybrid-fast")
    assert cfg.order is Order.EMITTED and cfg.split is SplitKind.TIME
    assert "lab_corpora" not in cfg.key()
    assert TrainConfig(dataset="lab", model="mlp", lab_corpora=("x",)).key()["lab_corpora"] == ["x"]
    with pytest.raises(ConfigError, match="time or time-all"):
        TrainConfig(dataset="lab", model="mlp", split=SplitKind.HOST)
    with pytest.raises(ConfigError, match="holds no lab flows"):
        TrainConfig(dataset="cic-ids2017", model="mlp", lab_corpora=("x",))

"""The CIC-IDS2017 subset beside the lab's flows: classes as families, its time split kept for its rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tapwatch.models.training.data_cic import load_cic_ids2017
from tapwatch.models.training.data_lab import LAB_CLASSES, cic_as_families, cic_lab_split, load_cic_lab
from tests.support.env import REPO

SAMPLE = REPO / "lab" / "samples" / "ci-corpus"


def test_cic_classes_become_their_families(shared: Path) -> None:
    cic = load_cic_ids2017(shared / "datasets")
    fam = cic_as_families(cic)
    assert set(fam.y) == set(LAB_CLASSES)
    assert (fam.y_binary == cic.y_binary).all()
    assert fam.y[cic.y == "SSH-Patator"].eq("bruteforce").all()
    assert fam.y[cic.y == "Infiltration - Portscan"].eq("scan").all()
    assert fam.y[cic.y == "Heartbleed"].eq("webattack").all()
    order = np.argsort(fam.meta["Emitted"].to_numpy())
    assert (np.diff(fam.meta["End"].to_numpy()[order]) >= np.timedelta64(0)).all()  # CIC emits by flow end


def test_the_joined_split_keeps_cics_time_split_and_tests_held_out_corpora(shared: Path) -> None:
    ds = load_cic_lab(shared / "datasets", [SAMPLE], test_corpora=[SAMPLE])
    source, role = ds.meta["source"].to_numpy(), ds.meta["role"].to_numpy()
    split = cic_lab_split(ds)
    cic_test = split.test[source[split.test] == "cic"]
    assert len(cic_test) > 10_000 and (role[split.test[source[split.test] == "lab"]] == "test").all()
    first_test = ds.meta["Timestamp"].to_numpy()[cic_test].min()
    cic_train = split.train[source[split.train] == "cic"]
    assert (ds.meta["Timestamp"].to_numpy()[cic_train] < first_test).all()  # CIC trains on the past only
    deploy = cic_lab_split(ds, deploy=True)
    assert not (source[deploy.test] == "cic").any()  # the deployment fit trains on CIC's test part too
    assert len(deploy.train) == len(split.train) + len(cic_test)

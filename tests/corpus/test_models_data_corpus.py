"""Dataset loaders, splits and windows of tapwatch.models (issue 3, "Data") on the real datasets.

The real datasets in ../shared/datasets check shapes and class counts against each PROVENANCE.md and the
windowing rules of EVALUATION.md. Each dataset is loaded once per session (the whole module stays well under
30 s). The traps, on synthetic files: tests/unit/test_models_data.py.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapwatch.features.contract import FEATURE_NAMES, IDENTIFIER_COLUMNS
from tapwatch.features.errors import BadInputError
from tapwatch.models.training.data import (
    KDD_COLUMNS,
    UNSW_COLUMNS,
    UNSW_TTL_FEATURES,
    Dataset,
    Dedupe,
    Encoding,
    load_cic_ids2017,
    load_nsl_kdd,
    load_ton_iot,
    load_unsw_nb15,
)
from tapwatch.models.training.sequences import (
    CIC_TEST_HOSTS,
    Order,
    Split,
    Windows,
    describe_windows,
    drop_seen_in_train,
    feature_stats,
    fit_scaler,
    host_concentration,
    host_split,
    make_windows,
    predefined_split,
    shuffle_labels,
    single_label_share,
    stratified_split,
    time_split,
    window_time_spans,
)
from tests.support.env import SHARED, need

DATASETS = (SHARED / "datasets").resolve()
T = 10
NOT_FEATURES = {*IDENTIFIER_COLUMNS, "Label", "Attempted Category", "src_ip", "src_port", "dst_ip", "dst_port",
                "label", "attack_cat", "type", "difficulty"}  # fmt: skip


# ---------------------------------------------------------------- the real datasets in ../shared


@pytest.fixture(scope="session")
def root() -> Path:
    need((DATASETS / "cic-ids2017" / "SHA256SUMS").exists(), f"../shared/datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def cic(root: Path) -> Dataset:
    return load_cic_ids2017(root)


@pytest.fixture(scope="session")
def unsw(root: Path) -> Dataset:
    return load_unsw_nb15(root)


@pytest.fixture(scope="session")
def ton(root: Path) -> Dataset:
    return load_ton_iot(root)


@pytest.fixture(scope="session")
def nsl(root: Path) -> Dataset:
    return load_nsl_kdd(root)


@pytest.fixture(scope="session")
def cic_time(cic: Dataset) -> Split:
    return time_split(cic)


@pytest.fixture(scope="session")
def cic_windows(cic: Dataset, cic_time: Split) -> dict[str, Windows]:
    scaler = fit_scaler(cic.X.iloc[cic_time.train])
    return {part: make_windows(cic, rows, scaler, T) for part, rows in cic_time.parts().items()}


CIC_COUNTS = {"BENIGN": 5000, "DDoS": 5000, "DoS GoldenEye": 5000, "DoS Hulk": 5000, "Infiltration - Portscan": 5000,
              "Portscan": 5000, "FTP-Patator": 3972, "DoS Slowloris": 3859, "SSH-Patator": 2961,
              "DoS Slowhttptest": 1740, "Botnet": 736, "Web Attack - Brute Force": 73, "Infiltration": 36,
              "Web Attack - XSS": 18, "Web Attack - SQL Injection": 13, "Heartbleed": 11}  # fmt: skip
UNSW_COUNTS = {"Normal": 37000, "Generic": 18871, "Exploits": 11132, "Fuzzers": 6062, "DoS": 4089,
               "Reconnaissance": 3496, "Analysis": 677, "Backdoor": 583, "Shellcode": 378, "Worms": 44}  # fmt: skip


def test_cic_shape_classes_and_features(cic: Dataset) -> None:
    assert cic.X.shape == (43_419, 82)
    assert cic.features == FEATURE_NAMES and tuple(cic.X.columns) == FEATURE_NAMES
    assert cic.class_counts() == CIC_COUNTS
    assert cic.counts["exact_duplicates"] == 0 and cic.counts["infinite_values"] == 0
    assert len(cic.files) == 16 and all(f.verified for f in cic.files)
    assert cic.class_names[0] == "BENIGN" and len(cic.class_names) == 16
    assert cic.meta["Timestamp"].is_monotonic_increasing is False  # files are per class, not in time order
    assert (cic.X["Flow Duration"] % 1000 == 0).all()  # quantised to the sensor's resolution


def test_cic_host_concentration_as_documented(cic: Dataset) -> None:
    hosts = host_concentration(cic)
    assert len(hosts) == 16
    assert (hosts[0].host, hosts[0].rows, hosts[0].benign) == ("172.16.0.1", 32_708, 2)


def test_unsw_shape_classes_duplicates_ttl(unsw: Dataset, root: Path) -> None:
    assert len(unsw.y) == 82_332 and unsw.class_counts() == UNSW_COUNTS
    assert int(unsw.y_binary.sum()) == 45_332 and unsw.counts["label_mismatch"] == 0
    assert unsw.counts["exact_duplicates"] == 26_387 and unsw.counts["conflicting_feature_vectors"] == 575
    assert {e.column: len(e.categories) for e in unsw.encodings} == {"proto": 131, "service": 13, "state": 7}
    assert "service=-" in unsw.features and set(UNSW_TTL_FEATURES) <= set(unsw.features)
    nottl = load_unsw_nb15(root, with_ttl=False, dedupe=Dedupe.EXACT, encoding=Encoding.ORDINAL)
    assert nottl.name == "unsw-nb15-nottl" and not set(UNSW_TTL_FEATURES) & set(nottl.features)
    assert len(nottl.y) == 82_332 - 26_387 and len(nottl.features) == len(UNSW_COLUMNS) - 2 - 1 - 3


def test_ton_iot_shape_classes_missing_and_identifiers(ton: Dataset) -> None:
    assert len(ton.y) == 211_043
    assert ton.class_counts() == {"normal": 50_000, "mitm": 1_043} | {
        c: 20_000 for c in ("backdoor", "ddos", "dos", "injection", "password", "ransomware", "scanning", "xss")
    }
    assert int((ton.y_binary == 0).sum()) == 50_000 and ton.counts["label_mismatch"] == 0
    assert ton.counts["exact_duplicates"] == 20_569
    assert ton.counts["missing_values"] > 0  # "-" in numeric columns, replaced and counted
    assert not {"dns_query", "http_uri"} & set(ton.features)


def test_nsl_kdd_parts_classes_and_difficulty(nsl: Dataset) -> None:
    part = nsl.meta["part"]
    train, test = nsl.y[part == "KDDTrain+"], nsl.y[part == "KDDTest+"]
    assert (len(train), len(test)) == (125_973, 22_544)
    assert ((train == "normal").sum(), (test == "normal").sum()) == (67_343, 9_711)
    assert (train.nunique(), test.nunique()) == (23, 38)
    assert "difficulty" not in nsl.features and len(KDD_COLUMNS) == 43
    assert len(nsl.features) == 41 - 3 + 3 + 70 + 11  # one-hot, categories of KDDTrain+
    assert nsl.counts["exact_duplicates_within_files"] == 0
    assert set(nsl.meta["family"]) == {"normal", "DoS", "Probe", "R2L", "U2R"}
    split = predefined_split(nsl)
    assert len(split.test) == 22_544 and len(split.train) + len(split.val) == 125_973


def test_no_identifier_or_label_among_features(cic: Dataset, unsw: Dataset, ton: Dataset, nsl: Dataset) -> None:
    for ds in (cic, unsw, ton, nsl):
        bases = {f.split("=")[0] for f in ds.features}
        assert not bases & NOT_FEATURES, (ds.name, bases & NOT_FEATURES)
        assert np.isfinite(ds.X.to_numpy()).all(), ds.name
        assert ds.X.index.equals(pd.RangeIndex(len(ds.y)))


def test_unsw_dedupe_then_split_then_drop_seen(unsw: Dataset) -> None:
    split = drop_seen_in_train(unsw, stratified_split(unsw, seed=1))
    train_keys = set(pd.util.hash_pandas_object(unsw.X.iloc[split.train], index=False))
    test_keys = set(pd.util.hash_pandas_object(unsw.X.iloc[split.test], index=False))
    assert not train_keys & test_keys and "removed" in split.notes[-1]


def test_time_and_host_splits(cic: Dataset, cic_time: Split) -> None:
    ts = cic.meta["Timestamp"]
    assert ts.iloc[np.concatenate([cic_time.train, cic_time.val])].max() <= ts.iloc[cic_time.test].min()
    assert len(cic_time.test) == round(0.3 * len(cic.y)) and len(cic_time.val) > 0
    assert {"Portscan", "DDoS", "Botnet"} <= set(cic.y.iloc[cic_time.test]) - set(cic.y.iloc[cic_time.train])
    hosts = host_split(cic)
    src = cic.meta["Src IP"]
    assert set(src.iloc[hosts.test]) == set(CIC_TEST_HOSTS)
    assert not set(src.iloc[np.concatenate([hosts.train, hosts.val])]) & set(CIC_TEST_HOSTS)
    with pytest.raises(BadInputError, match="not source hosts"):
        host_split(cic, test_hosts=["10.9.9.9"])


def test_windows_never_cross_the_split(cic: Dataset, cic_time: Split, cic_windows: dict[str, Windows]) -> None:
    for part, rows in cic_time.parts().items():
        w = cic_windows[part]
        assert len(w.y) == len(rows) and set(w.rows[:, -1]) == set(rows)  # one window per flow, stride 1
        used = w.rows[w.rows >= 0]
        assert np.isin(used, rows).all(), part


def test_windows_are_per_host_time_ordered_runs(cic: Dataset, cic_windows: dict[str, Windows]) -> None:
    t = cic.meta["Timestamp"].to_numpy()
    src = cic.meta["Src IP"].to_numpy()
    order = np.lexsort((np.arange(len(t)), t, pd.factorize(src)[0]))
    position = np.empty(len(t), dtype=np.int64)
    position[order] = np.arange(len(t))
    w = cic_windows["train"]
    full = w.rows[w.valid_length == T]
    assert (src[full] == src[full[:, -1:]]).all()  # one host per window
    assert (np.diff(position[full], axis=1) == 1).all()  # consecutive flows of that host, nothing skipped


def test_padding_valid_length_and_last_flow_label(cic: Dataset, cic_windows: dict[str, Windows]) -> None:
    w = cic_windows["test"]
    assert w.X.dtype == np.float32 and w.X.shape == (len(w.y), T, 82)
    assert w.y.dtype == np.int64 and w.class_names == cic.class_names
    short = np.flatnonzero(w.valid_length < T)
    assert len(short) > 0
    for i in short[:50]:
        pad = T - w.valid_length[i]
        assert (w.rows[i, :pad] == -1).all() and (w.rows[i, pad:] >= 0).all()
        assert not w.X[i, :pad].any()
    names = np.asarray(w.class_names)
    assert (names[w.y] == cic.y.to_numpy()[w.rows[:, -1]]).all()
    assert (w.y_binary == cic.y_binary[w.rows[:, -1]]).all()
    assert w.flat().shape == (len(w.y), T * 82)


def test_order_shuffle_control(cic: Dataset, cic_time: Split, cic_windows: dict[str, Windows]) -> None:
    scaler = fit_scaler(cic.X.iloc[cic_time.train])
    timed = cic_windows["test"]
    shuffled = make_windows(cic, cic_time.test, scaler, T, Order.SHUFFLED, seed=3)
    assert sorted(shuffled.rows[:, -1]) == sorted(timed.rows[:, -1])  # same flows, one window each
    src = cic.meta["Src IP"].to_numpy()
    full = shuffled.rows[shuffled.valid_length == T]
    assert (src[full] == src[full[:, -1:]]).all()  # still one host per window
    t = cic.meta["Timestamp"].to_numpy()
    in_order = (np.diff(t[full], axis=1) >= np.timedelta64(0)).all(axis=1).mean()
    assert in_order < 0.5
    assert single_label_share(cic, shuffled)["multi"] < single_label_share(cic, timed)["multi"]
    assert window_time_spans(cic, shuffled)["p50"] > window_time_spans(cic, timed)["p50"]


def test_end_order_follows_flow_ends(cic: Dataset, cic_time: Split, cic_windows: dict[str, Windows]) -> None:
    scaler = fit_scaler(cic.X.iloc[cic_time.train])
    by_end = make_windows(cic, cic_time.test, scaler, T, Order.END)
    end = cic.meta["End"].to_numpy()
    full = by_end.rows[by_end.valid_length == T]
    assert (np.diff(end[full], axis=1) >= np.timedelta64(0)).all()
    assert sorted(by_end.rows[:, -1]) == sorted(cic_windows["test"].rows[:, -1])


def test_label_shuffle_control(cic_windows: dict[str, Windows]) -> None:
    w = cic_windows["train"]
    s = shuffle_labels(w, seed=0)
    assert s.X is w.X and sorted(s.y) == sorted(w.y)
    assert (s.y != w.y).mean() > 0.5
    names = np.asarray(s.class_names)
    assert ((names[s.y] == names[0]) == (s.y_binary == 0)).all()  # class and binary label move together


def test_report_helpers(cic: Dataset, cic_windows: dict[str, Windows]) -> None:
    facts = describe_windows(cic, cic_windows["train"])
    spans = facts["time_spans_s"]
    assert spans["p0"] >= 0 and spans["p50"] <= spans["p90"] <= spans["p100"]
    assert facts["time_spans_s_benign"]["p50"] > facts["time_spans_s_attack"]["p50"]
    share = facts["single_label_share"]
    assert 0.9 < share["multi"] <= 1.0
    per_flow = make_windows(cic, np.arange(100), fit_scaler(cic.X))
    assert single_label_share(cic, per_flow)["all"] == 1.0
    assert window_time_spans(cic, per_flow)["windows_multi"] == 0


def test_feature_stats_for_the_card(cic: Dataset, cic_time: Split) -> None:
    stats = feature_stats(cic.X.iloc[cic_time.train])
    assert [s.feature for s in stats] == list(FEATURE_NAMES)
    for s in stats:
        q = [s.quantiles[k] for k in ("p1", "p5", "p25", "p50", "p75", "p95", "p99")]
        assert q == sorted(q) and math.isfinite(s.mean) and s.std >= 0

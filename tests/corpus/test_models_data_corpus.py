"""Dataset loaders, splits and windows of tapwatch.models (issue 3, "Data").

Synthetic CSVs in ``tmp_path`` cover the traps (schema errors, BOM and CRLF, label spellings, inf and
missing values, duplicates); the real datasets in ../shared/datasets check shapes and class counts
against each PROVENANCE.md and the windowing rules of EVALUATION.md. Each dataset is loaded once per
session (the whole module stays well under 30 s).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapwatch.capture.flowcsv import HEADER as FLOWS_HEADER
from tapwatch.features.card import identity_card
from tapwatch.features.contract import FEATURE_NAMES, IDENTIFIER_COLUMNS
from tapwatch.features.errors import BadInputError
from tapwatch.features.window import Windower
from tapwatch.models.training.data import (
    CIC_COLUMNS,
    KDD_COLUMNS,
    ORIGINAL_TO_CORRECTED,
    UNSW_COLUMNS,
    UNSW_TTL_FEATURES,
    Dataset,
    Dedupe,
    Encoding,
    load_cic_ids2017,
    load_nsl_kdd,
    load_ton_iot,
    load_unsw_nb15,
    map_cic_columns,
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
    scale_features,
    shuffle_labels,
    signed_log1p,
    single_label_share,
    stratified_split,
    time_split,
    window_time_spans,
)
from tests.conftest import need

DATASETS = (Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets").resolve()
T = 10
NOT_FEATURES = {*IDENTIFIER_COLUMNS, "Label", "Attempted Category", "src_ip", "src_port", "dst_ip", "dst_port",
                "label", "attack_cat", "type", "difficulty"}  # fmt: skip
ORIGINAL_LACKS = ("Fwd RST Flags", "Bwd RST Flags", "ICMP Code", "ICMP Type", "Total TCP Flow Time")


# ---------------------------------------------------------------- synthetic files (no ../shared needed)


def write_csv(path: Path, header: list[str], rows: list[list[str]], bom: bool = True, crlf: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    eol = "\r\n" if crlf else "\n"
    text = eol.join(",".join(r) for r in [header, *rows]) + eol
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode())
    return path


def cic_row(row_id: int, label: str, src: str = "10.0.0.1", ts: str = "2017-07-03 11:57:51.590705") -> list[str]:
    values = {c: "1" for c in CIC_COLUMNS}
    values |= {"id": str(row_id), "Flow ID": f"{src}-10.0.0.2-1-80-6", "Src IP": src, "Dst IP": "10.0.0.2",
               "Timestamp": ts, "Label": label, "Attempted Category": "-1", "Flow Duration": "1499"}  # fmt: skip
    return [values[c] for c in CIC_COLUMNS]


def cic_root(tmp_path: Path, rows: list[list[str]], header: list[str] | None = None) -> Path:
    folder = tmp_path / "cic-ids2017" / "engelen_improved_sample_rnd5000"
    write_csv(folder / "part.csv", header or list(CIC_COLUMNS), rows)
    return tmp_path


def test_schema_error_names_missing_and_unexpected_columns(tmp_path: Path) -> None:
    header = [c for c in UNSW_COLUMNS if c != "sttl"] + ["srcip"]
    write_csv(tmp_path / "unsw-nb15" / "UNSW_NB15_testing-set.csv", header, [["1"] * len(header)])
    with pytest.raises(BadInputError) as err:
        load_unsw_nb15(tmp_path)
    assert "missing columns ['sttl']" in str(err.value)
    assert "unexpected columns ['srcip']" in str(err.value)
    assert "UNSW_NB15_testing-set.csv" in err.value.subject


def test_cic_schema_error(tmp_path: Path) -> None:
    header = [c for c in CIC_COLUMNS if c != "Flow IAT Max"] + ["Fwd Header Length.1"]
    row = cic_row(1, "BENIGN")
    del row[CIC_COLUMNS.index("Flow IAT Max")]
    with pytest.raises(BadInputError, match=r"missing columns \['Flow IAT Max'\].*unexpected columns \['Fwd Header"):
        load_cic_ids2017(cic_root(tmp_path, [[*row, "0"]], header))


def test_nsl_kdd_field_count_error(tmp_path: Path) -> None:
    write_csv(tmp_path / "nsl-kdd" / "KDDTrain+.txt", ["0"] * 42, [], bom=False)
    with pytest.raises(BadInputError, match=r"expected 43 fields .* found 42"):
        load_nsl_kdd(tmp_path)


def kdd_row(service: str, label: str) -> list[str]:
    row = ["0", "tcp", service, "SF", *["0"] * 37, label, "21"]
    assert len(row) == len(KDD_COLUMNS)
    return row


def test_nsl_kdd_categories_from_train_only(tmp_path: Path) -> None:
    folder = tmp_path / "nsl-kdd"
    write_csv(folder / "KDDTrain+.txt", kdd_row("http", "normal"), [kdd_row("ftp", "neptune.")], bom=False)
    write_csv(folder / "KDDTest+.txt", kdd_row("http", "normal"), [kdd_row("gopher", "mscan")], bom=False)
    ds = load_nsl_kdd(tmp_path, encoding=Encoding.ORDINAL)
    assert ds.y.tolist() == ["normal", "neptune", "normal", "mscan"]
    assert ds.meta["family"].tolist() == ["normal", "DoS", "normal", "Probe"]
    assert ds.encodings[1].categories == ("ftp", "http")
    assert ds.X["service"].tolist() == [1.0, 0.0, 1.0, -1.0]  # "gopher" is unseen in KDDTrain+
    assert ds.counts["unknown_categories"] == 1 and "difficulty" not in ds.features


def test_cic_traps_bom_crlf_labels_inf_missing_duplicates(tmp_path: Path) -> None:
    rows = [cic_row(1, "BENIGN"), cic_row(2, "PortScan"), cic_row(3, "Web Attack – Brute Force"),
            cic_row(4, "Bot"), cic_row(5, "FTP-Patator - Attempted"), cic_row(6, "Benign")]  # fmt: skip
    rows[1][CIC_COLUMNS.index("Flow Bytes/s")] = "Infinity"
    rows[2][CIC_COLUMNS.index("Flow IAT Min")] = ""
    dup = list(rows[0])
    dup[0] = "7"  # same flow, another row id: an exact duplicate
    ds = load_cic_ids2017(cic_root(tmp_path, [*rows, dup]), quantize=False)
    assert ds.y.tolist() == ["BENIGN", "Portscan", "Web Attack - Brute Force", "Botnet", "BENIGN", "BENIGN", "BENIGN"]
    assert ds.y_binary.tolist() == [0, 1, 1, 1, 0, 0, 0]
    assert ds.counts["infinite_values"] == 1 and ds.counts["missing_values"] == 1
    assert ds.counts["exact_duplicates"] == 1 and ds.counts["attempted_relabelled"] == 1
    assert np.isfinite(ds.X.to_numpy()).all()
    assert ds.features == FEATURE_NAMES and ds.meta.columns.tolist() == ["Src IP", "Timestamp", "End"]
    assert any("±inf" in s for s in ds.steps) and any("Attempted" in s for s in ds.steps)
    assert not ds.files[0].verified  # no SHA256SUMS beside the file
    deduped = load_cic_ids2017(cic_root(tmp_path, [*rows, dup]), quantize=False, dedupe=Dedupe.EXACT)
    assert len(deduped.y) == 6 and deduped.counts["dropped_duplicates"] == 1


def test_cic_quantize_is_the_sensors(tmp_path: Path) -> None:
    ds = load_cic_ids2017(cic_root(tmp_path, [cic_row(1, "BENIGN")]))
    assert ds.X.loc[0, "Flow Duration"] == 1000.0  # 1499 µs -> the sensor's 1 ms resolution
    assert ds.X.loc[0, "Flow Packets/s"] == 2000.0  # recomputed from the rounded duration
    bad = cic_row(2, "Not A Class")
    with pytest.raises(BadInputError, match="unknown labels"):
        load_cic_ids2017(cic_root(tmp_path, [bad]))


def test_original_release_headers_map_to_corrected_names() -> None:
    inverse = {v: k for k, v in ORIGINAL_TO_CORRECTED.items()}
    original = [" " + inverse.get(f, f) for f in FEATURE_NAMES if f not in ORIGINAL_LACKS]
    original.insert(40, " Fwd Header Length.1")
    mapping = map_cic_columns([" Destination Port", *original, " Label"])
    assert mapping.duplicates == (" Fwd Header Length.1",)
    assert mapping.missing_features == ORIGINAL_LACKS
    assert mapping.rename[" Destination Port"] == "Dst Port" and mapping.rename[" Label"] == "Label"
    assert mapping.rename[" Total Backward Packets"] == "Total Bwd packets"
    assert mapping.rename[" CWE Flag Count"] == "CWR Flag Count"
    corrected = map_cic_columns(CIC_COLUMNS)
    assert corrected.rename == {c: c for c in CIC_COLUMNS} and not corrected.missing_features
    flows = map_cic_columns(FLOWS_HEADER)  # tapwatch's own `flows` output
    assert not flows.missing_features and "community_id" in flows.unknown


def test_toy_windows_padding_and_flat_data_is_per_flow() -> None:
    ds = Dataset.from_frame("toy", pd.DataFrame({"a": [0.0, 1.0, 2.0]}), pd.Series(["n", "x", "n"]), "n")
    w = make_windows(ds, np.arange(3), fit_scaler(ds.X))
    assert w.X.shape == (3, 1, 1) and w.valid_length.tolist() == [1, 1, 1]
    with pytest.raises(BadInputError, match="per-flow"):
        make_windows(ds, np.arange(3), fit_scaler(ds.X), length=5)


def test_scaler_matches_the_sensor_windower() -> None:
    rng = np.random.default_rng(0)
    x = rng.lognormal(5, 3, size=(200, len(FEATURE_NAMES))) * rng.choice([-1, 1], size=(200, len(FEATURE_NAMES)))
    x[:, 3] = 7.0  # a constant feature
    scaler = fit_scaler(x)
    assert scaler.scale[3] == 1.0
    assert np.allclose(scaler.center, signed_log1p(x).mean(axis=0))
    card = identity_card(T).model_copy(update={"scaler": scaler})
    windower = Windower(card)
    ours = scale_features(x[:5], scaler)
    assert ours.dtype == np.float32
    for i in range(5):
        assert np.array_equal(ours[i], windower.scale(tuple(float(v) for v in x[i])))


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

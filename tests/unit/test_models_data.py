"""Dataset loaders, splits and windows of tapwatch.models (issue 3, "Data") on synthetic files.

Synthetic CSVs in ``tmp_path`` cover the traps (schema errors, BOM and CRLF, label spellings, inf and
missing values, duplicates); the real datasets in ../shared/datasets: tests/corpus/test_models_data_corpus.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tapwatch.capture.flowcsv import HEADER as FLOWS_HEADER
from tapwatch.features.card import identity_card
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import BadInputError
from tapwatch.features.window import Windower
from tapwatch.models.training.data import (
    CIC_COLUMNS,
    KDD_COLUMNS,
    ORIGINAL_TO_CORRECTED,
    UNSW_COLUMNS,
    Dataset,
    Dedupe,
    Encoding,
    load_cic_ids2017,
    load_nsl_kdd,
    load_unsw_nb15,
    map_cic_columns,
)
from tapwatch.models.training.sequences import fit_scaler, make_windows, scale_features, signed_log1p

T = 10
ORIGINAL_LACKS = ("Fwd RST Flags", "Bwd RST Flags", "ICMP Code", "ICMP Type", "Total TCP Flow Time")


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

"""``tapwatch score`` (issue 3, "Scoring flows"): header variants, windows, model choice and bad input, on rows
of ../shared (the shipped deployment model on ``tapwatch flows`` output: tests/unit/test_score.py).

Fixtures are built in ``tmp_path`` at run time: rows of the corrected CIC-IDS2017 subset in ../shared
(never copied into the repository), renamed into the original release's spellings where needed, and tiny
ONNX models with their cards (:mod:`tests.support.tiny_model`, over all 82 features or over a subset).
Expected scores come from an independent path: the dataset loader, the sensor's ``Windower`` (or a plain
per-host deque) and the model itself.
"""

from __future__ import annotations

import csv
import gzip
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from tapwatch.app.cli import main
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.features.contract import (
    FEATURE_NAMES,
    IDENTIFIER_COLUMNS,
    ORIGINAL_FEATURE_NAMES,
    ORIGINAL_RELEASE_LACKS,
)
from tapwatch.features.resolution import quantize_columns
from tapwatch.inference.model import Model, load_model
from tapwatch.models.scoring.score import OUTPUT_COLUMNS, shipped_models
from tapwatch.models.training.data import CIC_COLUMNS, ORIGINAL_TO_CORRECTED, Dataset, load_cic_ids2017
from tapwatch.models.training.data_scaling import fit_scaler, scale_features
from tests.support.env import CIC_SUBSET, need
from tests.support.scoring import (
    DEPLOYMENT,
    MLCVE_MODEL,
    ORIGINAL_MODEL,
    SAMPLE_PCAP,
    attack_scores,
    score,
    scored,
    shipped_session,
    windower_scores,
)
from tests.support.tiny_model import TinySpec, write_tiny_model

T = 4
ORIGINAL_LACKS = ORIGINAL_RELEASE_LACKS
F77 = ORIGINAL_FEATURE_NAMES
F76 = tuple(f for f in F77 if f != "Protocol")  # MachineLearningCVE has no Protocol column either
# Rows per class file: class-grouped, so the file is not in time order and hosts interleave.
PICK = {"Botnet_736.csv.gz": 12, "BENIGN_5000.csv.gz": 25, "Portscan_5000.csv.gz": 10, "DoS_Hulk_5000.csv.gz": 8}
INVERSE = {v: k for k, v in ORIGINAL_TO_CORRECTED.items()}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def rows() -> pd.DataFrame:
    need(CIC_SUBSET.is_dir(), f"the CIC-IDS2017 subset is not at {CIC_SUBSET}")
    parts = [pd.read_csv(CIC_SUBSET / name, nrows=n, dtype=str, keep_default_na=False) for name, n in PICK.items()]
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def loaded(rows: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """The fixture rows through the dataset loader (cleaned, quantised): the reference features."""
    root = tmp_path_factory.mktemp("cic")
    write_frame(root / "cic-ids2017" / "engelen_improved_sample_rnd5000" / "part.csv", rows)
    return load_cic_ids2017(root)


def write_frame(path: Path, frame: pd.DataFrame, header: Sequence[str] | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(header or list(frame.columns))
        w.writerows(frame.itertuples(index=False, name=None))
    return path


def write_fitted_model(directory: Path, name: str, features: tuple[str, ...], ds: Dataset) -> Path:
    """The tiny model over ``features`` as ``NAME.onnx`` and ``NAME.card.json``, its scaler fitted on the rows."""
    scaler = fit_scaler(ds.X[list(features)])
    spec = TinySpec(name=name, window_length=T, features=features, card={"scaler": scaler}, card_suffix=".card.json")
    return write_tiny_model(directory, spec).onnx_path


@pytest.fixture
def models(tmp_path: Path, loaded: Dataset) -> Path:
    """A models directory holding the (tiny) deployment model only."""
    write_fitted_model(tmp_path / "models", "hybrid-cic", FEATURE_NAMES, loaded)
    return tmp_path / "models"


def deque_scores(model: Model, x: np.ndarray, keys: Sequence[str] | None, times: Sequence[Any]) -> np.ndarray:
    """Per-host windows with a plain deque per host (``keys=None``: each flow alone), then the model."""
    scaled = scale_features(x, model.card.scaler)
    t = model.card.window_length
    windows = np.zeros((len(x), t, scaled.shape[1]), dtype=np.float32)
    history: dict[str, deque[np.ndarray]] = defaultdict(lambda: deque(maxlen=t))
    for i in sorted(range(len(x)), key=lambda i: (times[i], i)):
        if keys is None:
            past: Sequence[np.ndarray] = [scaled[i]]
        else:
            history[keys[i]].append(scaled[i])
            past = history[keys[i]]
        windows[i, t - len(past) :] = np.stack(past)
    return attack_scores(model, windows)


def original_release(rows: pd.DataFrame, identifiers: bool = True) -> tuple[pd.DataFrame, list[str]]:
    """The rows in the original release's layout: TrafficLabelling (identifiers) or MachineLearningCVE."""
    keep = [c for c in CIC_COLUMNS if c not in (*ORIGINAL_LACKS, "id", "Attempted Category")]
    if not identifiers:
        keep = ["Dst Port"] + [c for c in keep if c not in (*IDENTIFIER_COLUMNS, "Protocol")]
    frame = rows[keep].copy()
    stamps = pd.to_datetime(frame["Timestamp"], format="ISO8601") if identifiers else None
    if stamps is not None:  # the original release writes day/month/year and whole seconds
        frame["Timestamp"] = [f"{s.day}/{s.month}/{s.year} {s.hour}:{s.minute:02d}:{s.second:02d}" for s in stamps]
    header = [(" " if c != "Flow ID" else "") + INVERSE.get(c, c) for c in keep]
    at = keep.index("Bwd Segment Size Avg") + 1  # the release repeats Fwd Header Length here
    frame.insert(at, "dup", frame["Fwd Header Length"])
    header.insert(at, " Fwd Header Length")
    return frame, header


# ---------------------------------------------------------------- header variants and windows


def test_corrected_release_per_host_matches_the_sensor_windower(
    rows: pd.DataFrame, loaded: Dataset, models: Path, tmp_path: Path
) -> None:
    src, out = write_frame(tmp_path / "flows.csv", rows), tmp_path / "out.csv"
    result = score(src, "--models-dir", models, "-o", out)
    got = scored(result, out)
    assert list(got.columns) == [*rows.columns, *OUTPUT_COLUMNS]
    assert got[list(rows.columns)].equals(rows)  # every input row written back unchanged, in file order
    assert set(got["window_mode"]) == {"per_host"} and "window_mode=per_host" in result.stderr
    assert "model hybrid-cic 1" in result.stderr and "quantised" in result.stderr
    model = load_model(models / "hybrid-cic.onnx")
    order = np.lexsort((np.arange(len(rows)), loaded.meta["Timestamp"].to_numpy()))
    expected = windower_scores(model, loaded.X.to_numpy(), list(loaded.meta["Src IP"]), order.tolist())
    assert np.allclose(got["score"].astype(float), expected, atol=1e-6)
    assert got["window_flows"].astype(int).max() == T and got["window_flows"].astype(int).min() == 1
    assert set(got["predicted_class"]) <= set(model.card.class_names) and len(set(got["score"])) > 5


def test_without_hosts_and_times_each_flow_is_scored_alone(
    rows: pd.DataFrame, loaded: Dataset, models: Path, tmp_path: Path
) -> None:
    bare = rows.drop(columns=[c for c in IDENTIFIER_COLUMNS])
    out = tmp_path / "out.csv"
    result = score(write_frame(tmp_path / "flows.csv", bare), "--models-dir", models, "-o", out)
    got = scored(result, out)
    assert set(got["window_mode"]) == {"single_flow"} and set(got["window_flows"]) == {"1"}
    assert "window_mode=single_flow" in result.stderr and "no Src IP or Timestamp" in result.stderr
    model = load_model(models / "hybrid-cic.onnx")
    expected = deque_scores(model, loaded.X.to_numpy(), None, range(len(rows)))
    assert np.allclose(got["score"].astype(float), expected, atol=1e-6)


def test_original_release_uses_the_shipped_variant_without_its_five_missing_features(
    rows: pd.DataFrame, loaded: Dataset, models: Path, tmp_path: Path
) -> None:
    frame, header = original_release(rows)
    src, out = write_frame(tmp_path / "orig.csv", frame, header), tmp_path / "out.csv"
    result = score(src, "--models-dir", models, "-o", out)
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert str(list(ORIGINAL_LACKS)) in result.stderr and "no shipped model fits" in result.stderr
    write_fitted_model(models, "hybrid-cic-77", F77, loaded)
    write_fitted_model(models, "lunet-cic", FEATURE_NAMES, loaded)
    result = score(src, "--models-dir", models, "-o", out)
    got = scored(result, out)
    assert "model hybrid-cic-77 1" in result.stderr and "original CIC-IDS2017 release" in result.stderr
    assert set(got["model"]) == {"hybrid-cic-77"} and set(got["window_mode"]) == {"per_host"}
    assert next(csv.reader(out.open()))[: len(header)] == header  # leading spaces and the repeated column kept
    model = load_model(models / "hybrid-cic-77.onnx")
    times = pd.to_datetime(frame["Timestamp"], dayfirst=True, format="mixed").to_numpy()
    expected = deque_scores(model, loaded.X[list(F77)].to_numpy(), list(rows["Src IP"]), times)
    assert np.allclose(got["score"].astype(float), expected, atol=1e-6)
    explicit = score(src, "--models-dir", models, "--model", "hybrid-cic", "-o", out)
    assert explicit.exit_code == 2 and "that model hybrid-cic needs" in explicit.stderr
    assert "shipped model hybrid-cic-77 fits" in explicit.stderr


def test_original_machine_learning_files_lack_protocol_and_identifiers(
    rows: pd.DataFrame, loaded: Dataset, models: Path, tmp_path: Path
) -> None:
    frame, header = original_release(rows, identifiers=False)
    src, out = write_frame(tmp_path / "ml.csv", frame, header), tmp_path / "out.csv"
    write_fitted_model(models, "hybrid-cic-77", F77, loaded)
    result = score(src, "--models-dir", models, "-o", out)  # the columns the closest model lacks are listed
    assert result.exit_code == 2 and "missing feature columns ['Protocol'] that hybrid-cic-77 needs" in result.stderr
    write_fitted_model(models, "hybrid-cic-76", F76, loaded)
    result = score(src, "--models-dir", models, "-o", out)
    got = scored(result, out)
    assert set(got["model"]) == {"hybrid-cic-76"} and set(got["window_mode"]) == {"single_flow"}
    expected = deque_scores(load_model(models / "hybrid-cic-76.onnx"), loaded.X[list(F76)].to_numpy(), None,
                            range(len(rows)))  # fmt: skip
    assert np.allclose(got["score"].astype(float), expected, atol=1e-6)


def test_tapwatch_flows_output_end_to_end(models: Path, tmp_path: Path) -> None:
    flows = tmp_path / "flows.csv"
    made = CliRunner().invoke(main, ["flows", str(SAMPLE_PCAP), "-o", str(flows)])
    assert made.exit_code == 0, made.output
    out = tmp_path / "out.csv"
    result = score(flows, "--models-dir", models, "-o", out)
    got = scored(result, out)
    assert "tapwatch flows output; time features kept" in result.stderr and set(got["window_mode"]) == {"per_host"}
    records = list(PcapSource([str(SAMPLE_PCAP)], CaptureConfig(), CaptureMetrics(CollectorRegistry())))
    assert len(records) == len(got) > 100
    model = load_model(models / "hybrid-cic.onnx")
    values = np.array([r.values for r in records])
    hosts = [r.meta.src_ip for r in records]
    by_time = sorted(range(len(records)), key=lambda i: (records[i].meta.first_seen_ms, i))
    assert np.allclose(got["score"].astype(float), windower_scores(model, values, hosts, by_time), atol=1e-6)
    # Why the sensor's output is not quantised again: its IAT means and stds are not whole milliseconds.
    frame = pd.DataFrame(values, columns=list(FEATURE_NAMES))
    again = frame.copy()
    quantize_columns(again)
    changed = {c for c in FEATURE_NAMES if not np.allclose(again[c], frame[c], rtol=1e-12)}
    assert changed and all(" IAT Mean" in c or " IAT Std" in c for c in changed), changed


# ---------------------------------------------------------------- values, chunks, model choice


def test_inf_nan_and_dash_are_counted_replaced_and_kept_as_text(
    rows: pd.DataFrame, models: Path, tmp_path: Path
) -> None:
    dirty = rows.copy()
    dirty.loc[0, "Flow Bytes/s"], dirty.loc[1, "Flow Packets/s"] = "Infinity", "NaN"
    dirty.loc[2, "Flow IAT Min"], dirty.loc[3, "Idle Max"] = "-", ""
    out = tmp_path / "out.csv"
    got = scored(result := score(write_frame(tmp_path / "d.csv", dirty), "--models-dir", models, "-o", out), out)
    assert "replaced 3 missing ('-', empty, NaN) and 1 ±inf" in result.stderr
    assert [got.loc[0, "Flow Bytes/s"], got.loc[1, "Flow Packets/s"], got.loc[2, "Flow IAT Min"]] == [
        "Infinity",
        "NaN",
        "-",
    ]
    assert got["score"].astype(float).notna().all()
    bad = rows.copy()
    bad.loc[4, "Flow Duration"] = "abc"
    result = score(write_frame(tmp_path / "b.csv", bad), "--models-dir", models, "-o", out)
    assert result.exit_code == 2 and "'Flow Duration' holds non-numeric values ['abc']" in result.stderr


def test_chunks_and_rescoring_give_the_same_rows(rows: pd.DataFrame, models: Path, tmp_path: Path) -> None:
    src = write_frame(tmp_path / "flows.csv", rows)
    whole, small, again = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.csv"
    assert score(src, "--models-dir", models, "-o", whole).exit_code == 0
    assert score(src, "--models-dir", models, "--chunk-rows", 7, "-o", small).exit_code == 0
    assert whole.read_bytes() == small.read_bytes()
    result = score(whole, "--models-dir", models, "-o", again)  # a scored file: our columns are replaced
    assert result.exit_code == 0 and "own ['predicted_class', 'score'," in result.stderr
    assert again.read_bytes() == whole.read_bytes()


def test_model_order_and_explicit_paths(loaded: Dataset, rows: pd.DataFrame, tmp_path: Path) -> None:
    d = tmp_path / "models"
    for name, feats in (("seq2seq-cic", FEATURE_NAMES), ("hybrid-cic-77", F77), ("hybrid-cic", FEATURE_NAMES),
                        ("hybrid-cic-76", F76), ("aaa", F77)):  # fmt: skip
        write_fitted_model(d, name, feats, loaded)
    (d / "orphan.onnx").write_bytes(b"no card beside it")
    (d / "broken.onnx").write_bytes(b"x")
    (d / "broken.card.json").write_text("{}")
    notes: list[str] = []
    order = [p.stem for p, _ in shipped_models(d, notes)]
    assert order == ["hybrid-cic", "hybrid-cic-77", "hybrid-cic-76", "seq2seq-cic", "aaa"]
    assert len(notes) == 1 and "broken.onnx" in notes[0]
    src, out = write_frame(tmp_path / "flows.csv", rows), tmp_path / "out.csv"
    result = score(src, "--models-dir", d, "--model", d / "seq2seq-cic.onnx", "-o", out)
    assert set(scored(result, out)["model"]) == {"seq2seq-cic"} and "named by --model" in result.stderr
    assert score(src, "--models-dir", d, "--model", "nope", "-o", out).exit_code == 2
    empty = tmp_path / "none"
    empty.mkdir()
    result = score(src, "--models-dir", empty, "-o", out)
    assert result.exit_code == 2 and "no shipped model" in result.stderr


# ---------------------------------------------------------------- bad input


def test_missing_feature_columns_are_listed(rows: pd.DataFrame, models: Path, tmp_path: Path) -> None:
    src = write_frame(tmp_path / "f.csv", rows.drop(columns=["Flow IAT Max", "ACK Flag Count"]))
    result = score(src, "--models-dir", models, "-o", tmp_path / "out.csv")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "missing feature columns ['Flow IAT Max', 'ACK Flag Count']" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.csv", "models"]  # no result, no temporary file


def _ragged(path: Path, rows: pd.DataFrame) -> None:
    write_frame(path, rows.head(3))
    with path.open("a") as fh:
        fh.write(",".join(["1"] * (len(rows.columns) + 4)) + "\n")


WRONG: dict[str, tuple[Callable[[Path, pd.DataFrame], Any], str]] = {
    "empty": (lambda p, r: p.write_bytes(b""), "the file is empty"),
    "pcap": (lambda p, r: p.write_bytes(SAMPLE_PCAP.read_bytes()), "binary data, not a CSV"),
    "gzip": (lambda p, r: p.write_bytes(gzip.compress(b"a,b\n1,2\n")), "binary data, not a CSV"),
    "text": (lambda p, r: p.write_text("hello,world\nthis is,not flows\n"), "not a CICFlowMeter-style CSV"),
    "latin1": (lambda p, r: p.write_bytes("Flow Duration,Étiquette\n1,2\n".encode("latin-1")), "not UTF-8"),
    "header only": (lambda p, r: write_frame(p, r.head(0)), "a header but no flow rows"),
    "ragged": (_ragged, "Expected"),
}


@pytest.mark.parametrize("kind", list(WRONG))
def test_wrong_files_exit_2_with_one_line(kind: str, rows: pd.DataFrame, models: Path, tmp_path: Path) -> None:
    make, message = WRONG[kind]
    path = tmp_path / "in.csv"
    make(path, rows)
    result = score(path, "--models-dir", models, "-o", tmp_path / "out.csv")
    assert result.exit_code == 2, result.output
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists()


def test_size_limit(rows: pd.DataFrame, models: Path, tmp_path: Path) -> None:
    src = write_frame(tmp_path / "f.csv", rows)
    result = score(src, "--models-dir", models, "--max-size-mb", 0.01, "-o", tmp_path / "out.csv")
    assert result.exit_code == 2 and "over the 0.01 MB limit (--max-size-mb)" in result.stderr


# ---------------------------------------------------------------- the shipped models, each header variant


def variant_csv(kind: str, rows: pd.DataFrame, tmp_path: Path) -> tuple[Path, pd.DataFrame]:
    """A fixture CSV of ``kind`` and the frame written (original spellings: renamed subset rows)."""
    if kind == "corrected":
        return write_frame(tmp_path / f"{kind}.csv", rows), rows
    if kind == "corrected, no identifiers":
        bare = rows.drop(columns=list(IDENTIFIER_COLUMNS))
        return write_frame(tmp_path / "bare.csv", bare), bare
    if kind == "original MachineLearningCVE":
        frame, header = original_release(rows, identifiers=False)
        return write_frame(tmp_path / "ml.csv", frame, header), frame
    frame, header = original_release(rows)
    if kind == "original, no Src IP or Timestamp":
        cut = [i for i, h in enumerate(header) if h.strip() not in ("Source IP", "Timestamp")]
        frame, header = frame.iloc[:, cut], [header[i] for i in cut]
    return write_frame(tmp_path / "orig.csv", frame, header), frame


SHIPPED_CASES = {  # fixture -> (model score picks, window mode)
    "corrected": (DEPLOYMENT, "per_host"),
    "corrected, no identifiers": (DEPLOYMENT, "single_flow"),
    "original": (ORIGINAL_MODEL, "per_host"),
    "original, no Src IP or Timestamp": (ORIGINAL_MODEL, "single_flow"),
    "original MachineLearningCVE": (MLCVE_MODEL, "single_flow"),
}


@pytest.mark.parametrize("kind", list(SHIPPED_CASES))
def test_shipped_models_score_each_header_variant(
    kind: str, rows: pd.DataFrame, loaded: Dataset, tmp_path: Path
) -> None:
    name, mode = SHIPPED_CASES[kind]
    model = shipped_session(name)
    src, frame = variant_csv(kind, rows, tmp_path)
    out = tmp_path / "out.csv"
    result = score(src, "-o", out)  # the installed models directory, as a user runs it
    got = scored(result, out)
    assert f"model {name} {model.card.version}" in result.stderr and f"window_mode={mode}" in result.stderr
    assert "the first shipped model whose" in result.stderr
    assert set(got["model"]) == {name} and set(got["window_mode"]) == {mode} and len(got) == len(rows)
    assert ("original CIC-IDS2017 release" in result.stderr) == kind.startswith("original")
    x = loaded.X[list(model.card.features)].to_numpy()
    if mode == "per_host":
        keys = list(rows["Src IP"])
        times = loaded.meta["Timestamp"].to_numpy() if kind == "corrected" else (
            pd.to_datetime(frame["Timestamp"], dayfirst=True, format="mixed").to_numpy())  # fmt: skip
        expected = deque_scores(model, x, keys, times)
        assert got["window_flows"].astype(int).max() > 1
    else:
        expected = deque_scores(model, x, None, range(len(rows)))
        assert set(got["window_flows"]) == {"1"}
    assert np.allclose(got["score"].astype(float), expected, atol=1e-5)
    if mode == "per_host":  # the windows the models were trained on (single-flow windows are far rarer there)
        flagged = got["score"].astype(float) >= model.card.thresholds["attack_score"]
        attack = (rows["Label"] != "BENIGN").to_numpy()
        assert (flagged == attack).mean() >= 0.8, list(zip(rows["Label"], got["predicted_class"], strict=True))


def test_a_csv_no_shipped_model_fits_names_the_columns_the_closest_one_lacks(
    rows: pd.DataFrame, tmp_path: Path
) -> None:
    shipped_session(MLCVE_MODEL)
    frame, header = original_release(rows, identifiers=False)
    cut = [i for i, h in enumerate(header) if h.strip() != "Flow IAT Max"]
    src = write_frame(tmp_path / "ml.csv", frame.iloc[:, cut], [header[i] for i in cut])
    result = score(src, "-o", tmp_path / "out.csv")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert f"missing feature columns ['Flow IAT Max'] that {MLCVE_MODEL} needs" in result.stderr
    assert "no shipped model fits (hybrid-cic needs 82; hybrid-cic-original needs 77;" in result.stderr


def test_a_timestamp_column_without_times_is_scored_per_flow(rows: pd.DataFrame, models: Path, tmp_path: Path) -> None:
    """Some CICFlowMeter exports write a counter as Timestamp: no windows, one line says so, every flow scored."""
    path, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_frame(path, rows.assign(Timestamp=[str(181 + i) for i in range(len(rows))]))
    result = score(path, "--models-dir", models, "-o", out)
    assert result.exit_code == 0, result.output
    (line,) = [ln for ln in result.stderr.splitlines() if "window_mode=" in ln]
    t = pd.read_csv(out)["window_flows"].astype(int).max()  # every window holds its one flow
    assert t == 1 and "zero-padded window of T=" in line
    assert line.endswith(
        f": windows could not be built ({len(rows)} Timestamp values such as '181' are no times, data rows from 1)"
    )
    scored = pd.read_csv(out)
    assert len(scored) == len(rows) and set(scored["window_mode"]) == {"single_flow"}

"""The live check: a short attacker/benign scenario in three namespaces, labelled flows, the report's structure.

Traffic is made by real tools (nmap, hping3, slowloris, curl, dig against busybox httpd and dnsmasq) in
namespaces the test creates; flows come from ``tapwatch flows``, scores from ``tapwatch score`` with every
shipped model. Detection rates are a result, not a property of the code, so none is asserted here; what the
code guarantees is (labels, counts, structure).
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tapwatch.capture.live_traffic import SHORT_PLAN, LiveRun, make_live_capture
from tapwatch.capture.traffic import ATTACK_LABELS, LABEL_COLUMNS, Label, Phase
from tapwatch.features.errors import BadInputError
from tapwatch.models.live_check import (
    AMBIGUOUS,
    REPORT_LABELS,
    UNMATCHED,
    label_flows,
    read_phases,
    same_label_csv,
    shipped_cards,
)
from tapwatch.models.live_check_report import FAMILIES, KEY_FEATURES, compare_features
from tapwatch.models.score import MODELS_DIR
from tests.conftest import need_netns

ATTACKER, CLIENT, SERVER = "10.212.0.3", "10.212.0.1", "10.212.0.2"
TEST_MODELS = ("hybrid-cic", "seq2seq-cic")


def _strict_json(path: Path) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{path}: non-standard JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> tuple[LiveRun, Path, Path]:
    """One short scenario, then the command line on its pcap: (capture, work folder, report folder)."""
    need_netns()
    base = tmp_path_factory.mktemp("live")
    run = make_live_capture(base / "short.pcap", SHORT_PLAN)
    work, out, models = base / "work", base / "reports", base / "models"
    models.mkdir()
    for name in TEST_MODELS:  # two of the shipped models keep the test short (each is scored twice)
        for suffix in (".onnx", ".card.json"):
            (models / f"{name}{suffix}").symlink_to(MODELS_DIR / f"{name}{suffix}")
    argv = [sys.executable, "-m", "tapwatch.models.live_check", "--pcap", str(run.pcap), "--out", str(out),
            "--name", "lc", "--keep", str(work), "--datasets", str(base / "no-datasets"),
            "--models-dir", str(models)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return run, work, out


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_scenario_phases(live: tuple[LiveRun, Path, Path]) -> None:
    run, _, _ = live
    assert run.stats.captured > 0 and run.stats.dropped == 0
    assert run.wall_s < 40
    assert [p.row() for p in read_phases(run.labels)] == [p.row() for p in run.phases]  # µs in the file
    assert {p.label for p in run.phases} == set(Label)
    attack = [p for p in run.phases if p.label in ATTACK_LABELS]
    benign = [p for p in run.phases if p.label not in ATTACK_LABELS]
    # The attacker's phases run one after the other, in this order, from the attacker's address.
    assert [p.label for p in attack] == [Label.NMAP_SYN_SCAN, Label.SYN_FLOOD, Label.SLOWLORIS]
    assert all(a.end <= b.start for a, b in pairwise(attack))
    assert {(p.src_ip, p.dst_ip) for p in attack} == {(ATTACKER, SERVER)}
    # The benign client alternates HTTP and DNS rounds meanwhile, never overlapping itself.
    assert {(p.src_ip, p.dst_ip) for p in benign} == {(CLIENT, SERVER)}
    assert all(a.end <= b.start for a, b in pairwise(benign))
    assert Counter(p.label for p in benign)[Label.BENIGN_HTTP] >= SHORT_PLAN.min_benign_rounds
    assert benign[0].start < attack[-1].end  # concurrent, not one after the other


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_every_flow_is_labelled_by_its_phase(live: tuple[LiveRun, Path, Path]) -> None:
    run, work, _ = live
    flows = pd.read_csv(work / "flows.csv", low_memory=False)
    labels = label_flows(flows, run.phases)
    assert not labels["label"].isin([UNMATCHED, AMBIGUOUS]).any()
    # Only a UDP flow can outlast its phase: a later dig round that reuses a source port continues it (no
    # FIN ends UDP flows); every TCP connection ends inside its phase.
    outlasted = flows[labels["outlasted"]]
    assert set(outlasted["Protocol"]) <= {17} and set(labels.loc[labels["outlasted"], "label"]) <= {"benign-dns"}
    for label, rows in flows.groupby(labels["label"]):
        src = ATTACKER if Label(label) in ATTACK_LABELS else CLIENT
        assert set(rows["Src IP"]) == {src} and set(rows["Dst IP"]) == {SERVER}, label
        phases = [p for p in run.phases if p.label.value == label]
        times = zip(rows["first_seen_ms"], rows["last_seen_ms"], labels.loc[rows.index, "outlasted"], strict=True)
        for first, last, out in times:
            ends = [int(p.end * 1000) for p in phases if int(p.start * 1000) <= first < int(p.end * 1000)]
            assert len(ends) == 1 and (last <= ends[0]) != out, label
    by = labels["label"].value_counts()
    assert by[Label.NMAP_SYN_SCAN.value] == 100  # one flow per scanned port (1-100)
    assert by[Label.SYN_FLOOD.value] == SHORT_PLAN.flood_packets  # hping3 moves to the next source port per SYN
    assert by[Label.SLOWLORIS.value] >= SHORT_PLAN.slowloris_sockets
    rounds = Counter(p.label for p in run.phases)
    assert by[Label.BENIGN_HTTP.value] == rounds[Label.BENIGN_HTTP] * len(SHORT_PLAN.file_sizes)
    dns_queries = rounds[Label.BENIGN_DNS] * len(SHORT_PLAN.dns_names)
    assert by[Label.BENIGN_DNS.value] == dns_queries - len(outlasted)  # a continued flow holds two queries
    slow = flows[labels["label"] == Label.SLOWLORIS.value]
    # slowloris holds its connections open for the whole phase (Flow Duration in µs).
    held = slow["Flow Duration"] >= (SHORT_PLAN.slowloris_s - 1) * 1e6
    assert (slow["Dst Port"] == 8080).all() and held.sum() >= SHORT_PLAN.slowloris_sockets


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_report_structure_and_counts(live: tuple[LiveRun, Path, Path]) -> None:
    run, work, out = live
    doc = _strict_json(out / "lc.json")
    n_flows = len(pd.read_csv(work / "flows.csv", usecols=["Flow ID"]))
    flows = doc["flows"]
    assert flows["total"] == n_flows == flows["labelled"] == sum(flows["by_label"].values())
    assert flows["attack_flows_from_attacker"] == flows["attack_flows"] > 0
    assert doc["phases"] == {lab.value: sum(p.label is lab for p in run.phases) for lab in REPORT_LABELS}
    assert doc["provenance"]["pcap"]["file"] == run.pcap.name and doc["provenance"]["plan"] is None
    assert doc["features"] == {"skipped": "no datasets folder (--datasets)"}
    assert [m["name"] for m in doc["models"]] == list(TEST_MODELS)
    for m in doc["models"]:
        assert "error" not in m, m.get("error")
        for view in (m, m["same_label_windows"]):
            for lab, d in view["by_label"].items():
                assert d["flows"] == flows["by_label"][lab] == sum(d["predicted"].values())
                assert 0 <= d["flagged"] <= d["flows"] and d["rate"] == d["flagged"] / d["flows"]
                assert d["ci95"][0] <= d["rate"] <= d["ci95"][1] and sum(d["flagged_as"].values()) == d["flagged"]
            attacks = [view["by_label"][x.value] for x in ATTACK_LABELS]
            assert view["attack"]["flows"] == sum(d["flows"] for d in attacks) == flows["attack_flows"]
            assert view["attack"]["flagged"] == sum(d["flagged"] for d in attacks)
        scored = pd.read_csv(work / f"scored-{m['name']}.csv", usecols=["score"])
        assert len(scored) == n_flows
    text = (out / "lc.md").read_text()
    assert "do not edit by hand" in text and f"--pcap {run.pcap}" in text
    assert all(m["name"] in text for m in doc["models"]) and all(x.value in text for x in REPORT_LABELS)


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_same_label_control_changes_only_the_key(live: tuple[LiveRun, Path, Path], tmp_path: Path) -> None:
    run, work, _ = live
    flows = pd.read_csv(work / "flows.csv", dtype=str, keep_default_na=False)
    labels = label_flows(flows.astype({"first_seen_ms": "int64", "last_seen_ms": "int64"}), run.phases)
    same_label_csv(work / "flows.csv", labels, tmp_path / "same.csv")
    control = pd.read_csv(tmp_path / "same.csv", dtype=str, keep_default_na=False)
    assert list(control.columns) == list(flows.columns)
    assert (control["Src IP"] == flows["Src IP"] + "#" + labels["label"]).all()
    assert control.drop(columns="Src IP").equals(flows.drop(columns="Src IP"))


def test_shipped_cards_are_every_model_with_a_card(tmp_path: Path) -> None:
    shipped = shipped_cards(MODELS_DIR)
    assert [onnx.name for onnx, _ in shipped] == sorted(p.name for p in MODELS_DIR.glob("*.onnx"))
    assert all(card.name == onnx.stem for onnx, card in shipped)
    (tmp_path / "orphan.card.json").write_text("{}")  # a card without its model is not a shipped model
    with pytest.raises(BadInputError, match="no shipped model"):
        shipped_cards(tmp_path)


def test_label_flows_counts_unmatched_and_ambiguous_apart() -> None:
    a = Phase(Label.SYN_FLOOD, 10.0, 12.0, "10.0.0.3", "10.0.0.2")
    b = Phase(Label.SLOWLORIS, 11.0, 13.0, "10.0.0.3", "10.0.0.2")  # overlaps a: flows in both are ambiguous
    flows = pd.DataFrame({
        "Src IP": ["10.0.0.3", "10.0.0.2", "10.0.0.3", "10.0.0.3", "10.0.0.9", "10.0.0.3"],
        "Dst IP": ["10.0.0.2", "10.0.0.3", "10.0.0.2", "10.0.0.2", "10.0.0.2", "10.0.0.2"],
        "first_seen_ms": [10_000, 10_500, 11_500, 12_500, 10_500, 13_000],
        "last_seen_ms": [10_100, 12_500, 11_600, 13_500, 10_600, 13_100],
    })  # fmt: skip
    got = label_flows(flows, [a, b])
    assert got["label"].tolist() == ["syn-flood", "syn-flood", AMBIGUOUS, "slowloris", UNMATCHED, UNMATCHED]
    assert got["outlasted"].tolist() == [False, True, False, True, False, False]


def test_read_phases_refuses_bad_tables(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no labels file"):
        read_phases(tmp_path / "missing-labels.csv")
    bad = tmp_path / "bad-labels.csv"
    bad.write_text("start,end,label\n1,2,benign-http\n")
    with pytest.raises(BadInputError, match="columns"):
        read_phases(bad)
    with bad.open("w", newline="") as fh:
        csv.writer(fh).writerows([LABEL_COLUMNS, ["1", "2", "10.0.0.1", "10.0.0.2", "ping-of-death"]])
    with pytest.raises(BadInputError, match="not a phase"):
        read_phases(bad)


def test_command_line_without_labels_fails_on_one_line(tmp_path: Path) -> None:
    pcap = tmp_path / "x.pcap"
    pcap.write_bytes(b"")
    argv = [sys.executable, "-m", "tapwatch.models.live_check", "--pcap", str(pcap), "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"tapwatch: error: {tmp_path / 'x-labels.csv'}: no labels file (it is written beside the pcap as "
        "NAME-labels.csv)"
    ]
    assert not list(tmp_path.glob("live-check.*"))


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_features_compared_with_training_rows(live: tuple[LiveRun, Path, Path], shared: Path) -> None:
    run, work, _ = live
    flows = pd.read_csv(work / "flows.csv", low_memory=False)
    labels = label_flows(flows, run.phases)["label"]
    got = compare_features(flows, labels, shared / "datasets")
    assert set(got["labels"]) == set(FAMILIES) == {x.value for x in REPORT_LABELS}
    for lab, info in got["labels"].items():
        assert info["family"] == FAMILIES[lab][0] and info["training_rows"] > 100
        assert info["live_flows"] == int((labels == lab).sum()) > 0
        assert list(info["features"]) == list(KEY_FEATURES)
        for f, v in info["features"].items():
            assert v["live"]["p5"] <= v["live"]["p50"] <= v["live"]["p95"], (lab, f)
            assert (f in info["outside_p5_p95"]) != (v["training"]["p5"] <= v["live"]["p50"] <= v["training"]["p95"])

"""The live check's pieces without traffic: labelling flows by phase, the labels table, the PyPI cicflowmeter
mapping, the snaplen check, the shipped cards, and the command line's refusals (the scenario itself in network
namespaces: tests/netns/test_live_check_netns.py)."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from lab.live_check import AMBIGUOUS, UNMATCHED, label_flows, read_phases, shipped_cards
from lab.pypi_cicflowmeter import (
    FILLED,
    NO_COUNTERPART,
    PYPI_TO_CIC,
    cic_frame,
    full_snaplen_problem,
    pypi_first_seen_ms,
)
from lab.traffic import LABEL_COLUMNS, Label, Phase
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import BadInputError
from tapwatch.models.scoring.score import MODELS_DIR

ATTACKER, CLIENT, SERVER = "10.212.0.3", "10.212.0.1", "10.212.0.2"


def test_pypi_rows_map_to_cic_columns_and_take_the_matching_tapwatch_start() -> None:
    def pypi_row(src: str, sport: int, ts: str, dur_us: int) -> dict[str, str]:
        row = {c: "0" for c in PYPI_TO_CIC} | {"protocol": "6", "flow_duration": str(dur_us), "tot_fwd_pkts": "2"}
        return row | {"src_ip": src, "src_port": str(sport), "dst_ip": SERVER, "dst_port": "8080", "timestamp": ts}

    rows = pd.DataFrame([pypi_row(ATTACKER, 40000, "2026-01-01 00:00:10", 1500),
                         pypi_row(CLIENT, 50000, "2026-01-01 00:00:11", 2000),
                         pypi_row(CLIENT, 50001, "2026-01-01 00:00:11", 0)])  # fmt: skip
    t0 = 1767225600_000  # 2026-01-01 00:00:00 UTC in ms
    tw = pd.DataFrame([{n: 0 for n in FEATURE_NAMES} | {"Protocol": 6, "Src IP": src, "Src Port": sport,
                        "Dst IP": SERVER, "Dst Port": 8080, "first_seen_ms": t0 + ms, "packets": 2,
                        "expiry_reason": "fin"}
                       for src, sport, ms in ((ATTACKER, 40000, 10_250), (CLIENT, 50000, 11_400))])  # fmt: skip
    first = pypi_first_seen_ms(rows, tw)
    # The third flow has no tapwatch flow of its 5-tuple: no start, so no phase.
    assert first.tolist() == [t0 + 10_250, t0 + 11_400, -1]
    phases = [Phase(Label.SYN_FLOOD, (t0 + 10_000) / 1000, (t0 + 10_300) / 1000, ATTACKER, SERVER),
              Phase(Label.SLOWLORIS, (t0 + 10_300) / 1000, (t0 + 11_000) / 1000, ATTACKER, SERVER),
              Phase(Label.BENIGN_HTTP, (t0 + 11_000) / 1000, (t0 + 12_000) / 1000, CLIENT, SERVER)]  # fmt: skip
    keyed = pd.DataFrame({"Src IP": rows["src_ip"], "Dst IP": rows["dst_ip"], "first_seen_ms": first,
                          "last_seen_ms": first + 1})  # fmt: skip
    # By its whole-second timestamp alone the first flow could be syn-flood or slowloris; its first packet says.
    assert label_flows(keyed, phases)["label"].tolist() == ["syn-flood", "benign-http", UNMATCHED]
    frame = cic_frame(rows)
    assert list(frame.columns) == ["Src IP", "Src Port", "Dst IP", "Dst Port", "Timestamp", *FEATURE_NAMES]
    assert frame["Flow Duration"].tolist() == ["1500", "2000", "0"] and frame["Timestamp"][0] == "2026-01-01 00:00:10"
    assert (
        set(FILLED) == set(NO_COUNTERPART) and (frame["ICMP Type"] == -1).all() and (frame["Bwd RST Flags"] == 0).all()
    )


def test_full_snaplen_problem_names_a_cut_capture(tmp_path: Path) -> None:
    header = bytes.fromhex("d4c3b2a1") + (2).to_bytes(2, "little") + (4).to_bytes(2, "little") + bytes(8)
    cut, whole = tmp_path / "cut.pcap", tmp_path / "whole.pcap"
    cut.write_bytes(header + (96).to_bytes(4, "little") + (1).to_bytes(4, "little"))
    whole.write_bytes(header + (262144).to_bytes(4, "little") + (1).to_bytes(4, "little"))
    assert full_snaplen_problem(cut) == "the capture keeps only 96 bytes of each frame (use snaplen 0)"
    assert full_snaplen_problem(whole) is None


def test_pcap_with_both_links_is_refused(tmp_path: Path) -> None:
    pcap = tmp_path / "x.pcap"
    pcap.write_bytes(b"")
    argv = [sys.executable, "-m", "lab.live_check", "--pcap", str(pcap), "--link", "both"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--pcap holds one condition" in done.stderr


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
    argv = [sys.executable, "-m", "lab.live_check", "--pcap", str(pcap), "--out", str(tmp_path)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"tapwatch: error: {tmp_path / 'x-labels.csv'}: no labels file (it is written beside the pcap as "
        "NAME-labels.csv)"
    ]
    assert not list(tmp_path.glob("live-check.*"))

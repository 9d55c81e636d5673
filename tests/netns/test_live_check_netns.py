"""The live check: a short attacker/benign scenario in three namespaces, labelled flows, the report's structure.

Traffic is made by real tools (nmap, hping3, slowloris, curl, dig against busybox httpd and dnsmasq) in
namespaces the test creates; flows come from ``tapwatch flows`` and from the PyPI ``cicflowmeter`` (its venv,
``.parity-venv``, is built if missing), scores from ``tapwatch score`` with two shipped models. Detection rates
are a result, not a property of the code, so none is asserted here; what the code guarantees is (labels,
counts, structure). The WAN link's shaping is checked on its own: a download through it takes as long as
its rate says, and the qdisc goes with the namespaces.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from collections import Counter
from itertools import pairwise
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lab.live_check import (
    AMBIGUOUS,
    REPORT_LABELS,
    UNMATCHED,
    label_flows,
    read_phases,
    same_label_csv,
    shipped_cards,
)
from lab.live_check_report import FAMILIES, KEY_FEATURES, compare_features
from lab.live_traffic import SHORT_PLAN, LiveRun, make_live_capture
from lab.netns_trio import WanLink, ns_trio, shape_link
from lab.pypi_cicflowmeter import (
    FILLED,
    NO_COUNTERPART,
    PYPI_TO_CIC,
    cic_frame,
    full_snaplen_problem,
    pypi_first_seen_ms,
)
from lab.traffic import ATTACK_LABELS, LABEL_COLUMNS, Label, Phase, TrafficPlan, download, servers
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import BadInputError
from tapwatch.models.scoring.score import MODELS_DIR
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
    argv = [sys.executable, "-m", "lab.live_check", "--pcap", str(run.pcap), "--out", str(out),
            "--name", "lc", "--keep", str(work), "--datasets", str(base / "no-datasets"),
            "--models-dir", str(models), "--link", "lan"]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    return run, work / "lan", out


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_scenario_phases(live: tuple[LiveRun, Path, Path]) -> None:
    run, _, _ = live
    assert run.stats.captured > 0 and run.stats.dropped == 0
    assert run.wall_s < 40 and run.shaped is None  # the LAN condition: no qdisc
    assert full_snaplen_problem(run.pcap) is None  # whole frames, as the PyPI tool needs
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
    top = _strict_json(out / "lc.json")
    assert list(top["conditions"]) == ["lan"] and top["link_basis"] == {"skipped": "no datasets folder (--datasets)"}
    doc = top["conditions"]["lan"]
    assert doc["link"]["applied"] == "not known (given pcap)"
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
    assert "## Side by side" in text and "| hybrid-cic | lan | PyPI cicflowmeter |" in text


@pytest.mark.netns
@pytest.mark.timeout(300)
def test_pypi_flows_of_the_same_capture_are_labelled_and_scored(live: tuple[LiveRun, Path, Path]) -> None:
    _, work, out = live
    part = _strict_json(out / "lc.json")["conditions"]["lan"]["cicflowmeter"]
    assert "skipped" not in part, part.get("skipped")
    raw = pd.read_csv(work / "cicflowmeter" / "cicflowmeter.csv", dtype=str)
    flows = part["flows"]
    assert flows["total"] == len(raw) == flows["labelled"] + flows["unmatched"]["flows"] + flows["ambiguous"]
    # Every attack flow PyPI makes comes from the attacker; each label has flows (the phases are seconds long).
    assert flows["attack_flows_from_attacker"] == flows["attack_flows"] > 0
    assert all(n > 0 for n in flows["by_label"].values()), flows["by_label"]
    assert part["matched_to_tapwatch_flows"] >= flows["labelled"]
    assert part["filled"] == FILLED and part["tool"]["cicflowmeter"] == "0.2.0"
    converted = pd.read_csv(work / "cicflowmeter" / "cicflowmeter-flows.csv", dtype=str)
    assert list(converted.columns[5:]) == list(FEATURE_NAMES) and len(converted) == len(raw)
    assert (converted["Flow Duration"] == raw["flow_duration"]).all()  # PyPI's values, renamed
    for m in part["models"]:
        assert "error" not in m, m.get("error")
        assert m["filled_features"] == list(NO_COUNTERPART)  # both test models take all 82 features
        assert sum(d["flows"] for d in m["by_label"].values()) == len(raw)
        assert m["attack"]["flows"] == flows["attack_flows"]


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


@pytest.mark.netns
@pytest.mark.timeout(120)
def test_wan_link_shapes_the_server_side_and_goes_with_the_namespaces(tmp_path: Path) -> None:
    need_netns()
    size, link = 262_144, WanLink(rate_mbit=4.0)
    with ns_trio() as trio:
        client = trio.pair(trio.client)
        with servers(client, TrafficPlan(file_sizes=(size,)), tmp_path):
            t0 = time.monotonic()
            download(client, TrafficPlan().http_port, [size])
            lan_s = time.monotonic() - t0
            shaped = shape_link(trio.server, link)
            t0 = time.monotonic()
            download(client, TrafficPlan().http_port, [size])
            wan_s = time.monotonic() - t0
        shown = subprocess.run(["tc", "-n", trio.server.netns, "qdisc", "show", "dev", trio.server.iface],
                               capture_output=True, text=True, check=True).stdout  # fmt: skip
        names = [trio.client.netns, trio.attacker.netns, trio.server.netns]
    assert shaped.kind in ("netem", "tbf") and shaped.kind in shown and shaped.shown == shown.strip()
    assert "4Mbit" in shown and (shaped.kind == "netem") == ("delay" in shown)
    # 256 KiB at 4 Mbit/s take 0.52 s on the wire; at memory speed a few ms.
    assert wan_s >= 0.8 * size * 8 / (link.rate_mbit * 1e6) > 10 * lan_s, (lan_s, wan_s)
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not any(n in listed for n in names)


def test_pcap_with_both_links_is_refused(tmp_path: Path) -> None:
    pcap = tmp_path / "x.pcap"
    pcap.write_bytes(b"")
    argv = [sys.executable, "-m", "lab.live_check", "--pcap", str(pcap), "--link", "both"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and "--pcap holds one condition" in done.stderr


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
    argv = [sys.executable, "-m", "lab.live_check", "--pcap", str(pcap), "--out", str(tmp_path)]
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

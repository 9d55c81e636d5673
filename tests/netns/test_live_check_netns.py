"""The live check: a short attacker/benign scenario in three namespaces, labelled flows, the report's structure.

Traffic is made by real tools (nmap, hping3, slowloris, curl, dig against busybox httpd and dnsmasq) in
namespaces the test creates; flows come from ``tapwatch flows`` and from the PyPI ``cicflowmeter`` (its venv,
``.parity-venv``, is built if missing), scores from ``tapwatch score`` with two shipped models. Detection rates
are a result, not a property of the code, so none is asserted here; what the code guarantees is (labels,
counts, structure). The WAN link's shaping is checked on its own: a download through it takes as long as
its rate says, and the qdisc goes with the namespaces. The pieces that need no traffic:
tests/unit/test_live_check.py.
"""

from __future__ import annotations

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

from lab.live_check import AMBIGUOUS, REPORT_LABELS, UNMATCHED, label_flows, read_phases, same_label_csv
from lab.live_check_report import FAMILIES, KEY_FEATURES, compare_features
from lab.live_traffic import SHORT_PLAN, LiveRun, make_live_capture
from lab.netns_trio import WanLink, ns_trio, shape_link
from lab.pypi_cicflowmeter import FILLED, NO_COUNTERPART, full_snaplen_problem
from lab.traffic import ATTACK_LABELS, Label, TrafficPlan, download, servers
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.models.scoring.score import MODELS_DIR
from tests.support.env import need_netns

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

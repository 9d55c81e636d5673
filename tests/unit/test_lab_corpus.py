"""The corpus builder's bookkeeping (lab.corpus) and its report (lab.corpus_report), on unit directories made
here: which units are complete, resuming an interrupted build without losing the partial run, gathering the
dataset with each flow's unit, and the report's tables. The lab itself runs in tests/netns/test_scenario.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd

from lab.corpus import build, gather, plan_units, unit_state
from lab.corpus_report import render, tables
from lab.run import FILES, RunConfig
from lab.run_manifest import sha256_of


def _unit(run_dir: Path, flows: dict[str, int], profile: str = "wan", seed: int = 1) -> None:
    """A complete unit directory: files, and a run.json listing their sha256."""
    run_dir.mkdir(parents=True)
    (run_dir / "capture.pcap").write_bytes(b"pcap")
    (run_dir / "episodes.csv").write_text("episode_id\n")
    families = [f for f, n in flows.items() for _ in range(n)]
    pd.DataFrame({"Flow Duration": range(len(families)), "family": families}).to_csv(run_dir / "flows.csv",
                                                                                     index=False)  # fmt: skip
    attacks = [{"episode_id": f"e{i}", "tool": "t", "family": f, "seconds": 1.0} for i, f in enumerate(flows)
               if f != "benign"]  # fmt: skip
    summary = {"unit": run_dir.name, "scenario": "ci-short", "seed": seed, "link_profile": profile,
               "profile_rtt_ms": 40.0, "seconds": 80.0, "wall_seconds": 120.0, "flows": flows,
               "flows_total": sum(flows.values()), "attack_episodes": {}, "attacks": attacks,
               "handshake_rtt": {"count": 3, "median_ms": 40.5}, "capture": {}, "tools": {"nmap": "7.93"},
               "tapwatch": "0", "sha256": {name: sha256_of(run_dir / name) for name in FILES}}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(summary))


def test_units_run_in_the_order_seed_scenario_profile(tmp_path: Path) -> None:
    units = plan_units(("ci-short", "attack-mix"), ("none", "lossy"), (3, 4), tmp_path)
    assert [u.unit for u in units][:4] == ["ci-short-none-s3", "ci-short-lossy-s3", "attack-mix-none-s3",
                                           "attack-mix-lossy-s3"]  # fmt: skip
    assert units[-1].out == tmp_path / "runs" / "attack-mix-lossy-s4"


def test_a_unit_is_complete_only_when_its_files_match_its_run_json(tmp_path: Path) -> None:
    run_dir = tmp_path / "runs" / "u"
    assert unit_state(run_dir) == "absent"
    _unit(run_dir, {"benign": 2})
    assert unit_state(run_dir) == "complete"
    (run_dir / "flows.csv").write_text("changed\n")
    assert unit_state(run_dir) == "incomplete"
    (run_dir / "run.json").unlink()
    assert unit_state(run_dir) == "incomplete"


def test_a_resumed_build_skips_complete_units_and_sets_an_interrupted_one_aside(tmp_path: Path) -> None:
    units = plan_units(("ci-short",), ("none", "wan"), (1,), tmp_path)
    _unit(units[0].out, {"benign": 3, "scan": 1}, profile="none")
    units[1].out.mkdir(parents=True)
    (units[1].out / "capture.pcap").write_bytes(b"half a run")
    ran: list[str] = []

    def runner(cfg: RunConfig) -> None:
        ran.append(cfg.unit)
        _unit(cfg.out, {"benign": 5, "dos": 2})

    manifest = build(units, tmp_path, runner=runner)
    assert ran == ["ci-short-wan-s1"]
    aside = list((tmp_path / "incomplete").iterdir())
    assert len(aside) == 1 and (aside[0] / "capture.pcap").read_bytes() == b"half a run"
    assert manifest["flows"] == 11 and len(manifest["units"]) == 2


def test_gather_writes_every_flow_once_with_its_unit_and_leaves_out_incomplete_units(tmp_path: Path) -> None:
    _unit(tmp_path / "runs" / "ci-short-none-s1", {"benign": 3, "scan": 1}, profile="none")
    _unit(tmp_path / "runs" / "ci-short-wan-s1", {"benign": 2})
    (tmp_path / "runs" / "ci-short-lan-s1").mkdir()
    manifest = gather(tmp_path)
    with gzip.open(tmp_path / "flows.csv.gz", "rt") as fh:
        data = pd.read_csv(fh)
    assert len(data) == 6 == manifest["flows"]
    assert data.groupby("unit").size().to_dict() == {"ci-short-none-s1": 4, "ci-short-wan-s1": 2}
    assert set(data["link_profile"]) == {"none", "wan"}
    assert manifest["dataset_sha256"] == sha256_of(tmp_path / "flows.csv.gz")


def test_the_report_tables_count_episodes_and_flows_per_family_and_profile(tmp_path: Path) -> None:
    _unit(tmp_path / "runs" / "a", {"benign": 3, "scan": 1}, profile="none")
    _unit(tmp_path / "runs" / "b", {"benign": 2, "scan": 4}, profile="wan", seed=2)
    manifest = gather(tmp_path)
    counts = tables(manifest)
    assert counts["benign_flows"] == 5
    assert {"family": "scan", "link_profile": "wan", "episodes": 1, "flows": 4} in counts["rows"]
    lab = {
        "benign": {
            "Flow Duration": 1.0,
            "Flow IAT Mean": 1.0,
            "Flow Packets/s": 1.0,
            "bytes": 1.0,
            "flows": 5,
            "one_packet": 0.2,
        }
    }
    cic = {
        "benign": {
            "Flow Duration": 100.0,
            "Flow IAT Mean": 2.0,
            "Flow Packets/s": 1.0,
            "bytes": 1.0,
            "flows": 9,
            "one_packet": 0.0,
        }
    }
    text = render(manifest, counts, lab, cic, "python -m lab.corpus_report")
    assert "| scan | wan | 1 | 4 |" in text and "total benign flows: 5\n" in text
    assert "benign: median duration (µs) 1 in the lab, 100 in CIC" in text


def test_relabel_applies_the_rule_again_and_keeps_the_unit_complete(tmp_path: Path) -> None:
    from lab.corpus import relabel
    from lab.episodes import Episode, Family, write_episodes

    run_dir = tmp_path / "runs" / "ci-short-wan-s1"
    _unit(run_dir, {"benign": 1})
    c1, s1, a1 = ("10.213.1.2", "fd00:7477:1::2"), ("10.213.2.2", "fd00:7477:2::2"), ("10.213.3.2", "fd00:7477:3::2")
    write_episodes([Episode("b-c1", Family.BENIGN, "mix", "c1", c1, (), 0.0, 9.0, "BENIGN"),
                    Episode("b-s1", Family.BENIGN, "idle", "s1", s1, (), 0.0, 9.0, "BENIGN"),
                    Episode("b-a1", Family.BENIGN, "idle", "a1", a1, (), 0.0, 9.0, "BENIGN"),
                    Episode("e001", Family.DOS, "hping3", "hping3 --rand-source", a1, s1, 1.0, 2.0, "DDoS",
                            spoofed=True)], run_dir / "episodes.csv")  # fmt: skip
    pd.DataFrame({"Src IP": ["127.0.0.9", "10.213.1.2", "10.213.2.1"], "Dst IP": ["10.213.2.2"] * 3,
                  "first_seen_ms": [1500, 1500, 1500], "episode_id": ["b-s1"] * 3, "family": ["benign"] * 3,
                  "cic_class": ["BENIGN"] * 3}).to_csv(run_dir / "flows.csv", index=False)  # fmt: skip
    summary = json.loads((run_dir / "run.json").read_text())
    summary["sha256"] = {name: sha256_of(run_dir / name) for name in FILES}
    (run_dir / "run.json").write_text(json.dumps(summary))
    assert relabel(tmp_path) == {"dos": 1, "benign": 2}
    flows = pd.read_csv(run_dir / "flows.csv")
    assert flows["episode_id"].tolist() == ["e001", "b-c1", "b-router"]
    assert unit_state(run_dir) == "complete"
    assert json.loads((run_dir / "run.json").read_text())["flows"] == {"dos": 1, "benign": 2}

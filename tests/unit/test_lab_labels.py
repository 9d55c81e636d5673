"""The lab's labelling rule (lab.labels): attack episodes by endpoints and time, spoofed floods by victim and an
outside source, everything else to its client's benign episode; and episodes.csv round trips."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from lab.episodes import Episode, Family, read_episodes, write_episodes
from lab.labels import OUTSIDE_EPISODE, LabelIndex, LabHosts, label_csv, label_frame
from lab.topo_plan import LabError

HOSTS = {
    "c1": ("10.213.1.2", "fd00:7477:1::2"),
    "c2": ("10.213.2.2", "fd00:7477:2::2"),
    "s1": ("10.213.3.2", "fd00:7477:3::2"),
    "a1": ("10.213.4.2", "fd00:7477:4::2"),
    "a2": ("10.213.5.2", "fd00:7477:5::2"),
    "router": ("10.213.1.1", "10.213.3.1", "fd00:7477:1::1"),
}
LAB = LabHosts(HOSTS, clients=("c1", "c2"))
SCAN = Episode("e001", Family.SCAN, "nmap", "nmap -sS", HOSTS["a1"], HOSTS["s1"], 100.0004, 110.0, "Portscan")
FLOOD = Episode("e002", Family.DOS, "hping3", "hping3 -S --rand-source", HOSTS["a1"], HOSTS["s1"], 120.0, 130.0,
                "DDoS", spoofed=True)  # fmt: skip
BOT = Episode("e003", Family.BOTNET, "beacon", "python -m lab.beacon", HOSTS["c2"], HOSTS["a2"], 140.0, 150.0,
              "Botnet")  # fmt: skip
BENIGN = [Episode(f"b-{h}", Family.BENIGN, "mix", h, HOSTS[h], (), 90.0, 200.0, "BENIGN") for h in ("c1", "c2")]


def _label(rows: list[tuple[str, str, int]]) -> list[tuple[str, str]]:
    flows = pd.DataFrame(rows, columns=["Src IP", "Dst IP", "first_seen_ms"])
    out = label_frame(flows, LabelIndex.build([SCAN, FLOOD, BOT, *BENIGN], LAB))
    return list(zip(out["episode_id"], out["family"], strict=True))


def test_an_attack_flow_is_its_episode_in_either_direction_and_either_ip_version() -> None:
    got = _label([("10.213.4.2", "10.213.3.2", 105_000), ("10.213.3.2", "10.213.4.2", 105_000),
                  ("fd00:7477:4::2", "fd00:7477:3::2", 109_999)])  # fmt: skip
    assert got == [("e001", "scan")] * 3


def test_episode_times_are_whole_milliseconds_floored_and_ceiled() -> None:
    got = _label([("10.213.4.2", "10.213.3.2", 100_000), ("10.213.4.2", "10.213.3.2", 99_999),
                  ("10.213.4.2", "10.213.3.2", 110_000), ("10.213.4.2", "10.213.3.2", 110_001)])  # fmt: skip
    assert [e for e, _ in got] == ["e001", "b-a1", "e001", "b-a1"]


def test_a_flow_between_the_attacker_and_a_non_victim_is_not_the_attack() -> None:
    assert _label([("10.213.4.2", "10.213.1.2", 105_000)]) == [("b-c1", "benign")]


def test_a_spoofed_flood_takes_any_source_no_lab_host_has_and_nothing_from_lab_hosts() -> None:
    got = _label([("198.51.100.7", "10.213.3.2", 125_000), ("10.213.3.2", "203.0.113.9", 125_000),
                  ("10.213.1.2", "10.213.3.2", 125_000), ("10.213.9.9", "10.213.3.2", 125_000),
                  ("198.51.100.7", "10.213.3.2", 131_000), ("230.1.2.3", "10.213.3.2", 125_000),
                  ("fe80::1", "fd00:7477:3::2", 125_000), ("127.9.8.7", "10.213.3.2", 125_000)])  # fmt: skip
    assert [e for e, _ in got] == ["e002", "e002", "b-c1", "e002", "b-s1", "e002", "b-s1", "e002"]


def test_the_bot_is_a_client_and_only_its_flows_to_the_c2_are_botnet() -> None:
    got = _label([("10.213.2.2", "10.213.5.2", 145_000), ("10.213.2.2", "10.213.3.2", 145_000)])
    assert got == [("e003", "botnet"), ("b-c2", "benign")]


def test_benign_flows_go_to_their_client_else_to_the_source_host() -> None:
    got = _label([("10.213.3.2", "10.213.1.2", 95_000), ("10.213.3.2", "10.213.3.1", 95_000),
                  ("fe80::1", "ff02::2", 95_000), ("10.213.1.1", "10.213.3.2", 95_000)])  # fmt: skip
    assert [e for e, _ in got] == ["b-c1", "b-s1", OUTSIDE_EPISODE, "b-router"]


def test_missing_columns_are_refused_with_their_names() -> None:
    with pytest.raises(LabError, match="first_seen_ms"):
        label_frame(pd.DataFrame({"Src IP": [], "Dst IP": []}), LabelIndex.build([], LAB))


def test_label_csv_keeps_every_row_and_column_and_counts_families(tmp_path: Path) -> None:
    raw = tmp_path / "raw.csv"
    pd.DataFrame({"Src IP": ["10.213.4.2", "10.213.1.2"], "Dst IP": ["10.213.3.2", "10.213.3.2"],
                  "first_seen_ms": [105_000, 105_000], "Flow Duration": [7, 8]}).to_csv(raw, index=False)  # fmt: skip
    counts = label_csv(raw, [SCAN, *BENIGN], LAB, tmp_path / "flows.csv")
    out = pd.read_csv(tmp_path / "flows.csv")
    assert counts == {"scan": 1, "benign": 1}
    assert list(out.columns) == ["Src IP", "Dst IP", "first_seen_ms", "Flow Duration", "episode_id", "family",
                                 "cic_class"]  # fmt: skip
    assert out["cic_class"].tolist() == ["Portscan", "BENIGN"]


def test_episodes_csv_round_trips_and_is_ordered_by_start(tmp_path: Path) -> None:
    path = tmp_path / "episodes.csv"
    write_episodes([BOT, SCAN, FLOOD, *BENIGN], path)
    back = read_episodes(path)
    assert [e.episode_id for e in back] == ["b-c1", "b-c2", "e001", "e002", "e003"]
    assert set(back) == {BOT, SCAN, FLOOD, *BENIGN}


def test_an_episode_that_ends_before_it_starts_is_refused() -> None:
    with pytest.raises(LabError, match="ends before it starts"):
        Episode("e9", Family.DOS, "x", "x", (), (), 10.0, 9.0)

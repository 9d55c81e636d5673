"""The site baseline: learned from benign flows only (the committed sample corpus), thresholds never under their
floors, per service where the benign traffic used one, loaded back; and the report's matching of lines to attacks."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import pytest

from tapwatch.alerting.volume import VolumeRules
from tapwatch.app.episodes_match import Attack, match, wilson
from tapwatch.features.aggregates import AggregateRecord, View
from tapwatch.features.baseline import FLOORS, SiteBaseline, load_baseline
from tapwatch.features.errors import ConfigError
from tapwatch.features.families import Family
from tapwatch.inference.model import load_model
from tapwatch.models.baseline import learn
from tests.support.env import REPO
from tests.support.tiny_model import write_tiny_model

CORPUS = REPO / "lab" / "samples" / "ci-corpus" / "flows.csv.gz"


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> SiteBaseline:
    model = load_model(write_tiny_model(tmp_path_factory.mktemp("m"), window_length=4).onnx_path)
    return learn([CORPUS], model, budget=1e-4, margin=1.5, bucket_s=10.0)


def test_only_benign_flows_shape_the_baseline(learned: SiteBaseline) -> None:
    with gzip.open(CORPUS, "rt", newline="") as fh:
        families = [row["family"] for row in csv.DictReader(fh)]
    assert set(families) > {"benign"}  # the corpus holds attacks, and they are left out
    (source,) = learned.source["files"]
    assert source["benign_flows"] == families.count("benign") and len(source["sha256"]) == 64
    assert len(learned.feature_medians) == 82 and learned.medians["source"]["flows"] >= 1


def test_thresholds_are_never_under_their_floors_and_some_are_learned_per_service(learned: SiteBaseline) -> None:
    assert all(learned.threshold(name) >= floor for name, floor in FLOORS.items())
    assert learned.services and all(v >= FLOORS[n] for port in learned.services.values() for n, v in port.items())
    unused = 4444  # no benign client used it: the floors
    assert learned.threshold("pair_flows", unused) == FLOORS["pair_flows"]
    assert set(learned.window_open["tiny"]) == {f.value for f in Family if f is not Family.BENIGN}


def test_a_baseline_round_trips_and_a_broken_one_names_its_file(learned: SiteBaseline, tmp_path: Path) -> None:
    path = tmp_path / "site-baseline.json"
    path.write_text(learned.model_dump_json())
    assert load_baseline(path) == learned
    path.write_text('{"thresholds": "many"}')
    with pytest.raises(ConfigError) as err:
        load_baseline(path)
    assert str(err.value).endswith("site-baseline.json: thresholds: Input should be a valid dictionary")
    path.write_text("not json")
    with pytest.raises(ConfigError, match="not a JSON site baseline"):
        load_baseline(path)


def test_a_per_service_threshold_decides_what_is_password_guessing() -> None:
    base = SiteBaseline(services={"443": {"pair_flows": 800.0}})
    rules = VolumeRules(base)

    def pair(port: int, flows: int) -> AggregateRecord:
        return AggregateRecord(sensor="s", view=View.SOURCE, key="10.0.0.9", start_ms=0, bucket_ms=10_000,
                               flows=flows, pair_flows=flows, pair_port=port, pair_peer="10.0.0.2",
                               last_ms=1)  # fmt: skip

    assert rules.judge(pair(443, 100)) == []  # a busy office's HTTPS
    assert [e.family for e in rules.judge(pair(22, 100))] == [Family.BRUTEFORCE]  # 100 SSH logins in 10 s


def line(eid: str, host: str, family: str, first: str, last: str, key: str = "source") -> dict[str, object]:
    return {"episode": {"id": eid, "host": host, "key": key, "first_seen": first, "last_seen": last},
            "src_ip": host, "dest_ip": "10.0.0.2", "ml": {"family": family},
            "timestamp": last.replace("Z", "+0000")}  # fmt: skip


def test_lines_are_matched_to_the_attacks_they_cover_and_the_rest_are_false() -> None:
    t0 = 1_700_000_000_000
    attacks = [
        Attack("e1", Family.SCAN, "nmap", frozenset({"10.0.0.9"}), frozenset({"10.0.0.2"}), t0, t0 + 20_000, False),
        Attack("e2", Family.SCAN, "masscan", frozenset({"10.0.0.9"}), frozenset({"10.0.0.2"}), t0 + 60_000,
               t0 + 80_000, False),
        Attack("e3", Family.DOS, "hping3", frozenset({"10.0.0.8"}), frozenset({"10.0.0.2"}), t0, t0 + 30_000, True),
    ]  # fmt: skip
    iso = "2023-11-14T22:13:{:02d}.000Z"
    lines = [
        line("a", "10.0.0.9", "scan", iso.format(21), iso.format(22)),
        line("a", "10.0.0.9", "scan", iso.format(21), "2023-11-14T22:14:25.000Z"),  # one episode, both scans
        line("b", "10.0.0.7", "botnet", iso.format(21), iso.format(25)),  # nobody attacked from there
    ]
    results, false_lines, false_eps = match(lines, attacks, slack_s=150)  # type: ignore[arg-type]
    by = {r.attack: r for r in results}
    assert by["e1"].detected and by["e1"].named and by["e2"].detected and by["e2"].lines == 2
    assert not by["e3"].detected and (false_lines, false_eps) == (1, 1)
    assert json.dumps([round(x, 4) for x in wilson(1, 1000)]) == "[0.0002, 0.0056]"


def test_an_episode_covers_an_attack_whose_victim_is_among_its_busiest_targets() -> None:
    t0 = 1_700_000_000_000
    scan = Attack("e1", Family.SCAN, "nmap", frozenset({"10.0.0.9"}), frozenset({"10.0.0.5"}), t0, t0 + 20_000, False)
    iso = "2023-11-14T22:13:{:02d}.000Z"
    elsewhere = line("a", "10.0.0.9", "scan", iso.format(21), iso.format(22))  # its lines name 10.0.0.2 only
    (r,), _, false_eps = match([elsewhere], [scan], slack_s=150)
    assert not r.detected and false_eps == 1
    episode = {**elsewhere["episode"], "top_targets": ["10.0.0.2", "10.0.0.5"]}  # type: ignore[dict-item]
    (r,), _, false_eps = match([{**elsewhere, "episode": episode}], [scan], slack_s=150)
    assert r.detected and r.named and false_eps == 0


def test_window_bars_are_learned_for_each_model_given(tmp_path: Path) -> None:
    models = [load_model(write_tiny_model(tmp_path / n, name=n, window_length=4).onnx_path) for n in ("old", "new")]
    learned = learn([CORPUS], models, budget=1e-4, margin=1.5, bucket_s=10.0)
    assert set(learned.window_open) == {"old", "new"} and learned.source["models"] == ["old", "new"]
    assert learned.source["model"] == "old"  # the first one, as one --model wrote it

"""Site profiles: the file, its refusals (one line each), the gate it puts on window evidence, and learn's
poisoning filter."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tapwatch.alerting.evidence import ProfileGate, family_of_verdict
from tapwatch.app.learn import Found, Part, leave_out
from tapwatch.features.errors import ConfigError
from tapwatch.features.families import Family
from tapwatch.features.profile import (
    Novelty,
    ProfileCard,
    ProfileModel,
    Rule,
    RuleKind,
    SiteProfile,
    load_profile,
    profile_path_for,
)
from tapwatch.features.schema import Verdict
from tests.support.alerting import verdict

MODEL = ("hybrid-test", "1", "ab" * 32)


def profile(**kw: object) -> SiteProfile:
    card = ProfileCard(model=ProfileModel(name=MODEL[0], version=MODEL[1], onnx_sha256=MODEL[2]), flows=10)
    return SiteProfile(card=card, **kw)  # type: ignore[arg-type]


def write(tmp_path: Path, data: object, name: str = "site.profile.json") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return path


def test_a_profile_round_trips_with_its_novelty_graph_checked(tmp_path: Path) -> None:
    nov = Novelty.embed(b"not really onnx", threshold=0.5, window_length=10, features=82, feature_mean=[0.0])
    p = profile(thresholds={"scan": 0.97}, novelty=nov, rule=Rule(kind=RuleKind.NOVEL))
    path = write(tmp_path, p.model_dump(mode="json"))
    back = load_profile(path, MODEL)
    assert back == p and back.novelty is not None and back.novelty.onnx() == b"not really onnx"
    assert back.family_threshold("scan") == 0.97 and back.family_threshold("dos") == 0.0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(schema_version=7), "unknown profile schema_version 7"),
        (lambda d: d.update(format="tapwatch-model-card"), "not a site profile"),
        (lambda d: d["card"]["model"].update(name="hybrid-cic"), "learned for model hybrid-cic 1, not hybrid-test 1"),
        (lambda d: d["card"]["model"].update(onnx_sha256="cd" * 32), "another build of hybrid-test 1"),
        (lambda d: d["novelty"].update(onnx_b64="AAAA"), "novelty graph sha256"),
        (lambda d: d.update(thresholds={"scan": "high"}), "thresholds.scan"),
        (lambda d: d.update(surprise=1), "surprise: Extra inputs are not permitted"),
    ],
)
def test_a_profile_for_another_model_an_unknown_version_or_a_corrupt_one_is_refused_in_one_line(
    tmp_path: Path, change: object, message: str
) -> None:
    nov = Novelty.embed(b"graph", threshold=0.5, window_length=10, features=82)
    data = profile(novelty=nov).model_dump(mode="json")
    change(data)  # type: ignore[operator]
    with pytest.raises(ConfigError) as err:
        load_profile(write(tmp_path, data), MODEL)
    text = str(err.value)
    assert message in text and "\n" not in text and text.startswith(f"profile: {tmp_path}/site.profile.json: ")


@pytest.mark.parametrize(("content", "message"), [("{not json", "not a JSON site profile"), ("", "not a JSON")])
def test_a_file_that_is_not_json_is_refused(tmp_path: Path, content: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_profile(write(tmp_path, content))
    with pytest.raises(ConfigError, match="No such file"):
        load_profile(tmp_path / "absent.profile.json")


def test_the_novel_rule_needs_a_novelty_model() -> None:
    with pytest.raises(ValueError, match="needs a novelty model"):
        profile(rule=Rule(kind=RuleKind.NOVEL))


def test_the_default_profile_sits_beside_the_model() -> None:
    assert profile_path_for(Path("/m/hybrid-lab.onnx")) == Path("/m/hybrid-lab.profile.json")


def test_the_gate_asks_for_the_family_threshold_and_with_the_novel_rule_for_novelty() -> None:
    v = verdict(score=0.9, classes=("BENIGN", "scan", "dos"))  # 0.45 scan, 0.45 dos: predicted scan (first max)
    assert family_of_verdict(v) == (Family.SCAN, "scan")
    assert family_of_verdict(v, gate=ProfileGate("hybrid-test", (("scan", 0.4),))) == (Family.SCAN, "scan")
    assert family_of_verdict(v, gate=ProfileGate("hybrid-test", (("scan", 0.5),))) is None
    assert family_of_verdict(v, gate=ProfileGate("other-model", (("scan", 0.5),))) is not None
    novel = ProfileGate("hybrid-test", (), novelty_min=1.0)
    assert family_of_verdict(v, gate=novel) is not None  # no novelty scored: the rule cannot judge, it passes
    from dataclasses import replace

    assert family_of_verdict(replace(v, novelty=0.4), gate=novel) is None
    assert family_of_verdict(replace(v, novelty=3.0), gate=novel) == (Family.SCAN, "scan")


def test_novelty_travels_with_a_verdict_and_old_verdicts_decode_without_it() -> None:
    from dataclasses import replace

    v = replace(verdict(score=0.9), novelty=2.5)
    assert Verdict.decode(v.encode()).novelty == 2.5
    plain = verdict(score=0.9).encode()
    assert "novelty" not in plain and Verdict.decode(plain).novelty is None


def test_learn_leaves_out_the_flows_of_the_episodes_found_in_the_learning_traffic() -> None:
    from tapwatch.features.schema import FlowRecord
    from tests.support.alerting import meta

    def rec(i: int, src: str, dst: str, t: int) -> FlowRecord:
        return FlowRecord(meta=meta(i, src=src, dst=dst, last_seen_ms=t + 500), values=tuple(0.0 for _ in range(82)))

    records = [rec(1, "10.0.0.9", "10.0.0.2", 100_000), rec(2, "10.0.0.9", "10.0.0.3", 30_000),
               rec(3, "10.0.0.9", "10.0.0.2", 500_000), rec(4, "10.0.0.5", "10.0.0.7", 100_000),
               rec(5, "10.0.0.6", "10.0.0.7", 100_000)]  # fmt: skip
    found = [Found("scan", "source", "10.0.0.9", 90_000, 200_000), Found("dos", "victim", "10.0.0.7", 0, 1)]
    [part], dropped = leave_out([Part("x.pcap", "pcap", records)], found)
    # the scanner's flows from a minute before its episode to its end; the victim episode ended before its flows
    assert [r.meta.flow_id for r in part.records] == [records[i].meta.flow_id for i in (2, 3, 4)] and dropped == 2

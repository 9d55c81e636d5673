"""The Alert record, its EVE JSON, and the stable signature ids (unit tests; the alerting doctests run here)."""

from __future__ import annotations

import dataclasses
import doctest
import importlib
import json
from datetime import datetime

import pytest

from tapwatch.alerting.alert import (
    Alert,
    Contribution,
    ExplanationStatus,
    alerted_class,
    eve_timestamp,
    from_verdict,
)
from tapwatch.alerting.errors import InvalidAlert
from tapwatch.alerting.signatures import (
    CLASSES,
    FALLBACK_BASE,
    FAMILIES,
    SID_BASE,
    Category,
    Severity,
    normalise,
    signature_for,
)
from tests.support.alerting import meta, verdict
from tests.support.env import REPO

DOCS = REPO / "docs" / "alerts.md"
MODULES = ["alert", "alerter", "budget", "explain", "metrics", "netsinks", "signatures", "sinks", "suppress"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    module = importlib.import_module(f"tapwatch.alerting.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def alert(**kw: object) -> Alert:
    v = verdict(3, 0.93)
    base = from_verdict(v, signature_for(v.model, "PortScan"), None, ExplanationStatus.BUDGET)
    return dataclasses.replace(base, **kw)


def test_eve_has_the_suricata_fields() -> None:
    a = alert(explanation=(Contribution("Flow Duration", 1200.0, 0.31),), explanation_status=ExplanationStatus.OK)
    line = a.to_json()
    assert "\n" not in line
    eve = json.loads(line)
    assert list(eve)[:10] == ["timestamp", "flow_id", "event_type", "src_ip", "src_port", "dest_ip", "dest_port",
                              "proto", "community_id", "direction"]  # fmt: skip
    assert eve["event_type"] == "alert" and eve["proto"] == "TCP" and eve["flow_id"] == 1003
    assert datetime.fromisoformat(eve["timestamp"]).timestamp() * 1000 == pytest.approx(1_700_000_000_000)
    assert eve["alert"] == {"action": "allowed", "gid": 1, "signature_id": 9101006, "rev": 1,
                            "signature": "TAPWATCH ML PortScan (hybrid)", "category": "Detection of a Network Scan",
                            "severity": 3}  # fmt: skip
    ml = eve["ml"]
    assert ml["model"] == "hybrid-test" and ml["model_version"] == "1" and ml["score"] == 0.93
    assert ml["probabilities"] == {"BENIGN": pytest.approx(0.07), "PortScan": 0.93}
    assert ml["window_len"] == 4 and ml["explanation_status"] == "ok"
    assert ml["explanation"] == [{"feature": "Flow Duration", "value": 1200, "weight": 0.31}]
    assert ml["flow_ids"] == [1003] and ml["alert_id"] == a.id
    assert eve["flow"]["pkts"] == 6 and eve["host"] == "tap-1"


def test_skipped_explanation_says_why_and_has_no_list() -> None:
    eve = alert().to_eve()
    assert eve["ml"]["explanation_status"] == "skipped_budget" and "explanation" not in eve["ml"]


@pytest.mark.parametrize("proto,name", [(6, "TCP"), (17, "UDP"), (1, "ICMP"), (58, "IPv6-ICMP"), (99, "99")])
def test_proto_names_as_suricata_writes_them(proto: int, name: str) -> None:
    assert alert(flow=meta(3, proto=proto)).to_eve()["proto"] == name


@pytest.mark.parametrize(
    "change,field",
    [
        ({"score": 1.5}, "score"),
        ({"flow": meta(1, src="10.0.0.300")}, "src_ip"),
        ({"flow_ids": ()}, "flow_ids"),
        ({"explanation_status": ExplanationStatus.OK}, "explanation"),
        ({"explanation_status": "ok"}, "explanation_status"),
        ({"window_flows": 9}, "window_flows"),
        ({"id": "not-a-uuid"}, "id"),
    ],
)
def test_validation_names_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidAlert) as err:
        alert(**change)
    assert err.value.field == field


def test_every_alert_has_its_own_uuid() -> None:
    assert alert().id != alert().id


def test_timestamp_is_iso8601_with_offset() -> None:
    ts = eve_timestamp(0)
    assert ts == "1970-01-01T00:00:00.000000+0000" and datetime.fromisoformat(ts).utcoffset() is not None


def test_signature_ids_do_not_depend_on_class_order() -> None:
    a = verdict(1, 0.9, classes=("BENIGN", "DoS Hulk", "PortScan"))
    b = dataclasses.replace(a, class_names=("PortScan", "BENIGN", "DoS Hulk"), probabilities=(0.45, 0.1, 0.45),
                            predicted="PortScan")  # fmt: skip
    assert signature_for(a.model, "PortScan").sid == signature_for(b.model, alerted_class(b)).sid == 9101006


def test_pinned_signature_ids() -> None:
    """Changing any of these breaks users' SIEM rules and threshold files: the registries are append-only."""
    assert signature_for("hybrid-cic", "DoS Hulk").sid == 9_101_001
    assert signature_for("Hybrid Seq2Seq-ConvLSTM", "Web Attack – SQL Injection").sid == 9_101_012
    assert signature_for("lunet-unsw", "Exploits").sid == 9_103_031
    assert signature_for("seq2seq-ton", "scanning").sid == 9_102_053
    assert signature_for("hybrid-cic", "FTP-Patator - Attempted").sid == 9_101_507
    assert signature_for("anything", "PortScan", family_override="lunet").sid == 9_103_006


def test_unknown_names_hash_into_the_reserved_range() -> None:
    for model, cls in [("test-identity", "ATTACK"), ("hybrid", "Zero-day"), ("mystery", "PortScan")]:
        sig = signature_for(model, cls)
        assert FALLBACK_BASE <= sig.sid < FALLBACK_BASE + 10_000 and not sig.registered
        assert signature_for(model, cls) == sig
    assert signature_for("hybrid", "Zero-day").category is Category.UNKNOWN


def test_registry_is_consistent() -> None:
    aliases = [a for _, names in CLASSES.values() for a in names]
    assert len(aliases) == len(set(aliases)), "a class name is registered twice"
    assert all(a == normalise(a) for a in aliases)
    assert all(0 < i < 500 for i in CLASSES) and all(0 < i < 90 for i in FAMILIES)
    assert SID_BASE + 89 * 1000 + 999 < FALLBACK_BASE


@pytest.mark.parametrize(
    "cls,severity",
    [("Botnet", Severity.HIGH), ("Web Attack - XSS", Severity.HIGH), ("SSH-Patator", Severity.MEDIUM),
     ("DDoS", Severity.MEDIUM), ("Portscan", Severity.LOW), ("DoS Hulk - Attempted", Severity.LOW),
     ("Botnet - Attempted", Severity.MEDIUM), ("Fuzzers", Severity.MEDIUM)],
)  # fmt: skip
def test_severity_mapping(cls: str, severity: Severity) -> None:
    assert signature_for("hybrid", cls).severity is severity


def test_alerted_class_is_the_likeliest_attack_when_benign_wins() -> None:
    v = dataclasses.replace(verdict(1, 0.6, classes=("BENIGN", "DDoS", "PortScan")),
                            probabilities=(0.4, 0.25, 0.35), predicted="BENIGN")  # fmt: skip
    assert alerted_class(v) == "PortScan"
    assert alerted_class(v, benign="DDoS") == "BENIGN"


def test_docs_list_the_registries() -> None:
    text = DOCS.read_text()
    for idx, names in FAMILIES.items():
        assert f"| {idx} | {names[0]}" in text
    for idx, (cat, names) in CLASSES.items():
        assert f"| {idx} | {names[0]} | {cat.value} |" in text
    for cat in Category:
        assert f"| {cat.value} | {cat.description} | {int(cat.severity)} |" in text

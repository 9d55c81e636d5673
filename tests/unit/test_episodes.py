"""Episodes from evidence: what opens one, what it writes, when it closes; the volume view's rules; the EVE line.

The episode alerter on the in-memory bus end to end is here too; on Redis (two alerters, a restart):
tests/redis/test_episodes_redis.py.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.allowlist import AllowList
from tapwatch.alerting.episode_alert import EpisodeAlert
from tapwatch.alerting.episode_alerter import EpisodeAlerter, EpisodePolicy
from tapwatch.alerting.episodes import EpisodeConfig, EpisodeLine, EpisodeTracker, LineState
from tapwatch.alerting.evidence import Evidence, ViewKind, from_verdict
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.sinks import FileSink, SinkSet
from tapwatch.alerting.volume import VolumeRules
from tapwatch.bus.state import MemoryStateStore
from tapwatch.bus.streams import DEAD_STREAM, MemoryBus
from tapwatch.features.aggregates import AGGREGATE_SCHEMA_VERSION, AGGREGATES_STREAM, AggregateRecord, Beacon, View
from tapwatch.features.baseline import SiteBaseline
from tapwatch.features.errors import ConfigError
from tapwatch.features.families import Family
from tapwatch.features.schema import ExpiryReason, FlowMeta
from tests.support.alerting import meta, put, read_jsonl, settings, verdict

T0 = 1_700_000_000_000
CLASSES = ("BENIGN", "SSH-Patator", "DoS Hulk", "Portscan")


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def window_ev(t_ms: int, family: Family = Family.BRUTEFORCE, src: str = "10.0.0.9", dst: str = "10.0.0.2",
              score: float = 0.95) -> Evidence:  # fmt: skip
    m = meta(1, src=src, dst=dst, last_seen_ms=t_ms)
    return Evidence(family, ViewKind.WINDOW, dst if family.by_victim else src, t_ms, score, m, "SSH-Patator",
                    sources=(src,), targets=(dst,), ports=(22,), n_sources=1, n_targets=1, n_ports=1)  # fmt: skip


def tracker(**kw: Any) -> tuple[EpisodeTracker, Clock]:
    clock = Clock()
    return EpisodeTracker(MemoryStateStore(), EpisodeConfig(**kw), wall=clock), clock


def states(lines: list[Any]) -> list[str]:
    return [line.state.value for line in lines]


def test_a_single_odd_window_opens_nothing_and_is_forgotten_after_the_quiet_period() -> None:
    t, _ = tracker(open_windows=3, quiet_s=60)
    assert t.observe(window_ev(T0)) == []
    assert t.observe(window_ev(T0 + 61_000 * 2)) == []  # the first one fell out of the minute: still one
    assert states(t.close_all()) == []  # never opened: nothing to close


def test_a_batch_of_evidence_gives_the_lines_of_one_piece_at_a_time() -> None:
    """``observe_many`` (one change of the store per batch) and ``observe`` per piece agree line for line: a close
    of a quiet episode, the open, the updates, across hosts and families interleaved."""
    evs = [window_ev(T0 + i * 3_000, fam, src=f"10.0.0.{i % 3}")
           for i in range(60) for fam in (Family.BRUTEFORCE, Family.SCAN)]  # fmt: skip
    one, _ = tracker(open_windows=3, quiet_s=120, update_every_s=60)
    batched, _ = tracker(open_windows=3, quiet_s=120, update_every_s=60)
    singles = [one.observe(ev) for ev in evs]
    together = [ls for i in range(0, len(evs), 16) for ls in batched.observe_many(evs[i : i + 16])]

    def shape(found: list[list[EpisodeLine]]) -> list[list[tuple[str, str, int]]]:
        return [[(x.state.value, x.episode["key"], x.episode["evidence"]) for x in ls] for ls in found]

    assert shape(together) == shape(singles)
    assert {"open", "update"} <= {x.state.value for ls in together for x in ls}
    assert sorted(batched.store.unsettled()) == sorted(x.id for ls in together for x in ls)
    assert states(batched.close_all()) == states(one.close_all()) == ["close"] * 6


def test_an_episode_opens_updates_at_a_bounded_rate_and_closes_after_quiet() -> None:
    t, clock = tracker(open_windows=3, quiet_s=120, update_every_s=60)
    lines = []
    for i in range(0, 20 * 60):  # one window a second for 20 minutes
        lines += t.observe(window_ev(T0 + i * 1000))
    clock.t = 500.0  # half an hour of wall time without evidence
    lines += t.tick()
    assert states(lines)[0] == "open" and states(lines)[-1] == "close"
    assert set(states(lines[1:-1])) == {"update"}
    # updates after 1, 2, 4, 8 minutes (the gap doubles): 6 lines in 20 minutes, never 10 in five minutes
    assert len(lines) == 6
    times = [line.episode["lines"][-1] for line in lines]
    assert all(sum(1 for u in times if 0 <= u - s < 300_000) <= 10 for s in times)
    last = lines[-1].episode
    assert last["flows"] == 1200 and last["evidence"] == 1200 and len({line.episode["id"] for line in lines}) == 1


def test_another_family_of_the_same_host_is_another_episode_and_dos_is_keyed_by_its_victim() -> None:
    t, _ = tracker(open_windows=1, open_concurrent=1)
    a = t.observe(window_ev(T0, Family.BRUTEFORCE, src="10.0.0.9", dst="10.0.0.2"))
    b = t.observe(window_ev(T0, Family.SCAN, src="10.0.0.9", dst="10.0.0.2"))
    c = t.observe(window_ev(T0, Family.DOS, src="10.0.0.9", dst="10.0.0.2"))
    d = t.observe(window_ev(T0, Family.DOS, src="10.0.0.10", dst="10.0.0.2"))  # another flooder, same victim
    keys = [x[0].episode["key"] for x in (a, b, c)]
    assert keys == ["bruteforce|source|10.0.0.9", "scan|source|10.0.0.9", "dos|victim|10.0.0.2"]
    assert d == [] and t.store.get("dos|victim|10.0.0.2")["n_sources"] == 2  # type: ignore[index]


def flood_ev(first_ms: int, last_ms: int, src: str = "10.0.0.9") -> Evidence:
    m = meta(1, src=src, dst="10.0.0.2", last_seen_ms=last_ms)
    m = dataclasses.replace(m, first_seen_ms=first_ms)
    return Evidence(Family.DOS, ViewKind.WINDOW, "10.0.0.2", last_ms, 0.99, m, "DoS slowloris", sources=(src,),
                    targets=("10.0.0.2",), ports=(80,), n_sources=1, n_targets=1, n_ports=1)  # fmt: skip


def test_a_floods_window_evidence_opens_only_when_its_connections_were_open_at_once() -> None:
    t, _ = tracker(open_windows=8, open_concurrent=6)
    # one client's requests one after another, 4 s each (an HTTP test suite): 40 windows the model calls DoS
    one_by_one = [flood_ev(T0 + i * 4100, T0 + i * 4100 + 4000) for i in range(40)]
    assert [line for ev in one_by_one for line in t.observe(ev)] == []
    assert t.store.get("dos|victim|10.0.0.2")["status"] == "pending"  # type: ignore[index]
    # slowloris: connections held open together; open once 8 windows are in (the requests above fell out of the
    # minute) and at least 6 were open at once
    start = T0 + 200_000
    held = [flood_ev(start + i * 100, start + 30_000 + i * 100, src="10.0.0.66") for i in range(10)]
    opened = [(i, line) for i, ev in enumerate(held) for line in t.observe(ev)]
    assert [(i, line.state.value) for i, line in opened] == [(7, "open")]
    t3, _ = tracker(open_windows=1, open_concurrent=6)  # one window is enough here, six at once still are not
    assert [(i, line.state.value) for i, ev in enumerate(held) for line in t3.observe(ev)] == [(5, "open")]
    # a volume rule's flood evidence is decisive alone, whatever its flows' overlap
    t2, _ = tracker(open_windows=8, open_concurrent=6)
    rule = Evidence(Family.DOS, ViewKind.VOLUME, "10.0.0.2", T0, 1.0, meta(2), "SYN flood")
    assert states(t2.observe(rule)) == ["open"]


def test_rule_evidence_names_the_episode_before_the_models_windows_and_is_explained_anew() -> None:
    t, _ = tracker(open_windows=1)
    (opened,) = t.observe(window_ev(T0, Family.BOTNET, score=0.99))
    key, eid = opened.episode["key"], opened.episode["id"]
    t.save(key, eid, {"explanation": [["Flow IAT Min", 3.0, 0.2]], "summary": "from LIME"})
    c2 = meta(2, src="10.0.0.9", dst="203.0.113.5", last_seen_ms=T0 + 40_000)
    beacon = Evidence(Family.BOTNET, ViewKind.VOLUME, "10.0.0.9", T0 + 40_000, 0.9, c2, "periodic beacon",
                      flows=8, sources=("10.0.0.9",), targets=("203.0.113.5",), ports=(8443,), n_sources=1,
                      n_targets=1, n_ports=1)  # fmt: skip
    t.observe(beacon)
    t.observe(window_ev(T0 + 41_000, Family.BOTNET, score=1.0))  # a stronger window does not take it back
    s = t.store.get(key)
    assert s is not None and (s["rep_view"], s["rep_detail"]) == ("volume", "periodic beacon")
    assert json.loads(s["rep"])["dst_ip"] == "203.0.113.5"
    assert "explanation" not in s and "summary" not in s  # the next line is explained from the beacon's counts


def test_evidence_after_the_quiet_period_opens_a_new_episode() -> None:
    t, _ = tracker(open_windows=1, quiet_s=60)
    first = t.observe(window_ev(T0))
    second = t.observe(window_ev(T0 + 90_000))
    assert states(second) == ["close", "open"]
    assert second[0].episode["id"] == first[0].episode["id"] != second[1].episode["id"]


def test_verdicts_that_the_model_calls_benign_are_no_evidence_whatever_their_score() -> None:
    # seq2seq-cic's threshold of 0.119 let windows through whose most probable class was BENIGN
    low = verdict(1, score=0.3, classes=CLASSES, threshold=0.119)  # P(benign) 0.7, the argmax
    assert low.over_threshold and low.predicted == "BENIGN"
    assert from_verdict(low, "BENIGN") is None
    high = verdict(2, score=0.99, classes=("BENIGN", "DoS Hulk"))
    ev = from_verdict(high, "BENIGN")
    assert ev is not None and ev.family is Family.DOS and ev.entity == high.flow.dst_ip


def agg(view: View, key: str, **counts: Any) -> AggregateRecord:
    return AggregateRecord(sensor="s", view=view, key=key, start_ms=T0, bucket_ms=10_000, last_ms=T0 + 9_000,
                           sample=meta(1, last_seen_ms=T0 + 9_000), **counts)  # fmt: skip


@pytest.mark.parametrize(
    ("record", "family", "detail"),
    [
        (agg(View.SOURCE, "10.0.0.9", flows=1000, unanswered=990, distinct_ports=1000, distinct_peers=1),
         Family.SCAN, "vertical port scan"),
        (agg(View.SOURCE, "10.0.0.9", flows=254, rejected=250, distinct_ports=1, distinct_peers=254),
         Family.SCAN, "horizontal scan"),
        (agg(View.VICTIM, "10.0.0.2", flows=20_000, tcp=20_000, no_payload=20_000, unanswered=20_000,
             distinct_peers=4096, capped=True, top_port=80, top_port_flows=20_000),
         Family.DOS, "distributed SYN flood"),
        (agg(View.VICTIM, "10.0.0.2", flows=900, udp=900, unanswered=900, distinct_peers=300, top_port=4444,
             top_port_flows=900, top_src_port=53, top_src_port_flows=900), Family.DOS, "reflection from port 53"),
        (agg(View.VICTIM, "10.0.0.2", flows=600, udp=600, unanswered=600, distinct_peers=1, top_port=9,
             top_port_flows=600), Family.DOS, "UDP flood"),
        # a ping flood is one flow of 15,000 packets, expired into a bucket of its victim's other flows
        (agg(View.VICTIM, "10.0.0.2", flows=40, packets=15_400, icmp=1, icmp_packets=15_000, udp=39,
             distinct_ports=12, distinct_peers=5, top_port=53, top_port_flows=15), Family.DOS, "ICMP flood"),
        (agg(View.SOURCE, "10.0.0.9", flows=60, pair_flows=60, pair_port=22, pair_peer="10.0.0.2", pair_bytes=60_000,
             distinct_ports=1, distinct_peers=1), Family.BRUTEFORCE, "repeated logins to one service"),
        (agg(View.SOURCE, "10.0.0.9", flows=60, pair_flows=60, pair_port=80, pair_peer="10.0.0.2",
             distinct_ports=1, distinct_peers=1), Family.WEBATTACK, "repeated web requests"),
        (agg(View.SOURCE, "10.0.0.9", flows=1, beacons=(Beacon("10.0.0.66", 8443, 9, 5000.0, 0.12),)),
         Family.BOTNET, "periodic beacon"),
    ],
)  # fmt: skip
def test_the_volume_rules_name_each_kind_of_traffic(record: AggregateRecord, family: Family, detail: str) -> None:
    found = VolumeRules(SiteBaseline()).judge(record)
    assert [(e.family, e.detail) for e in found] == [(family, detail)]
    assert found[0].view is ViewKind.VOLUME and found[0].facts


def test_many_connections_to_one_service_open_an_episode_only_beside_the_models_evidence() -> None:
    """The repeated-service count alone is a test harness as often as a password guesser: it waits for the window
    view to call the same host's connections guessing (within a minute, either order); scans and floods do not."""
    guessing = agg(View.SOURCE, "10.0.0.9", flows=60, pair_flows=60, pair_port=88, pair_peer="10.0.0.2",
                   pair_bytes=30_000, distinct_ports=1, distinct_peers=1)  # fmt: skip
    (pair,) = VolumeRules(SiteBaseline()).judge(guessing)
    assert not pair.alone
    t, _ = tracker(open_windows=8, quiet_s=120)
    assert t.observe(pair) == []  # the count alone: pending
    assert states(t.observe(window_ev(T0 + 90_000))) == []  # the model agrees, but 90 s later: not together
    assert states(t.observe(window_ev(T0 + 20_000))) == ["open"]  # within the minute: two views agree
    (closed,) = t.close_all()
    assert closed.episode["views"] == ["volume", "window"] and closed.episode["rep_detail"] == pair.detail

    t, _ = tracker(open_windows=8)
    assert states(t.observe(window_ev(T0))) == []
    assert states(t.observe(pair)) == ["open"]  # the window came first
    t, _ = tracker(open_windows=8)
    assert t.observe(pair) == [] and t.observe(pair) == [] and states(t.close_all()) == []  # never corroborated
    scan = agg(View.SOURCE, "10.0.0.9", flows=1000, unanswered=990, distinct_ports=1000, distinct_peers=1)
    (alone,) = VolumeRules(SiteBaseline()).judge(scan)
    assert alone.alone and states(tracker()[0].observe(alone)) == ["open"]


def test_the_volume_rules_leave_a_scans_victim_and_ordinary_traffic_alone() -> None:
    rules = VolumeRules(SiteBaseline(periodic=["10.0.0.3:123"]))
    victim_of_scan = agg(View.VICTIM, "10.0.0.2", flows=1000, tcp=1000, rejected=990, distinct_ports=1000,
                         top_port=80, top_port_flows=1, distinct_peers=1)  # fmt: skip
    browsing = agg(View.SOURCE, "10.0.0.7", flows=40, distinct_ports=2, distinct_peers=12, pair_flows=9)
    ntp = agg(View.SOURCE, "10.0.0.7", flows=1, beacons=(Beacon("10.0.0.3", 123, 12, 64_000.0, 0.01),))
    pinged = agg(View.VICTIM, "10.0.0.2", flows=40, packets=9_000, icmp=1, icmp_packets=3_000, udp=39,
                 distinct_ports=12, distinct_peers=5, top_port=53, top_port_flows=15)  # fmt: skip
    assert rules.judge(victim_of_scan) == rules.judge(browsing) == rules.judge(ntp) == rules.judge(pinged) == []


def test_a_polled_service_does_not_hide_a_beacon_of_the_same_host() -> None:
    rules = VolumeRules(SiteBaseline(periodic=["10.0.0.3:123"]))
    c2 = FlowMeta(1, "1:c2", "10.0.0.7", 50000, "203.0.113.5", 8443, 6, 9_000, 9_600, 12, 4000,
                  ExpiryReason.TCP_FIN, 9_700, "s")  # fmt: skip
    record = agg(View.SOURCE, "10.0.0.7", flows=30, top_peer="10.0.0.3", pair_peer="10.0.0.3", pair_port=123,
                 beacons=(Beacon("10.0.0.3", 123, 16, 64_000.0, 0.01),
                          Beacon("203.0.113.5", 8443, 8, 5_000.0, 0.17, c2),
                          Beacon("10.0.0.4", 443, 8, 2_000.0, 0.9)))  # fmt: skip
    (found,) = rules.judge(record)
    assert (found.family, found.targets, found.ports, found.flows) == (Family.BOTNET, ("203.0.113.5",), (8443,), 8)
    assert found.flow == c2  # the alert names a flow of the beacon, not the host's busiest pair
    assert found.at_ms == c2.last_seen_ms  # and is dated by it, not by the bucket's newest flow


def test_an_alert_line_is_eve_shaped_with_the_episode_family_explanation_and_summary() -> None:
    t, _ = tracker(open_windows=1)
    rules = VolumeRules(SiteBaseline(medians={"victim": {"flows": 3.0, "packets": 20.0, "distinct_peers": 1.0}}))
    flood = agg(View.VICTIM, "10.0.0.2", flows=20_000, packets=40_000, tcp=20_000, no_payload=20_000,
                distinct_peers=4096, top_port=80, top_port_flows=20_000, top_peer="198.51.100.7")  # fmt: skip
    (ev,) = rules.judge(flood)
    (line,) = t.observe(ev)
    facts = line.episode["facts"]
    alert = EpisodeAlert(line, tuple(), "x")
    eve = json.loads(alert.to_json())
    assert eve["event_type"] == "alert" and eve["src_ip"] == "198.51.100.7" and eve["dest_ip"] == "10.0.0.2"
    assert eve["alert"]["signature_id"] == 9_200_002 and eve["alert"]["category"] == "Attempted Denial of Service"
    assert eve["alert"]["severity"] == 1  # a large, certain flood
    ep = eve["episode"]
    assert ep["state"] == "open" and ep["sources"] == 4096 and ep["flows"] == 20_000
    assert ep["first_seen"].endswith("Z") and ep["last_seen"] >= ep["first_seen"]
    assert eve["ml"]["family"] == "dos" and eve["ml"]["class"] == "distributed SYN flood"
    assert [f[0] for f in facts] == ["flows", "packets", "distinct_peers"]


def test_a_source_episodes_line_names_one_flow_that_happened_and_its_busiest_targets() -> None:
    t, _ = tracker(open_windows=1)
    t.observe(window_ev(T0, Family.SCAN, dst="10.0.0.2"))
    t.observe(window_ev(T0 + 1_000, Family.SCAN, dst="10.0.0.2"))
    t.observe(window_ev(T0 + 2_000, Family.SCAN, dst="10.0.0.3", score=0.99))
    s = t.store.get("scan|source|10.0.0.9")
    assert s is not None
    eve = json.loads(EpisodeAlert(EpisodeLine(LineState.UPDATE, s), (), "x").to_json())
    # the representative (strongest) window went to 10.0.0.3; the busiest target is still 10.0.0.2
    assert (eve["src_ip"], eve["dest_ip"], eve["dest_port"]) == ("10.0.0.9", "10.0.0.3", 80)
    assert eve["episode"]["top_targets"] == ["10.0.0.2", "10.0.0.3"] and eve["episode"]["top_sources"] == ["10.0.0.9"]


def make_alerter(bus: MemoryBus, out: Path, policy: EpisodePolicy | None = None, **kw: Any) -> EpisodeAlerter:
    m = AlerterMetrics(CollectorRegistry())
    s = settings(episode_open_windows=2, **kw)
    tracker_ = EpisodeTracker(MemoryStateStore(), EpisodeConfig(open_windows=2))
    return EpisodeAlerter(bus, s, SinkSet([FileSink(out)], m), m, tracker_, None,
                          policy or EpisodePolicy(rules=VolumeRules(SiteBaseline())))  # fmt: skip


def drain_both(a: EpisodeAlerter) -> None:
    while a.verdict_loop.step() + a.aggregate_loop.step():
        pass


def test_the_episode_alerter_writes_episode_lines_with_explanations_and_dead_letters_junk(tmp_path: Path) -> None:
    bus, out, verdicts = MemoryBus(), tmp_path / "alerts.jsonl", tmp_path / "verdicts.jsonl"
    a = make_alerter(bus, out, verdicts_file=str(verdicts))
    put(bus, *(verdict(i, 0.97, classes=("BENIGN", "SSH-Patator"), src="10.0.0.9") for i in range(1, 6)))
    put(bus, verdict(9, 0.2, classes=("BENIGN", "SSH-Patator"), src="10.0.0.7"))
    scan = agg(View.SOURCE, "10.0.0.50", flows=500, unanswered=500, distinct_ports=500, distinct_peers=1)
    bus.add_many(AGGREGATES_STREAM, [scan.encode(), {"v": str(AGGREGATE_SCHEMA_VERSION), "view": "sideways"}])
    drain_both(a)
    a._next_tick = 0.0  # the alerter looks for quiet episodes once a second; look now
    a.tick()
    assert a.metrics.registry.get_sample_value("tapwatch_alerting_open_episodes") == 2  # both still open
    a.close(end_of_input=True)
    lines = list(read_jsonl(out))
    assert [(x["ml"]["family"], x["episode"]["state"]) for x in lines] == [
        ("bruteforce", "open"),
        ("scan", "open"),
        ("bruteforce", "close"),
        ("scan", "close"),
    ]
    assert all(x["ml"]["explanation"] and x["ml"]["summary"] for x in lines)
    assert "500 destination ports" in lines[1]["ml"]["summary"]
    assert len(list(read_jsonl(verdicts))) == 6  # every verdict, one line each
    bus.ensure_group(DEAD_STREAM, "t")
    dead = bus.read_group(DEAD_STREAM, "t", "t", 10, 1)
    assert [(f["stream"], f["reason"]) for _, f in dead] == [(AGGREGATES_STREAM.encode(), b"value")]


def test_the_allow_list_silences_an_episode_and_counts_it(tmp_path: Path) -> None:
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    policy = EpisodePolicy(rules=VolumeRules(SiteBaseline()), allow=AllowList.parse("10.0.0.0/28\nport 9999"))
    a = make_alerter(bus, out, policy)
    put(bus, *(verdict(i, 0.97, classes=("BENIGN", "SSH-Patator"), src="10.0.0.9") for i in range(1, 6)))
    drain_both(a)
    a.close(end_of_input=True)
    assert list(read_jsonl(out)) == []
    assert a.metrics.registry.get_sample_value("tapwatch_alerting_episodes_suppressed_total",
                                               {"reason": "whitelist"}) == 1  # fmt: skip


def test_a_bad_allow_list_names_its_line() -> None:
    with pytest.raises(ConfigError, match="allow-list line 2: 'port 70000'"):
        AllowList.parse("10.0.0.1\nport 70000")


def test_a_flow_meta_survives_the_state_round_trip() -> None:
    t, _ = tracker(open_windows=1)
    (line,) = t.observe(window_ev(T0))
    assert FlowMeta.from_json(line.episode["rep"]).last_seen_ms == T0
    assert line.state is LineState.OPEN


@pytest.mark.parametrize("in_line", [True, False])
def test_lime_explains_an_episode_once_in_line_or_from_its_next_line(tmp_path: Path, in_line: bool) -> None:
    """In line (``detect``), the open line waits for LIME; otherwise (the service, ``run``) the open line goes out
    at once with the score's explanation, and LIME's, done in the background within the budget, comes with the
    episode's next line. Either way LIME runs once per episode, timed in
    ``tapwatch_alerting_explanation_latency_seconds``."""
    import threading

    import numpy as np

    from tapwatch.alerting.alert import Contribution

    asked: list[Any] = []
    release = threading.Event()

    def lime(window: Any) -> tuple[Contribution, ...]:
        asked.append(window)
        release.wait(10)  # LIME is slow: the open line must not wait for it (unless in line)
        return (Contribution("Flow Duration", 1.0, 0.5),)

    if in_line:
        release.set()
    bus, out = MemoryBus(), tmp_path / "alerts.jsonl"
    a = make_alerter(bus, out, EpisodePolicy(rules=VolumeRules(SiteBaseline()), explain=lime),
                     episode_explain_in_line=in_line, explain_deadline_ms=30_000)  # fmt: skip
    window = np.zeros((10, 4), dtype=np.float32)
    put(bus, *(verdict(i, 0.97, classes=("BENIGN", "SSH-Patator"), src="10.0.0.9", tensor=window) for i in range(1, 6)))
    drain_both(a)
    (opened,) = list(read_jsonl(out))
    first = [c["feature"] for c in opened["ml"]["explanation"]]
    assert first == (["Flow Duration"] if in_line else ["attack_score", "windows_or_buckets"])
    assert "SSH-Patator" in opened["ml"]["summary"]
    release.set()
    a.close(end_of_input=True)
    closed = list(read_jsonl(out))[-1]
    assert closed["episode"]["state"] == "close"
    assert [c["feature"] for c in closed["ml"]["explanation"]] == ["Flow Duration"]
    assert len(asked) == 1
    assert a.metrics.registry.get_sample_value("tapwatch_alerting_explanation_latency_seconds_count") == 1

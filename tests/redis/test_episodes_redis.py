"""Episode state in a real Redis: two alerters on one verdict stream open one episode per (host, family) and
write each line once; a restarted alerter continues the episodes that were open; the store's transaction holds
under contention."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from tapwatch.alerting.episode_alerter import EpisodeAlerter, EpisodePolicy
from tapwatch.alerting.episodes import EpisodeConfig, EpisodeTracker
from tapwatch.alerting.evidence import from_verdict
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.sinks import FileSink, RedisStreamSink, SinkSet
from tapwatch.alerting.volume import VolumeRules
from tapwatch.bus.state import RedisStateStore
from tapwatch.bus.streams import ALERTS_STREAM, VERDICTS_STREAM, RedisBus
from tapwatch.features.baseline import SiteBaseline
from tests.support.alerting import Crash, CrashingSink, put, read_jsonl, settings, verdict

CLASSES = ("BENIGN", "SSH-Patator", "Portscan")


def alerter(url: str, out: Path, name: str) -> EpisodeAlerter:
    bus = RedisBus(url)
    m = AlerterMetrics(CollectorRegistry())
    s = settings(redis_url=url, alerter_consumer=name, read_count=4)
    tracker = EpisodeTracker(RedisStateStore(bus.client), EpisodeConfig(open_windows=3, quiet_s=120))
    return EpisodeAlerter(bus, s, SinkSet([FileSink(out)], m), m, tracker, None,
                          EpisodePolicy(rules=VolumeRules(SiteBaseline())))  # fmt: skip


def attack(first: int, n: int, src: str, cls: str, t0: int = 1_700_000_000_000) -> list[Any]:
    """``n`` verdicts predicting ``cls`` (the first attack class of the list takes the argmax) from ``src``."""
    classes = ("BENIGN", cls, *(c for c in CLASSES[1:] if c != cls))
    return [verdict(i, 0.97, classes=classes, src=src, last_seen_ms=t0 + i * 100) for i in range(first, first + n)]


def acked_all(bus: RedisBus) -> bool:
    groups = bus.client.xinfo_groups(VERDICTS_STREAM)
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


def test_two_alerters_on_one_stream_open_one_episode_per_host_and_family(redis_server: Any, tmp_path: Path) -> None:
    bus = RedisBus(redis_server.url)
    put(bus, *attack(1, 40, "10.0.0.9", "SSH-Patator"), *attack(100, 40, "10.0.0.9", "Portscan"),
        *attack(200, 40, "10.0.0.7", "Portscan"))  # fmt: skip
    outs = [tmp_path / "a1.jsonl", tmp_path / "a2.jsonl"]
    alerters = [alerter(redis_server.url, out, f"a{i}") for i, out in enumerate(outs, 1)]
    stop = threading.Event()
    threads = [threading.Thread(target=a.verdict_loop.run, args=(stop,)) for a in alerters]
    for t in threads:
        t.start()
    while not acked_all(bus):
        threading.Event().wait(0.05)
    stop.set()
    for t in threads:
        t.join(10)
    for a in alerters:
        a.close(end_of_input=False)
    lines = list(read_jsonl(*outs))
    opened = sorted((x["ml"]["family"], x["episode"]["host"]) for x in lines if x["episode"]["state"] == "open")
    assert opened == [("bruteforce", "10.0.0.9"), ("scan", "10.0.0.7"), ("scan", "10.0.0.9")]
    assert all(list(read_jsonl(out)) for out in outs) or len(lines) == 3  # both took part (or one took all)
    store = RedisStateStore(bus.client)
    keys = store.keys()
    assert sorted(keys) == ["bruteforce|source|10.0.0.9", "scan|source|10.0.0.7", "scan|source|10.0.0.9"]
    assert sum(store.get(k)["evidence"] for k in keys) == 120  # type: ignore[index]  # each verdict once


def test_a_restarted_alerter_continues_the_open_episodes(redis_server: Any, tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    bus = RedisBus(redis_server.url)
    first = alerter(redis_server.url, out, "a1")
    put(bus, *attack(1, 10, "10.0.0.9", "SSH-Patator"))
    while first.verdict_loop.step():
        pass
    opened = list(read_jsonl(out))
    assert [x["episode"]["state"] for x in opened] == ["open"]
    del first  # the process is gone; its episode stays in Redis

    second = alerter(redis_server.url, out, "a2")
    put(bus, *attack(11, 10, "10.0.0.9", "SSH-Patator"))
    while second.verdict_loop.step():
        pass
    second.close(end_of_input=True)  # as at the end of the input: the episode's close line
    lines = list(read_jsonl(out))
    assert [x["episode"]["state"] for x in lines] == ["open", "close"]
    assert len({x["episode"]["id"] for x in lines}) == 1  # one episode across the restart
    assert lines[-1]["episode"]["flows"] == 20 and lines[-1]["episode"]["lines"] == 2
    assert RedisStateStore(bus.client).keys() == []  # closed and removed


def test_a_retried_transaction_asks_the_gate_once(redis_server: Any) -> None:
    """``threshold.config`` counts what it is asked: a transaction Redis makes us retry must not count twice."""
    bus = RedisBus(redis_server.url)
    other = RedisBus(redis_server.url).client
    store = RedisStateStore(bus.client, prefix="tapwatch:test-gate")
    asked: list[str] = []

    def gate(s: dict[str, Any]) -> str | None:
        if not asked:  # another alerter writes the episode between our read and our write: WATCH fails
            name = f"tapwatch:test-gate:{s['key']}"
            other.set(name, other.get(name) or b"{}")
        asked.append(s["id"])
        return "whitelist"

    tracker = EpisodeTracker(store, EpisodeConfig(open_windows=2, quiet_s=120), gate=gate)
    first, second = (from_verdict(v) for v in attack(1, 2, "10.0.0.9", "SSH-Patator"))
    assert first is not None and second is not None
    assert tracker.observe(first) == []  # pending: one window opens nothing
    assert tracker.observe(second) == []  # the second opens it, and the gate suppresses it
    (state,) = [store.get(k) for k in store.keys()]  # noqa: SIM118 (a store, not a dict)
    assert state is not None and state["status"] == "suppressed"
    assert len(asked) == 1  # asked once, though the store ran the step twice


def streamed(bus: RedisBus) -> list[dict[str, Any]]:
    import json

    return [json.loads(f[b"eve"]) for _, f in bus.client.xrange(ALERTS_STREAM)]


def with_stream(url: str, out: Path, name: str, *first: Any) -> EpisodeAlerter:
    """An alerter whose sinks are ``first``, the file ``out`` and the alert stream on its bus."""
    bus = RedisBus(url)
    m = AlerterMetrics(CollectorRegistry())
    s = settings(redis_url=url, alerter_consumer=name, read_count=4, claim_idle_ms=0)
    tracker = EpisodeTracker(RedisStateStore(bus.client), EpisodeConfig(open_windows=3, quiet_s=120))
    return EpisodeAlerter(bus, s, SinkSet([*first, FileSink(out), RedisStreamSink(bus)], m), m, tracker, None,
                          EpisodePolicy(rules=VolumeRules(SiteBaseline())))  # fmt: skip


def test_a_line_made_by_an_alerter_that_died_before_writing_it_is_written_once_by_another(
    redis_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """SIGKILL of the alerter at load lost an episode's open line: the transaction that opened the episode was
    stored, the line not yet written, and the verdict handed again opened nothing (it was open already)."""
    import tapwatch.alerting.episode_alerter as episode_alerter

    monkeypatch.setattr(episode_alerter, "RECOVER_MIN_MS", 0)
    bus = RedisBus(redis_server.url)
    put(bus, *attack(1, 10, "10.0.0.9", "SSH-Patator"))
    first = with_stream(redis_server.url, tmp_path / "a1.jsonl", "a1", CrashingSink())
    with pytest.raises(Crash):
        while first.verdict_loop.step():
            pass
    assert streamed(bus) == [] and not (tmp_path / "a1.jsonl").exists()  # the line is in no sink
    assert list(RedisStateStore(bus.client).unsettled()) != []  # but in the outbox

    second = with_stream(redis_server.url, tmp_path / "a2.jsonl", "a2")
    while second.verdict_loop.step():  # claims a1's pending verdicts (claim idle 0): no second open line
        pass
    second.tick()  # the outbox: a1's line, written by a2
    second._next_recovery = 0.0
    second._next_tick = 0.0
    second.tick()  # written once, not again
    lines = streamed(bus)
    assert [x["episode"]["state"] for x in lines] == ["open"]
    assert lines[0]["ml"]["alert_id"] == f"{lines[0]['episode']['id']}:1"
    assert [x["ml"]["alert_id"] for x in read_jsonl(tmp_path / "a2.jsonl")] == [lines[0]["ml"]["alert_id"]]
    assert RedisStateStore(bus.client).unsettled() == {}
    assert second.metrics.lines_recovered._value.get() == 1


def test_a_line_on_the_stream_whose_alerter_died_before_settling_it_is_not_streamed_again(
    redis_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # fmt: skip
    """The alerter died after the stream had the line and before the outbox knew: the stream keeps one copy (its
    dedup key, set with the entry); the recovering alerter's file gets it under the same ``alert_id``."""
    import tapwatch.alerting.episode_alerter as episode_alerter

    monkeypatch.setattr(episode_alerter, "RECOVER_MIN_MS", 0)
    bus = RedisBus(redis_server.url)
    put(bus, *attack(1, 10, "10.0.0.9", "SSH-Patator"))
    first = with_stream(redis_server.url, tmp_path / "a1.jsonl", "a1")

    def dies(lines: Any) -> None:
        raise Crash

    monkeypatch.setattr(first.tracker, "written", dies)
    with pytest.raises(Crash):
        while first.verdict_loop.step():
            pass
    assert [x["episode"]["state"] for x in streamed(bus)] == ["open"]
    second = with_stream(redis_server.url, tmp_path / "a2.jsonl", "a2")
    second.tick()
    assert len(streamed(bus)) == 1
    again = list(read_jsonl(tmp_path / "a2.jsonl"))
    assert [x["ml"]["alert_id"] for x in again] == [streamed(bus)[0]["ml"]["alert_id"]]
    assert RedisStateStore(bus.client).unsettled() == {}

"""Episode state in a real Redis: two alerters on one verdict stream open one episode per (host, family) and
write each line once; a restarted alerter continues the episodes that were open; the store's transaction holds
under contention."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from tapwatch.alerting.episode_alerter import EpisodeAlerter
from tapwatch.alerting.episodes import EpisodeConfig, EpisodeTracker
from tapwatch.alerting.evidence import from_verdict
from tapwatch.bus.state import RedisStateStore
from tapwatch.bus.streams import ALERTS_STREAM, VERDICTS_STREAM, RedisBus
from tests.support.alerting import Crash, CrashingSink, put, read_jsonl, redis_episode_alerter, verdict

CLASSES = ("BENIGN", "SSH-Patator", "Portscan")


def alerter(url: str, out: Path, name: str) -> EpisodeAlerter:
    return redis_episode_alerter(url, out, alerter_consumer=name, read_count=4)


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
    return redis_episode_alerter(url, out, *first, stream=True, alerter_consumer=name, read_count=4, claim_idle_ms=0)


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


def calls(bus: RedisBus, *commands: str) -> dict[str, int]:
    stats = bus.client.info("commandstats")
    return {c: int(stats.get(f"cmdstat_{c}", {"calls": 0})["calls"]) for c in commands}


def test_a_batch_of_evidence_is_one_transaction_and_ends_as_one_by_one(redis_server: Any) -> None:
    """40 pieces of evidence about 3 hosts: one WATCH, one MGET and one MULTI/EXEC for all (the alerter wrote one
    transaction per piece before), and the same states and lines as applying them one at a time."""
    bus = RedisBus(redis_server.url)
    evs = [from_verdict(v) for v in [*attack(1, 15, "10.0.0.9", "SSH-Patator"), *attack(100, 15, "10.0.0.7",
                                     "Portscan"), *attack(200, 10, "10.0.0.5", "Portscan")]]  # fmt: skip
    assert all(e is not None for e in evs)
    clock = [100.0]
    batched = EpisodeTracker(RedisStateStore(bus.client, prefix="tapwatch:test-batch"), EpisodeConfig(open_windows=3),
                             wall=lambda: clock[0])  # fmt: skip
    single = EpisodeTracker(RedisStateStore(bus.client, prefix="tapwatch:test-single"), EpisodeConfig(open_windows=3),
                            wall=lambda: clock[0])  # fmt: skip
    before = calls(bus, "watch", "mget", "exec", "get")
    found = batched.observe_many(evs)  # type: ignore[arg-type]
    used = {k: v - before[k] for k, v in calls(bus, "watch", "mget", "exec", "get").items()}
    assert used == {"watch": 1, "mget": 1, "exec": 1, "get": 0}
    one_by_one = [single.observe(e) for e in evs]  # type: ignore[arg-type]

    def shape(lines: list[list[Any]]) -> list[list[tuple[str, str, int]]]:
        return [[(x.state.value, x.episode["key"], x.episode["evidence"]) for x in ls] for ls in lines]

    assert shape(found) == shape(one_by_one)
    assert [i for i, ls in enumerate(found) if ls] == [2, 17, 32]  # the third piece about each host opens it
    a, b = batched.store, single.store
    assert a.keys() == b.keys() and len(a.keys()) == 3
    for key in a.keys():  # noqa: SIM118 (a store, not a dict)
        x, y = a.get(key), b.get(key)
        assert x is not None and y is not None
        assert {k: v for k, v in x.items() if k != "id"} == {k: v for k, v in y.items() if k != "id"}
    assert sorted(a.unsettled()) == sorted(x.id for ls in found for x in ls)  # every open line in the outbox


def test_a_batch_that_keeps_losing_to_another_alerter_is_applied_key_by_key(redis_server: Any) -> None:
    """Another alerter changes one of the batch's episodes between every read and write of the batch: after
    ``BATCH_RETRIES`` lost transactions the store applies the batch one key at a time, each change exactly once."""
    from tapwatch.bus import state

    bus = RedisBus(redis_server.url)
    other = RedisBus(redis_server.url).client
    store = RedisStateStore(bus.client, prefix="tapwatch:test-contended")
    runs = {"a": 0, "b": 0}

    def bump(key: str) -> Any:
        def fn(s: dict[str, Any] | None) -> tuple[dict[str, Any], int]:
            runs[key] += 1
            if key == "b" and runs["b"] <= state.BATCH_RETRIES:  # the other alerter, while the batch is open
                other.set("tapwatch:test-contended:b", '{"n": 100}')
            n = (s or {"n": 0})["n"] + 1
            return {"n": n}, n

        return fn

    outs = store.apply_many([("a", bump("a")), ("b", bump("b")), ("a", bump("a"))])
    assert outs == [1, 101, 2]  # "b" after the other alerter's change; "a" twice, in order
    assert store.get("a") == {"n": 2} and store.get("b") == {"n": 101}
    assert runs == {"a": 2 * state.BATCH_RETRIES + 2, "b": state.BATCH_RETRIES + 1}


def test_the_alerter_tracks_a_batch_of_verdicts_in_one_transaction(redis_server: Any, tmp_path: Path) -> None:
    """One read of 40 verdicts: one transaction for their evidence, one for each opened episode's explanation,
    one HDEL for the lines' outbox entries and one XACK; not a transaction per verdict."""
    bus = RedisBus(redis_server.url)
    put(bus, *attack(1, 20, "10.0.0.9", "SSH-Patator"), *attack(100, 20, "10.0.0.7", "Portscan"))
    a = redis_episode_alerter(redis_server.url, tmp_path / "alerts.jsonl", alerter_consumer="a1", read_count=64)
    a._next_tick = float("inf")  # the once-a-second look for quiet episodes is not this batch's work
    before = calls(bus, "exec", "hdel", "xack")
    assert a.verdict_loop.step()
    used = {k: v - before[k] for k, v in calls(bus, "exec", "hdel", "xack").items()}
    lines = list(read_jsonl(tmp_path / "alerts.jsonl"))
    assert [x["episode"]["state"] for x in lines] == ["open", "open"]
    assert used == {"exec": 1 + 2, "hdel": 1, "xack": 1}
    assert RedisStateStore(bus.client).unsettled() == {}


def test_states_are_read_a_few_thousand_per_mget_in_order(redis_server: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from tapwatch.bus import state

    monkeypatch.setattr(state, "MGET_KEYS", 2)
    bus = RedisBus(redis_server.url)
    store = RedisStateStore(bus.client, prefix="tapwatch:test-mget")
    for k in ("a", "c", "e"):
        store.apply(k, lambda s, k=k: ({"k": k}, None))
    before = calls(bus, "mget")["mget"]
    assert store.get_many(["a", "b", "c", "d", "e"]) == [{"k": "a"}, None, {"k": "c"}, None, {"k": "e"}]
    assert calls(bus, "mget")["mget"] - before == 3
    assert store.get_many([]) == []

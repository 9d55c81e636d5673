"""Hostile entries on the alerter's streams (``tapwatch:verdicts`` in both alert modes, ``tapwatch:aggregates``) and
the console's (``tapwatch:alerts``), on a real Redis: each one too large, truncated, of the wrong type or of an
unknown version (and non-UTF-8, NaN, an absurd time, a 10 KB window id) is dead-lettered with its reason, counted
by reason and stream, logged with its id, acked, and the good entry after it is processed; entries with fields
this version does not know are accepted. Then the same at load: ``tapwatch alerter`` as a process (both modes)
and the console's reader take a burst of thousands of good entries interleaved with hostile ones, an entry of
64 MiB among them: every good one processed, every hostile one dead-lettered, none left pending, the reader alive.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

pytest.importorskip("sqlalchemy", reason="the console needs the web extra: pip install '.[web]'")

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.bus.consumer import Consumer, ConsumerConfig
from tapwatch.bus.entries import MAX_ENTRY_BYTES
from tapwatch.bus.streams import ALERTS_STREAM, DEAD_STREAM, VERDICTS_STREAM, RedisBus
from tapwatch.console.settings import ConsoleSettings, prepare_data
from tapwatch.console.store import AlertLine, open_database
from tapwatch.console.stream import GROUP, AlertStreamHandler, ConsoleMetrics, start_reader
from tapwatch.features.aggregates import AGGREGATES_STREAM, AggregateRecord, View
from tests.support.alerting import make, meta, read_jsonl, redis_episode_alerter, verdict
from tests.support.cli import TAPWATCH
from tests.support.console import eve_line
from tests.support.e2e import metric, scrape, wait_for
from tests.support.env import RedisServer, end, free_port

Fields = dict[str, Any]
Mutate = Callable[[Fields], Fields]
T0 = 1_700_000_000_000


# -- hostile entries, by stream ----------------------------------------------------------------------------------------


def _json_field(name: str, change: Callable[[dict[str, Any]], None]) -> Mutate:
    def mutate(f: Fields) -> Fields:
        d = json.loads(f[name])
        change(d)
        return {**f, name: json.dumps(d)}

    return mutate


def _cut(name: str) -> Mutate:
    return lambda f: {**f, name: f[name][: len(f[name]) // 2]}


TOO_LARGE: Mutate = lambda f: {**f, "pad": b"x" * (MAX_ENTRY_BYTES + 1)}  # noqa: E731

VERDICT_CASES: dict[str, tuple[Mutate, str]] = {
    "too_large": (TOO_LARGE, "too_large"),
    "truncated_tensor": (_cut("tensor"), "truncated"),
    "truncated_flow": (_cut("flow"), "truncated"),
    "dtype_score": (lambda f: {**f, "score": "high"}, "dtype"),
    "dtype_number_for_text": (_json_field("flow", lambda d: d.update(src_ip=167772161)), "dtype"),
    "version": (lambda f: {**f, "v": "2"}, "version"),
    "not_utf8": (lambda f: {**f, "sensor": b"\xff\xfetap"}, "malformed"),
    "nan_score": (lambda f: {**f, "score": "nan"}, "non_finite"),
    "inf_probability": (lambda f: {**f, "probs": "[Infinity, 0.5]"}, "non_finite"),
    "negative_time": (_json_field("flow", lambda d: d.update(last_seen_ms=-5)), "value"),
    "absurd_time": (lambda f: {**f, "at": str(10**17)}, "value"),
    "window_id_10kb": (lambda f: {**f, "window_id": "1-" + "0" * 10_240}, "value"),
}
AGGREGATE_CASES: dict[str, tuple[Mutate, str]] = {
    "too_large": (TOO_LARGE, "too_large"),
    "truncated": (_cut("counts"), "truncated"),
    "dtype": (_json_field("counts", lambda d: d.update(flows="many")), "dtype"),
    "version": (lambda f: {**f, "v": "99"}, "version"),
    "non_finite": (lambda f: {**f, "counts": f["counts"].replace('"bytes":0', '"bytes":NaN')}, "non_finite"),
    "negative_time": (_json_field("counts", lambda d: d.update(start_ms=-10_000)), "value"),
}
ALERT_CASES: dict[str, tuple[Mutate, str]] = {
    "too_large": (TOO_LARGE, "too_large"),
    "truncated": (_cut("eve"), "truncated"),
    "dtype": (_json_field("eve", lambda d: d["alert"].update(signature_id="9200003")), "dtype"),
    "version": (lambda f: {**f, "v": "2"}, "version"),
    "non_finite": (lambda f: {**f, "eve": f["eve"].replace('"max_score": 0.98', '"max_score": NaN')}, "non_finite"),
    "episode_id_10kb": (_json_field("eve", lambda d: d["episode"].update(id="e" * 10_240)), "value"),
}


def good_verdict(i: int, score: float = 0.97) -> Fields:
    return dict(verdict(i, score, classes=("BENIGN", "SSH-Patator"), src="10.0.0.9").encode())


def good_aggregate(i: int) -> Fields:
    rec = AggregateRecord(sensor="tap-1", view=View.SOURCE, key=f"10.0.{i // 250}.{i % 250}", start_ms=T0 + i,
                          bucket_ms=10_000, flows=3, packets=9, tcp=3, sample=meta(i))  # fmt: skip
    return dict(rec.encode())


def good_alert(i: int) -> Fields:
    line = eve_line(f"ep-{i}")
    line["ml"]["alert_id"] = f"a-{i}"
    return {"v": "1", "eve": json.dumps(line)}


# -- in-process readers ------------------------------------------------------------------------------------------------


def console_factory(tmp_path: Path) -> sessionmaker[Session]:
    s = ConsoleSettings(data=tmp_path / "console")
    prepare_data(s)
    return open_database(s.url)


def stored_lines(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(AlertLine)) or 0


def dead_letters(bus: RedisBus) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()} for _, f in bus.client.xrange(DEAD_STREAM)]


def pending(bus: RedisBus, stream: str, group: str) -> int:
    return int(bus.client.xpending(stream, group)["pending"])


def assert_dead_lettered(bus: RedisBus, stream: str, entry_id: str, reason: str, caplog: pytest.LogCaptureFixture,
                         id_field: str = "id") -> None:  # fmt: skip
    (dead,) = dead_letters(bus)
    assert (dead["stream"], dead[id_field], dead["reason"]) == (stream, entry_id, reason)
    assert len(dead["detail"]) <= 1000  # the entry itself is not copied: a 1 MiB one stays out of tapwatch:dead
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(entry_id in m and f"rejected ({reason})" in m for m in logged), logged


@pytest.mark.parametrize("case", sorted(VERDICT_CASES))
def test_a_hostile_verdict_is_dead_lettered_in_episode_mode(case: str, redis_server: RedisServer, tmp_path: Path,
                                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    mutate, reason = VERDICT_CASES[case]
    a = redis_episode_alerter(redis_server.url, tmp_path / "alerts.jsonl")
    bad_id, good_id = a.bus.add_many(VERDICTS_STREAM, [mutate(good_verdict(1)), good_verdict(2)])
    while a.verdict_loop.step():
        pass
    assert_dead_lettered(a.bus, VERDICTS_STREAM, bad_id, reason, caplog)
    m = a.metrics.registry.get_sample_value
    assert m("tapwatch_alerting_dead_lettered_total", {"reason": reason, "stream": VERDICTS_STREAM}) == 1
    assert m("tapwatch_alerting_verdicts_total", {"outcome": "over"}) == 1  # the good one after it
    assert m("tapwatch_alerting_evidence_total", {"view": "window", "family": "bruteforce"}) == 1
    assert pending(a.bus, VERDICTS_STREAM, "alerters") == 0 and good_id > bad_id


@pytest.mark.parametrize("case", sorted(VERDICT_CASES))
def test_a_hostile_verdict_is_dead_lettered_in_flows_mode(case: str, redis_server: RedisServer, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    mutate, reason = VERDICT_CASES[case]
    bus, out = RedisBus(redis_server.url), tmp_path / "alerts.jsonl"
    alerter, m = make(bus, out, redis_url=redis_server.url)
    bad_id, _ = bus.add_many(VERDICTS_STREAM, [mutate(good_verdict(1)), good_verdict(2)])
    while alerter.run_once():
        pass
    assert_dead_lettered(bus, VERDICTS_STREAM, bad_id, reason, caplog)
    assert m.registry.get_sample_value("tapwatch_alerting_dead_lettered_total",
                                       {"reason": reason, "stream": VERDICTS_STREAM}) == 1  # fmt: skip
    assert [x["flow_id"] for x in read_jsonl(out)] == [1002]  # the good one after it made its alert
    assert pending(bus, VERDICTS_STREAM, "alerters") == 0


@pytest.mark.parametrize("case", sorted(AGGREGATE_CASES))
def test_a_hostile_aggregate_is_dead_lettered(case: str, redis_server: RedisServer, tmp_path: Path,
                                              caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    mutate, reason = AGGREGATE_CASES[case]
    a = redis_episode_alerter(redis_server.url, tmp_path / "alerts.jsonl")
    bad_id, _ = a.bus.add_many(AGGREGATES_STREAM, [mutate(good_aggregate(1)), good_aggregate(2)])
    while a.aggregate_loop.step():
        pass
    assert_dead_lettered(a.bus, AGGREGATES_STREAM, bad_id, reason, caplog)
    m = a.metrics.registry.get_sample_value
    assert m("tapwatch_alerting_dead_lettered_total", {"reason": reason, "stream": AGGREGATES_STREAM}) == 1
    assert m("tapwatch_alerting_aggregates_total", {"view": "source"}) == 1
    assert pending(a.bus, AGGREGATES_STREAM, "alerters") == 0


@pytest.mark.parametrize("case", sorted(ALERT_CASES))
def test_a_hostile_alert_entry_is_dead_lettered_by_the_console(case: str, redis_server: RedisServer, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    caplog.set_level(logging.WARNING)
    mutate, reason = ALERT_CASES[case]
    bus, factory, registry = RedisBus(redis_server.url), console_factory(tmp_path), CollectorRegistry()
    metrics = ConsoleMetrics(registry)
    loop = Consumer(bus, ConsumerConfig(ALERTS_STREAM, GROUP, "k1", block_ms=1),
                    AlertStreamHandler(bus, factory, metrics))  # fmt: skip
    bad_id, _ = bus.add_many(ALERTS_STREAM, [mutate(good_alert(1)), good_alert(2)])
    while loop.step():
        pass
    assert_dead_lettered(bus, ALERTS_STREAM, bad_id, reason, caplog, id_field="entry")
    get = registry.get_sample_value
    assert get("tapwatch_console_dead_lettered_total", {"reason": reason, "stream": ALERTS_STREAM}) == 1
    assert get("tapwatch_console_alert_lines_total", {"outcome": "refused"}) == 1
    assert stored_lines(factory) == 1 and get("tapwatch_console_alert_lines_total", {"outcome": "stored"}) == 1
    assert pending(bus, ALERTS_STREAM, GROUP) == 0


def test_fields_this_version_does_not_know_are_ignored(redis_server: RedisServer, tmp_path: Path) -> None:
    """Suricata's and Zeek's readers ignore keys they do not know; so does every tapwatch reader, at every level,
    as long as the version is one it knows. A field *name* that is not UTF-8 is one of them (it used to stop the
    reader inside XREADGROUP's reply)."""
    a = redis_episode_alerter(redis_server.url, tmp_path / "alerts.jsonl")
    odd = {b"\xff\xfeodd": b"1"}
    extra = _json_field("flow", lambda d: d.update(vlan=7))(good_verdict(1))
    a.bus.client.xadd(VERDICTS_STREAM, {**extra, "priority": "high", **odd})
    agg = _json_field("counts", lambda d: d.update(quic=2))(good_aggregate(1))
    a.bus.client.xadd(AGGREGATES_STREAM, {**agg, "site": "hq", **odd})
    line = json.loads(good_alert(1)["eve"])
    line["ml"]["new_thing"] = {"x": 1}
    a.bus.client.xadd(ALERTS_STREAM, {"v": "1", "eve": json.dumps(line), "tenant": "t1", **odd})
    while a.verdict_loop.step() + a.aggregate_loop.step():
        pass
    factory, registry = console_factory(tmp_path), CollectorRegistry()
    loop = Consumer(a.bus, ConsumerConfig(ALERTS_STREAM, GROUP, "k1", block_ms=1),
                    AlertStreamHandler(a.bus, factory, ConsoleMetrics(registry)))  # fmt: skip
    while loop.step():
        pass
    m = a.metrics.registry.get_sample_value
    assert m("tapwatch_alerting_verdicts_total", {"outcome": "over"}) == 1
    assert m("tapwatch_alerting_aggregates_total", {"view": "source"}) == 1
    assert stored_lines(factory) == 1 and dead_letters(a.bus) == []


# -- at load -----------------------------------------------------------------------------------------------------------

LOAD_GOOD = 5000
EVERY = 10
"""One hostile entry after every EVERY good ones."""


def interleave(good: Callable[[int], Fields], cases: dict[str, tuple[Mutate, str]], n: int,
               base: Callable[[int], Fields] | None = None) -> tuple[list[Fields], dict[str, int]]:  # fmt: skip
    """``n`` good entries with a hostile one after every :data:`EVERY` (the kinds in turn, each made from an entry
    of ``base``, by default ``good``); the expected reasons and their counts."""
    entries: list[Fields] = []
    expected: dict[str, int] = {}
    kinds = sorted(cases)
    for i in range(n):
        entries.append(good(i))
        if i % EVERY == EVERY - 1:
            mutate, reason = cases[kinds[(i // EVERY) % len(kinds)]]
            entries.append(mutate((base or good)(n + i)))
            expected[reason] = expected.get(reason, 0) + 1
    return entries, expected


def add(bus: RedisBus, stream: str, entries: list[Fields]) -> None:
    for i in range(0, len(entries), 200):  # pipelines of 200: a few tens of MiB at most per round trip
        bus.add_many(stream, entries[i : i + 200])


def settled(bus: RedisBus, stream: str, group: str) -> bool:
    groups = bus.client.xinfo_groups(stream)
    return bool(groups) and groups[0]["lag"] == 0 and groups[0]["pending"] == 0


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.parametrize("mode", ["episodes", "flows"])
def test_tapwatch_alerter_at_load_dead_letters_every_hostile_entry_and_processes_every_good_one(
    mode: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    bus, port = RedisBus(redis_server.url), free_port()
    verdicts, want = interleave(lambda i: good_verdict(i, 0.2), VERDICT_CASES, LOAD_GOOD, base=good_verdict)
    verdicts.insert(len(verdicts) // 2, {**good_verdict(LOAD_GOOD * 3, 0.2), "pad": b"\0" * (64 << 20)})  # 64 MiB
    want["too_large"] += 1
    add(bus, VERDICTS_STREAM, verdicts)
    aggregates, want_agg = interleave(good_aggregate, AGGREGATE_CASES, LOAD_GOOD // 5 if mode == "episodes" else 0)
    add(bus, AGGREGATES_STREAM, aggregates)
    log = tmp_path / "alerter.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
    with log.open("wb") as err:
        proc = subprocess.Popen([*TAPWATCH, "alerter", "--redis", redis_server.url, "--alert-mode", mode, "--no-stdout",
                                 "--metrics-port", str(port)], env={**env, "TAPWATCH_BLOCK_MS": "100"},
                                stdout=subprocess.DEVNULL, stderr=err)  # fmt: skip
    try:
        streams = [VERDICTS_STREAM] + ([AGGREGATES_STREAM] if mode == "episodes" else [])
        wait_for(lambda: proc.poll() is not None or all(settled(bus, s, "alerters") for s in streams), 120,
                 "every entry acked")  # fmt: skip
        assert proc.poll() is None, log.read_text()[-3000:]
        wait_for(lambda: metric(scrape(port), "tapwatch_alerting_verdicts_total", outcome="below") == LOAD_GOOD, 10,
                 "the counters")  # fmt: skip
        got = scrape(port)
        rss = rss_mib(proc.pid)
    finally:
        end(proc)  # one SIGTERM: a drain, exit 0 (a second one would mean "exit now", status 1)
    assert proc.returncode == 0, log.read_text()[-3000:]
    for stream, expected in ((VERDICTS_STREAM, want), (AGGREGATES_STREAM, want_agg)):
        for reason, n in expected.items():
            assert metric(got, "tapwatch_alerting_dead_lettered_total", reason=reason, stream=stream) == n, reason
    if mode == "episodes":
        assert metric(got, "tapwatch_alerting_aggregates_total", view="source") == LOAD_GOOD // 5
    reasons = [d["reason"] for d in dead_letters(bus)]
    assert len(reasons) == sum(want.values()) + sum(want_agg.values())
    text = log.read_text()
    assert text.count("rejected (") == len(reasons) and "Traceback" not in text
    assert rss < 1024, f"{rss:.0f} MiB"  # the 64 MiB entry was read, not parsed or copied around


def test_the_console_reader_at_load_dead_letters_every_hostile_entry_and_stores_every_good_one(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    bus, factory, registry = RedisBus(redis_server.url), console_factory(tmp_path), CollectorRegistry()
    n = LOAD_GOOD // 5  # each good line is a database row: a fifth keeps the test short
    entries, want = interleave(good_alert, ALERT_CASES, n)
    add(bus, ALERTS_STREAM, entries)
    stop = threading.Event()
    thread = start_reader(bus, factory, ConsoleMetrics(registry), "k1", stop)
    try:
        wait_for(lambda: not thread.is_alive() or settled(bus, ALERTS_STREAM, GROUP), 120, "every entry acked")
        assert thread.is_alive()
    finally:
        stop.set()
        thread.join(15)
    for reason, count in want.items():
        assert registry.get_sample_value("tapwatch_console_dead_lettered_total",
                                         {"reason": reason, "stream": ALERTS_STREAM}) == count, reason  # fmt: skip
    assert stored_lines(factory) == n
    assert registry.get_sample_value("tapwatch_console_alert_lines_total", {"outcome": "stored"}) == n
    assert len(dead_letters(bus)) == sum(want.values())

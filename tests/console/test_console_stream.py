"""The console as a consumer group on the alerter's stream, on a real Redis: lines stored once, junk dead-lettered
with its reason and counted, nothing left pending; a Redis restart loses nothing."""

from __future__ import annotations

import json
import threading
import time

from prometheus_client import CollectorRegistry
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.bus.streams import ALERTS_STREAM, DEAD_STREAM, RedisBus
from tapwatch.console.store import AlertLine, Episode
from tapwatch.console.stream import GROUP, ConsoleMetrics, start_reader
from tests.support.console import eve_line
from tests.support.env import RedisServer


def lines(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return db.scalar(select(func.count()).select_from(AlertLine)) or 0


def wait(cond: object, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_console_reads_the_alert_stream_stores_each_line_once_and_dead_letters_junk(
    redis_server: RedisServer, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    bus = RedisBus(redis_server.url)
    first = eve_line("ep-9")
    first["ml"]["alert_id"] = "a-9"
    again = dict(first)  # delivered twice (at least once): stored once
    later = eve_line("ep-9", timestamp="2026-12-01T10:05:00.000000+0000")
    later["ml"] = {**later["ml"], "alert_id": "a-10"}
    later["episode"] = {**later["episode"], "state": "close", "last_seen": "2026-12-01T10:05:00.000Z", "flows": 77}
    entries = [{"eve": json.dumps(first)}, {"eve": json.dumps(again)}, {"eve": "{broken"}, {"other": "x"},
               {"eve": json.dumps(later)}]  # fmt: skip
    bus.add_many(ALERTS_STREAM, entries)
    registry = CollectorRegistry()
    stop = threading.Event()
    before = lines(factory)  # the fixture's own line
    thread = start_reader(bus, factory, ConsoleMetrics(registry), "test-console", stop)
    try:
        wait(lambda: registry.get_sample_value("tapwatch_console_alert_lines_total", {"outcome": "refused"}) == 2)
        wait(lambda: lines(factory) == before + 2)
        redis_server.restart(down_s=1.0)  # the loop backs off and carries on
        after = eve_line("ep-10")
        after["ml"]["alert_id"] = "a-11"
        bus.add_many(ALERTS_STREAM, [{"eve": json.dumps(after)}])
        wait(lambda: lines(factory) == before + 3, timeout_s=30)
    finally:
        stop.set()
        thread.join(15)
    with factory() as db:
        e = db.get(Episode, "ep-9")
        assert e is not None and e.state == "close" and e.flows == 77 and e.lines == 2
    dead = bus.client.xrange(DEAD_STREAM)
    assert sorted(f[b"reason"].decode() for _, f in dead) == ["json", "no_eve"]
    assert bus.client.xpending(ALERTS_STREAM, GROUP)["pending"] == 0
    assert registry.get_sample_value("tapwatch_console_alert_lines_total", {"outcome": "stored"}) == 4

"""The one consumer loop (tapwatch.bus.consumer) with a recording handler: batches, claims, backoff, a lost group,
the read block the handler asks for, and the drain at stop. The worker and alerter tests run it with theirs."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from tapwatch.bus.consumer import Consumer, ConsumerConfig
from tapwatch.bus.streams import BusUnavailable, Entry, GroupMissing, MemoryBus
from tapwatch.features.errors import ConfigError

CONFIG = ConsumerConfig("s", "g", "c1", batch_size=2, block_ms=1, claim_idle_ms=3_600_000, claim_interval_s=3600,
                        backoff_initial_s=0.05, backoff_max_s=0.15, drain_timeout_s=0.0)  # fmt: skip


class Recorder:
    """A handler that acks each batch unless ``failures`` is above 0 (then the bus is down), and records events."""

    def __init__(self, bus: MemoryBus, failures: int = 0, block_ms: int | None = None) -> None:
        self.bus = bus
        self.failures = failures
        self.block_ms = block_ms
        self.batches: list[list[str]] = []
        self.events: list[tuple[str, Any]] = []
        self.finished = 0

    def tend(self) -> int | None:
        return self.block_ms

    def handle(self, entries: list[Entry]) -> None:
        self.batches.append([eid for eid, _ in entries])
        if self.failures > 0:
            self.failures -= 1
            raise BusUnavailable("down for the test")
        self.bus.ack("s", "g", [eid for eid, _ in entries])

    def finish(self) -> int:
        self.finished += 1
        return 0

    def on_claim(self, entries: list[Entry]) -> None:
        self.events.append(("claim", [eid for eid, _ in entries]))

    def on_group(self, missing: str | None) -> None:
        self.events.append(("group", missing))

    def on_bus(self, down: BusUnavailable | None) -> None:
        self.events.append(("bus", "down" if down else "up"))

    def on_abandon(self, entries: int) -> None:
        self.events.append(("abandon", entries))


def make(failures: int = 0, config: ConsumerConfig = CONFIG, **kw: Any) -> tuple[MemoryBus, Recorder, Consumer]:
    bus = MemoryBus()
    handler = Recorder(bus, failures, **kw)
    return bus, handler, Consumer(bus, config, handler, handler)


def test_batches_in_order_and_the_group_created_once() -> None:
    bus, h, loop = make()
    ids = bus.add_many("s", [{"n": str(i)} for i in range(3)])
    assert [loop.run_once() for _ in range(3)] == [2, 1, 0]
    assert h.batches == [ids[:2], ids[2:]]
    assert h.events == [("group", None)]
    assert bus.claim_stale("s", "g", "other", 0, 10) == []  # all acked


def test_the_batch_in_hand_is_handed_again_unchanged_with_capped_backoff() -> None:
    bus, h, loop = make(failures=4)
    ids = bus.add_many("s", [{"n": "1"}, {"n": "2"}])
    delays = []
    for _ in range(4):
        assert loop.run_once() == 0
        delays.append(loop.delay)
    assert delays == [0.05, 0.1, 0.15, 0.15] and not loop.connected and loop.in_hand == 2
    bus.add_many("s", [{"n": "3"}])  # not read before the batch in hand is done
    assert loop.run_once() == 2 and loop.delay == 0 and loop.connected
    assert h.batches == [ids] * 5
    assert [e for e in h.events if e[0] == "bus"] == [("bus", "down"), ("bus", "up")]


def test_step_raises_and_keeps_the_batch() -> None:
    bus, h, loop = make(failures=1)
    bus.add_many("s", [{"n": "1"}])
    with pytest.raises(BusUnavailable):
        loop.step()
    assert loop.in_hand == 1 and loop.step() == 1 and h.batches[0] == h.batches[1]


class LosingBus(MemoryBus):
    """A memory bus whose group goes missing at the next read while ``lose`` is set."""

    lose = False

    def read_group(self, stream: str, group: str, consumer: str, count: int, block_ms: int) -> list[Entry]:
        if self.lose:
            self.lose = False
            raise GroupMissing("UNBLOCKED the stream key no longer exists")
        return super().read_group(stream, group, consumer, count, block_ms)


def test_a_missing_group_is_recreated_and_reported() -> None:
    bus = LosingBus()
    h = Recorder(bus)
    loop = Consumer(bus, CONFIG, h, h)
    loop.run_once()
    bus.lose = True
    assert loop.run_once() == 0 and loop.connected
    bus.add_many("s", [{"n": "1"}])
    assert loop.run_once() == 1
    assert h.events == [("group", None), ("group", "UNBLOCKED the stream key no longer exists")]


def test_stale_entries_are_claimed_and_a_full_claim_looks_again_at_once() -> None:
    config = ConsumerConfig("s", "g", "c1", batch_size=2, block_ms=1, claim_idle_ms=0, claim_interval_s=3600)
    bus, h, loop = make(config=config)
    bus.ensure_group("s", "g")
    ids = bus.add_many("s", [{"n": str(i)} for i in range(5)])
    assert len(bus.read_group("s", "g", "crashed", 10, 0)) == 5  # never acked
    assert [loop.run_once() for _ in range(4)] == [2, 2, 1, 0]  # the last claim was not full: the interval holds
    assert h.events == [("claim", ids[:2]), ("claim", ids[2:4]), ("claim", ids[4:])]


def test_the_handler_shortens_the_read_block() -> None:
    config = ConsumerConfig("s", "g", "c1", block_ms=2000, claim_interval_s=3600)
    _, _, loop = make(config=config, block_ms=5)
    loop.run_once()  # the group, and the first claim
    started = time.monotonic()
    assert loop.run_once() == 0
    assert time.monotonic() - started < 1.0


def test_drain_hands_the_batch_again_and_finishes() -> None:
    bus, h, loop = make(failures=1)
    bus.add_many("s", [{"n": "1"}])
    loop.run_once()
    assert loop.drain(1.0) is True and loop.in_hand == 0 and h.finished == 1 and loop.connected
    assert bus.claim_stale("s", "g", "other", 0, 10) == []


def test_drain_gives_up_after_its_timeout_and_reports_what_stays_pending() -> None:
    bus, h, loop = make(failures=100)
    bus.add_many("s", [{"n": "1"}, {"n": "2"}])
    loop.run_once()
    started = time.monotonic()
    assert loop.drain(0.2) is False
    assert time.monotonic() - started < 1.0
    assert h.events[-1] == ("abandon", 2) and loop.in_hand == 2


def test_run_steps_until_stop_then_drains() -> None:
    bus, h, loop = make()
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,))
    thread.start()
    bus.add_many("s", [{"n": "1"}])
    deadline = time.monotonic() + 5
    while not h.batches and time.monotonic() < deadline:
        time.sleep(0.01)
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and len(h.batches) == 1 and h.finished == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [("block_ms", 0), ("batch_size", 0), ("claim_idle_ms", -1), ("claim_interval_s", 0), ("backoff_initial_s", 9),
     ("drain_timeout_s", -1)],
)  # fmt: skip
def test_bad_config_names_the_setting(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        ConsumerConfig("s", "g", "c", **{field: value})  # type: ignore[arg-type]

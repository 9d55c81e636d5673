"""The Redis stream sink on a real Redis: bounded, and each entry carries the EVE JSON and its signature."""

from __future__ import annotations

import json
from typing import Any

from tapwatch.alerting.sinks import RedisStreamSink
from tapwatch.bus.streams import ALERTS_STREAM, RedisBus
from tests.support.alerting import emit, make_alert


def test_redis_stream_sink_is_bounded(redis_server: Any) -> None:
    bus = RedisBus(redis_server.url)
    sink = RedisStreamSink(bus, maxlen=100, trim_every=10)
    for i in range(400):
        emit(sink, make_alert(i))
    assert 100 <= bus.length(ALERTS_STREAM) < 400
    bus.ensure_group(ALERTS_STREAM, "siem")
    (_, fields), *_ = bus.read_group(ALERTS_STREAM, "siem", "c", 1, 0)
    eve = json.loads(fields["eve"])
    assert eve["alert"]["signature_id"] == int(fields["signature_id"]) and fields["severity"] == b"3"

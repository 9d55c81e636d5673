"""``tapwatch flows`` output: one CSV row per flow, in the corrected CIC-IDS2017 column layout.

The identifier columns and the 82 feature columns carry the corrected release's names and order, so the
file can replace CICFlowMeter's output; tapwatch's own columns follow (Community ID, times in epoch
milliseconds, link-layer counts, expiry reason, sensor).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import TextIO

from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.schema import FlowRecord

ID_COLUMNS = ("Flow ID", "Src IP", "Src Port", "Dst IP", "Dst Port", "Protocol", "Timestamp")
EXTRA_COLUMNS = ("community_id", "first_seen_ms", "last_seen_ms", "packets", "bytes", "expiry_reason", "sensor")
_FEATURES_AFTER_ID = tuple(n for n in FEATURE_NAMES if n != "Protocol")
_AFTER_ID = tuple(FEATURE_NAMES.index(n) for n in _FEATURES_AFTER_ID)  # their places in a record's values
HEADER = ID_COLUMNS + _FEATURES_AFTER_ID + EXTRA_COLUMNS


def _num(x: float) -> str:
    """Integers as integers (as the CSVs write counts), other values as Python's shortest repr.

    >>> _num(3.0), _num(0.5), _num(-1.0)
    ('3', '0.5', '-1')
    """
    return str(int(x)) if x.is_integer() else repr(x)


def row(rec: FlowRecord) -> list[str]:
    m = rec.meta
    ts = datetime.fromtimestamp(m.first_seen_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    flow_id = f"{m.src_ip}-{m.dst_ip}-{m.src_port}-{m.dst_port}-{m.protocol}"
    values = rec.values
    out = [flow_id, m.src_ip, str(m.src_port), m.dst_ip, str(m.dst_port), str(m.protocol), ts]
    out += [str(int(x)) if x.is_integer() else repr(x) for x in map(values.__getitem__, _AFTER_ID)]  # as _num
    out += [m.community_id, str(m.first_seen_ms), str(m.last_seen_ms), str(m.packets), str(m.bytes)]
    out += [m.expiry.value, m.sensor]
    return out


def write_csv(records: Iterable[FlowRecord], out: TextIO) -> int:
    """Write the header and one row per record; return the number of rows."""
    w = csv.writer(out, lineterminator="\n")
    w.writerow(HEADER)
    n = 0
    for rec in records:
        w.writerow(row(rec))
        n += 1
    return n

"""Read a ``tapwatch flows`` CSV back into :class:`FlowRecord` objects, for learning and reports.

The file is streamed row by row with the :mod:`csv` module (lab corpora are tens of megabytes; a ``.gz`` file
is read through gzip), in file order. The identifier columns, the 82 feature columns (by contract name) and
tapwatch's own columns (:data:`tapwatch.capture.flowcsv.HEADER`) make the record; any other column (the
lab's ``episode_id``, ``family``, ``cic_class``...) is handed back beside it. An empty value reads as 0.
:func:`tapwatch.capture.aggregates.aggregates_of` turns the records into the sensor's aggregates.

>>> import io, tempfile, os
>>> from tapwatch.capture.flowcsv import EXTRA_COLUMNS, HEADER, ID_COLUMNS
>>> row = {name: "" for name in HEADER} | {"Src IP": "10.0.0.1", "Dst IP": "10.0.0.2", "Dst Port": "80",
...        "Protocol": "6", "first_seen_ms": "1000", "last_seen_ms": "1500", "packets": "1", "expiry_reason": "idle"}
>>> with tempfile.TemporaryDirectory() as d:
...     path = os.path.join(d, "flows.csv")
...     with open(path, "w") as f:
...         _ = f.write(",".join([*HEADER, "family"]) + "\\n" + ",".join([*row.values(), "scan"]) + "\\n")
...     [(rec.meta.dst_port, rec.meta.packets, rec.feature("Flow Duration"), extra)
...      for rec, extra in records_from_flows_csv(path)]
[(80, 1, 0.0, {'family': 'scan'})]
"""

from __future__ import annotations

import csv
import gzip
import operator
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

from tapwatch.capture.cid import community_id
from tapwatch.capture.flowcsv import EXTRA_COLUMNS, HEADER, ID_COLUMNS
from tapwatch.features.contract import FEATURE_NAMES, feature_index
from tapwatch.features.errors import BadInputError
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord, make_flow_id

_KNOWN = frozenset(HEADER)
_META_COLUMNS = ID_COLUMNS + EXTRA_COLUMNS
_ICMP_TYPE, _ICMP_CODE = feature_index("ICMP Type"), feature_index("ICMP Code")


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return path.open(newline="", encoding="utf-8")


def _int(text: str) -> int:
    if not text:
        return 0
    try:
        return int(text)
    except ValueError:
        return int(float(text))  # a count written as 6.0 by another tool


def _floats(texts: tuple[str, ...]) -> tuple[float, ...]:
    """The feature values; an empty one reads as 0 (map(float) first: it is what costs the time)."""
    try:
        return tuple(map(float, texts))
    except ValueError:
        return tuple(float(t) if t else 0.0 for t in texts)


def _meta(row: Mapping[str, str], values: tuple[float, ...], seq: int) -> FlowMeta:
    """The record's identity from its columns; the flow id is the numeric ``Flow ID`` or made like the sensor's."""
    proto, src, dst = _int(row["Protocol"]), row["Src IP"], row["Dst IP"]
    sport, dport, first = _int(row["Src Port"]), _int(row["Dst Port"]), _int(row["first_seen_ms"])
    sensor = row["sensor"]
    cid = row["community_id"]
    if not cid:
        icmp_type, icmp_code = values[_ICMP_TYPE], values[_ICMP_CODE]
        icmp = (int(icmp_type), int(icmp_code)) if proto in (1, 58) and icmp_type >= 0 else None
        cid = community_id(proto, src, dst, sport, dport, icmp)
    flow_id = row["Flow ID"]
    last = _int(row["last_seen_ms"])
    return FlowMeta(
        flow_id=int(flow_id) if flow_id.isdigit() else make_flow_id(sensor, cid, first, seq),
        community_id=cid, src_ip=src, src_port=sport, dst_ip=dst, dst_port=dport, protocol=proto,
        first_seen_ms=first, last_seen_ms=last, packets=_int(row["packets"]), bytes=_int(row["bytes"]),
        expiry=ExpiryReason(row["expiry_reason"] or ExpiryReason.END_OF_CAPTURE.value),
        expired_at_ms=last, sensor=sensor,
    )  # fmt: skip


def _check_header(path: Path, header: list[str]) -> list[str]:
    """The header's columns that are not the flows CSV's own; raises when one of those is missing."""
    missing = [c for c in HEADER if c not in header]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise BadInputError(str(path), f"not a tapwatch flows CSV: no column {', '.join(missing[:3])}{more}")
    return [c for c in header if c not in _KNOWN]


def records_from_flows_csv(path: str | Path) -> Iterator[tuple[FlowRecord, dict[str, str]]]:
    """Each row of a ``tapwatch flows`` CSV as (record, the row's other columns by name), in file order.

    Raises :class:`BadInputError` naming the file (and the line) when a column is missing or a value unreadable.
    """
    path = Path(path)
    try:
        with _open(path) as f:
            reader = csv.reader(f)
            header = next(reader, [])
            extras = _check_header(path, header)
            col = {name: i for i, name in enumerate(header)}
            features = operator.itemgetter(*(col[name] for name in FEATURE_NAMES))
            own = [(name, col[name]) for name in _META_COLUMNS]
            other = [(name, col[name]) for name in extras]
            for seq, row in enumerate(reader, start=1):
                if len(row) != len(header):
                    raise BadInputError(str(path), f"line {reader.line_num}: {len(header)} columns expected")
                try:
                    values = _floats(features(row))
                    meta = _meta({name: row[i] for name, i in own}, values, seq)
                except ValueError as err:
                    raise BadInputError(str(path), f"line {reader.line_num}: {err}") from err
                yield FlowRecord(meta=meta, values=values), {name: row[i] for name, i in other}
    except (OSError, EOFError, UnicodeDecodeError, csv.Error) as err:  # unreadable, a broken gzip stream
        raise BadInputError(str(path), str(err)) from err

"""Checks a reader makes of a record's fields before it acts on them: type, range, finiteness, whole JSON.

A stream entry may come from anything with write access to Redis. The records' ``decode`` methods
(:class:`~tapwatch.features.schema.Verdict`, :class:`~tapwatch.features.aggregates.AggregateRecord`) refuse, with a
:class:`~tapwatch.features.errors.SchemaError` whose reason comes from a closed set, every value the code after them
could not take: ``dtype`` (a number where text is expected, a bool where a count is), ``value`` (a negative or
absurd time, a port over 65535, a 10 KB name), ``non_finite`` (NaN, infinity), ``truncated`` (JSON that ends before
its document does), ``malformed`` (anything else that does not parse).

A check is a ``(type, lowest, highest)`` triple; for text, the bounds are on its length.

>>> check_value("verdict", "flow.dst_port", 70000, *PORT)
Traceback (most recent call last):
...
tapwatch.features.errors.SchemaError: verdict record rejected (value): flow.dst_port is 70000, outside [0, 65535]
"""

from __future__ import annotations

import functools
import json
import math
import re
from typing import Any

import numpy as np

from tapwatch.features.errors import SchemaError

TIME_MAX_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z, the last instant a 4-digit-year EVE timestamp can name: a later (or negative) time in
a record is refused, as no sensor clock gives one and Python's datetime cannot format it."""
TEXT_MAX = 256
"""Longest text field a reader accepts (host names, addresses, model names, class names; a window id is shorter)."""
COUNT_MAX = 2**63 - 1
"""Largest count (Redis and Suricata count in signed 64 bits)."""

TIME = (int, 0, TIME_MAX_MS)
PORT = (int, 0, 65535)
COUNT = (int, 0, COUNT_MAX)
TEXT = (str, 0, TEXT_MAX)


class _NonFinite(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity`` in a JSON text (Python's json accepts them; JSON does not)."""


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(f"{name} in JSON")


_DECODER = json.JSONDecoder(parse_constant=_refuse_constant)
"""One decoder for every field (``json.loads`` with an argument builds a new one per call)."""


def load_json(text: str | bytes, record: str, field_name: str) -> Any:
    """A JSON field parsed, or :class:`SchemaError`: ``truncated`` when the text ends before its document does,
    ``non_finite`` for NaN or Infinity, ``malformed`` for anything else (text that is not UTF-8 included).

    >>> load_json('{"a": [1, 2', "verdict", "probs")
    Traceback (most recent call last):
    ...
    tapwatch.features.errors.SchemaError: verdict record rejected (truncated): field 'probs' ends early: ...
    """
    try:
        return _DECODER.decode(text if isinstance(text, str) else text.decode())
    except _NonFinite as err:
        raise SchemaError(record, "non_finite", f"field {field_name!r}: {err}") from err
    except json.JSONDecodeError as err:
        end = len(err.doc.rstrip())
        cut = err.pos >= end or err.msg.startswith("Unterminated string")
        reason, says = ("truncated", "ends early") if cut else ("malformed", "is not JSON")
        raise SchemaError(record, reason, f"field {field_name!r} {says}: {err}") from err
    except (UnicodeDecodeError, ValueError) as err:
        raise SchemaError(record, "malformed", f"field {field_name!r} is not JSON text: {err}") from err


def check_value(record: str, name: str, value: Any, kind: type, low: float, high: float) -> None:
    """``value`` is of ``kind`` (bool is no int; an int is a float) and within [low, high] (text: its length)."""
    quick = type(value) is kind and kind is not float
    if quick and low <= (len(value) if kind is str else value) <= high:
        return  # the usual case, decided at once
    if kind is float:
        ok_type = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok_type = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    if not ok_type:
        raise SchemaError(record, "dtype", f"{name} is {type(value).__name__}, not {kind.__name__}")
    if kind is float and not math.isfinite(value):
        raise SchemaError(record, "non_finite", f"{name} is {value}")
    size = len(value) if kind is str else value
    if not low <= size <= high:
        what = f"{len(value)} characters long" if kind is str else str(value)[:40]
        raise SchemaError(record, "value", f"{name} is {what}, outside [{low}, {high}]")


@functools.lru_cache(maxsize=64)
def _classes_json(names: tuple[str, ...]) -> str:
    """The ``classes`` field: the same few class lists, encoded once each."""
    return json.dumps(list(names))


@functools.lru_cache(maxsize=64)
def _classes_of(text: str) -> tuple[str, ...]:
    """The ``classes`` field read back, parsed once per distinct text (raises ValueError or TypeError)."""
    return tuple(str(c) for c in json.loads(text))


STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
"""A Redis stream entry id (``<ms>-<seq>``, each a 64-bit unsigned integer): what a window id is."""
_INTEGER = re.compile(r"-?[0-9]{1,19}")
CLASSES_MAX = 256
"""Most classes a verdict may name."""


def number(text: Any, name: str, low: float, high: float) -> float:
    """A float field: ``dtype`` if it is no number, ``non_finite`` for NaN/infinity, ``value`` outside [low, high]."""
    raw = text(name)
    try:
        value = float(raw)
    except ValueError as err:
        raise SchemaError("verdict", "dtype", f"{name} {raw[:40]!r} is not a number") from err
    check_value("verdict", name, value, float, low, high)
    return value


def integer(text: Any, name: str, low: int, high: int) -> int:
    raw = text(name)
    if not _INTEGER.fullmatch(raw):
        raise SchemaError("verdict", "dtype", f"{name} {raw[:40]!r} is not an integer")
    value = int(raw)
    check_value("verdict", name, value, int, low, high)
    return value


def classes_and_probs(classes_text: str, probs_text: str, predicted: str) -> tuple[tuple[str, ...], tuple[float, ...]]:
    """The class names and their probabilities, checked: as many of each, text names, finite numbers."""
    try:
        classes = _classes_of(classes_text)  # the usual few lists: parsed once each
    except (ValueError, TypeError):
        classes = ()
    if not classes or classes_text != _classes_json(classes):  # the cache's str() would accept any list
        raw = load_json(classes_text, "verdict", "classes")
        if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
            raise SchemaError("verdict", "dtype", "classes is not a JSON list of names")
        classes = tuple(raw)
    if not 1 <= len(classes) <= CLASSES_MAX or any(len(c) > TEXT_MAX for c in classes):
        raise SchemaError("verdict", "value", f"{len(classes)} classes, or a name over {TEXT_MAX} characters")
    probs = load_json(probs_text, "verdict", "probs")
    if not isinstance(probs, list):
        raise SchemaError("verdict", "dtype", "probs is not a JSON list")
    for i, p in enumerate(probs):
        check_value("verdict", f"probs[{i}]", p, float, -math.inf, math.inf)
    if len(probs) != len(classes) or predicted not in classes:
        raise SchemaError("verdict", "value", f"{len(probs)} probabilities for {len(classes)} classes, or the "
                          "predicted class is not one of them")  # fmt: skip
    return classes, tuple(float(p) for p in probs)


def verdict_tensor(f: Any) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
    """The verdict's window from its fields (a ``schema._Fields``): float32 (``dtype``), as long as its shape says
    (``truncated``), finite (``non_finite``)."""
    if "dtype" in f and f.text("dtype") != "float32":
        raise SchemaError("verdict", "dtype", f"unsupported dtype {f.text('dtype')[:40]!r}")
    raw = f.f["tensor"]
    try:
        rows, cols = (int(n) for n in f.text("shape").split(","))
    except ValueError as err:
        raise SchemaError("verdict", "shape", f"shape {f.text('shape')[:40]!r}: {err}") from err
    if 0 < rows <= 1 << 16 and 0 < cols <= 1 << 16 and isinstance(raw, bytes) and len(raw) < rows * cols * 4:
        raise SchemaError("verdict", "truncated", f"tensor of {len(raw)} bytes for shape ({rows}, {cols})")
    tensor, valid = f.tensor()
    if not np.isfinite(tensor).all():
        raise SchemaError("verdict", "non_finite", "NaN or infinity in the tensor")
    return tensor, valid

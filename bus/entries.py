"""What a consumer checks of a stream entry before it decodes it: its size, and the closed set of reasons an
entry is dead-lettered for.

Any process with write access to Redis can add anything to a stream; a reader must never let one entry stop it.
The first check is the size, counted over the raw field names and values as the bus handed them over (a sum of
lengths: nothing is parsed), so an entry of 64 MiB costs a read, never a JSON parse or a tensor copy. What is
over :data:`MAX_ENTRY_BYTES` (a setting of each reader) is dead-lettered as :attr:`DeadReason.TOO_LARGE`.

The default limit, 1 MiB, is three times the largest legitimate entry: a verdict carries its window when it is
over the threshold, T x F float32 values, and a model card allows T up to 1024 over the 82 features of the
contract (1024 x 82 x 4 = 335,872 bytes, and some 600 bytes of other fields). The shipped model's verdict (T = 10)
weighs about 3.9 KB, an aggregate bucket 0.5 to 2 KB (beacons), an episode alert entry about 1.5 KB.

>>> entry_bytes({"v": b"1", "eve": "{}"})
7
>>> oversized({"tensor": b"x" * 2048}, limit=1024)
2054
>>> oversized({"v": b"1"}, limit=1024) is None
True
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Any

MAX_ENTRY_BYTES = 1 << 20
"""Default limit on one entry's field names and values together, in bytes (see the module docstring)."""


class DeadReason(str, Enum):
    """Why a reader dead-lettered an entry (a closed set: it is a metric label). Readers add their own few (the
    alerter's ``invalid_alert``, the console's ``not_alert``...); these are the ones every reader shares."""

    TOO_LARGE = "too_large"
    """Over the reader's entry size limit; refused before anything of it was parsed."""
    TRUNCATED = "truncated"
    """Cut short: a JSON field that ends before its document does, a tensor shorter than its shape says."""
    DTYPE = "dtype"
    """A field of the wrong type: a number where text is expected or the reverse, a tensor that is not float32."""
    VERSION = "version"
    """A schema version this reader does not know."""
    MISSING_FIELD = "missing_field"
    """A field the schema requires is absent."""
    VALUE = "value"
    """A value out of its range: a negative or absurd time, a port over 65535, a 10 KB window id."""
    NON_FINITE = "non_finite"
    """NaN or infinity where a finite number is expected."""
    MALFORMED = "malformed"
    """Anything else that cannot be parsed (for example field names or values that are not UTF-8)."""


def entry_bytes(fields: Mapping[Any, Any]) -> int:
    """The entry's size: the lengths of its field names and values (bytes, or characters of text), summed."""
    return sum(len(k) + len(v) if isinstance(v, (bytes, str)) else len(k) for k, v in fields.items())


def oversized(fields: Mapping[Any, Any], limit: int) -> int | None:
    """The entry's size when it is over ``limit`` bytes, else None."""
    size = entry_bytes(fields)
    return size if size > limit else None

"""Map feature rows measured at 1 µs (the CSVs) onto the sensor's 1 ms resolution.

NFStream stamps packets in whole milliseconds, so the sensor's time features are differences of
millisecond timestamps. Training data are mapped the same way before a model sees them: every time
feature is rounded to the nearest millisecond (half up) and every rate is recomputed from the rounded
durations with CICFlowMeter's formulas. ``models/`` calls :func:`quantize_columns`; the sensor needs
nothing, since it measures at that resolution already. The cost of this choice on detection is measured
by ``lab/resolution_check.py`` (report in ``models/reports/time-resolution.md``).

>>> row = {"Flow Duration": 1499.0, "Total Fwd Packet": 1.0, "Total Bwd packets": 1.0,
...        "Total Length of Fwd Packet": 0.0, "Total Length of Bwd Packet": 0.0}
>>> quantize_row(row)["Flow Duration"], quantize_row(row)["Flow Packets/s"]
(1000.0, 2000.0)
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np

from tapwatch.features.contract import TIME_FEATURES, TIME_RESOLUTION_US


def quantize_time(values: Any) -> Any:
    """Round microsecond values to the nearest multiple of the sensor resolution (half up).

    >>> float(quantize_time(49.0)), float(quantize_time(500.0)), float(quantize_time(119_999_999.0))
    (0.0, 1000.0, 120000000.0)
    """
    res = float(TIME_RESOLUTION_US)
    return np.floor(np.asarray(values, dtype=np.float64) / res + 0.5) * res


def _rates(cols: MutableMapping[str, Any]) -> None:
    """Recompute the duration-derived rates of CICFlowMeter from (quantised) durations, in place."""
    duration = np.asarray(cols["Flow Duration"], dtype=np.float64)
    fwd = np.asarray(cols["Total Fwd Packet"], dtype=np.float64)
    bwd = np.asarray(cols["Total Bwd packets"], dtype=np.float64)
    total_bytes = np.asarray(cols["Total Length of Fwd Packet"], dtype=np.float64) + np.asarray(
        cols["Total Length of Bwd Packet"], dtype=np.float64
    )
    seconds = duration / 1e6
    nonzero = duration > 0
    safe = np.where(nonzero, seconds, 1.0)
    cols["Flow Bytes/s"] = np.where(nonzero, total_bytes / safe, -1.0)
    cols["Flow Packets/s"] = np.where(nonzero, (fwd + bwd) / safe, -1.0)
    cols["Fwd Packets/s"] = np.where(nonzero, fwd / safe, 0.0)
    cols["Bwd Packets/s"] = np.where(nonzero, bwd / safe, 0.0)


def quantize_columns(cols: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Quantise a column mapping (a pandas DataFrame works) in place and return it.

    Bulk rates are left as measured: their durations are sums over bulk packets that a row does not
    carry, so they cannot be recomputed from the row.
    """
    for name in TIME_FEATURES:
        if name in cols:
            cols[name] = quantize_time(cols[name])
    if all(k in cols for k in ("Flow Duration", "Total Fwd Packet", "Total Bwd packets")):
        _rates(cols)
    return cols


def quantize_row(row: Mapping[str, float]) -> dict[str, float]:
    """Quantise one row (a mapping of CIC column names to values) and return a new dict."""
    cols: dict[str, Any] = dict(row)
    quantize_columns(cols)
    return {k: float(np.asarray(v)) for k, v in cols.items()}

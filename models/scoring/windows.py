"""Per-host windows of a flows CSV: each row's key and time, and the index that orders rows into windows.

``tapwatch score`` builds a window of a host's last T flows by start time, as the sensor's windower does live;
a CSV without the key or time columns, or whose Timestamp holds no times, is scored per flow instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tapwatch.features.window import WindowKey

KEY_COLUMNS = {WindowKey.SRC_IP: ("Src IP",), WindowKey.DST_IP: ("Dst IP",), WindowKey.PAIR: ("Src IP", "Dst IP")}
"""The CSV columns that make each window key."""


class NotTimes(ValueError):
    """The Timestamp column holds values that are no times (some CICFlowMeter exports write a counter there)."""


def keys_and_times(frame: pd.DataFrame, positions: Mapping[str, int], key: WindowKey) -> Any:
    """Each row's window key and start time in µs (``positions``: column name -> the frame's column);
    :class:`NotTimes` when a Timestamp value is no time."""
    keys = [frame[positions[c]].fillna("").str.strip() for c in KEY_COLUMNS[key]]
    joined = keys[0] if len(keys) == 1 else keys[0] + ">" + keys[1]
    text = frame[positions["Timestamp"]].fillna("").str.strip()
    try:
        times = pd.to_datetime(text, format="ISO8601")
    except (ValueError, TypeError):  # the original release writes day/month/year
        times = pd.to_datetime(text, dayfirst=True, format="mixed", errors="coerce")
    if times.isna().any():
        raise NotTimes(
            f"{int(times.isna().sum())} Timestamp values such as {text[times.isna()].iloc[0]!r} are no times"
        )
    return joined, times.to_numpy().astype("datetime64[us]").astype(np.int64)


@dataclass(frozen=True)
class HostIndex:
    """Rows ordered by key, then time, then file position; where each key's run starts.

    >>> idx = HostIndex.build(np.array([0, 1, 0, 0]), np.array([5, 1, 3, 9]))
    >>> idx.seq.tolist(), idx.windows_rows(np.arange(4), 2)[0].tolist()
    ([2, 0, 3, 1], [[2, 0], [1, 1], [2, 2], [0, 3]])
    """

    seq: np.ndarray
    position: np.ndarray
    run_start: np.ndarray

    @classmethod
    def build(cls, keys: np.ndarray, times: np.ndarray) -> HostIndex:
        n = len(keys)
        seq = np.lexsort((np.arange(n), times, keys))
        position = np.empty(n, dtype=np.int64)
        position[seq] = np.arange(n)
        starts = np.ones(n, dtype=bool)
        starts[1:] = keys[seq][1:] != keys[seq][:-1]
        run_start = np.empty(n, dtype=np.int64)
        run_start[seq] = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
        return cls(seq, position, run_start)

    def windows_rows(self, rows: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        """(n, t) file rows of each row's window, oldest first, and a mask of the real (unpadded) ones."""
        pos = self.position[rows][:, None] - np.arange(t - 1, -1, -1)[None, :]
        ok = pos >= self.run_start[rows][:, None]
        return self.seq[np.where(ok, pos, self.position[rows][:, None])], ok

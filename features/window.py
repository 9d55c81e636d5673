"""Per-key sliding windows of the last T flows, scaled as the model card says.

Each flow record is scaled into one float32 row and appended to its key's window (the source host by
default); the window is emitted at once (stride 1), left-padded with zeros, with the number of valid
rows. The number of keys held is capped; the least recently seen key is evicted and counted.

>>> from tapwatch.features.card import identity_card
>>> w = Windower(identity_card(3), max_keys=2)
>>> w.key_of  # doctest: +ELLIPSIS
<WindowKey.SRC_IP: 'src_ip'>
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from enum import Enum
from typing import Any

import numpy as np

from tapwatch.features.card import ModelCard
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import ModelCardError
from tapwatch.features.schema import FlowMeta, FlowRecord, WindowEntry


class WindowKey(str, Enum):
    """What groups flows into one window."""

    SRC_IP = "src_ip"
    DST_IP = "dst_ip"
    PAIR = "pair"

    def of(self, meta: FlowMeta) -> str:
        if self is WindowKey.SRC_IP:
            return meta.src_ip
        if self is WindowKey.DST_IP:
            return meta.dst_ip
        return f"{meta.src_ip}>{meta.dst_ip}"


def check_servable(card: ModelCard) -> None:
    """Raise :class:`ModelCardError` naming the features ``card`` reads that the sensor does not compute.

    >>> from tapwatch.features.card import identity_card
    >>> check_servable(identity_card(3))
    """
    unknown = [f for f in card.features if f not in FEATURE_NAMES]
    if unknown:
        names = ", ".join(unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        raise ModelCardError(f"card {card.name} reads {len(unknown)} features the sensor does not compute ({names})")


class _Rows:
    """One key's window (T, F) and how many of its rows are flows (the others are zeros, at the top)."""

    __slots__ = ("valid", "window")

    def __init__(self, window: np.ndarray[Any, np.dtype[np.float32]], valid: int) -> None:
        self.window, self.valid = window, valid


class Windower:
    """Build :class:`WindowEntry` objects from flow records.

    Parameters
    ----------
    card
        Supplies T, the feature order, the scaler and the feature-set id.
    key
        How flows are grouped; defaults to the card's ``window_key``.
    max_keys
        Cap on keys held; the least recently seen one is evicted (memory stays bounded:
        T × F × 4 bytes per key, 3.3 kB for T = 10 and 82 features).
    on_evict
        Called once per evicted key (the sensor counts evictions).
    """

    def __init__(
        self,
        card: ModelCard,
        key: WindowKey | None = None,
        max_keys: int = 100_000,
        on_evict: Callable[[], None] | None = None,
    ) -> None:
        check_servable(card)
        # A model trained on a subset of the sensor's features (the original CIC-IDS2017 release lacks five) gets
        # its columns by name, in its own order; the full contract order needs no selection.
        index = {name: i for i, name in enumerate(FEATURE_NAMES)}
        self._columns = None if tuple(card.features) == FEATURE_NAMES else np.array([index[f] for f in card.features])
        self.card = card
        self.key_of = key or WindowKey(card.window_key)
        self.max_keys = max_keys
        self.on_evict = on_evict
        self.t = card.window_length
        n = len(card.features)
        self._center, self._scale = card.scaler.arrays(n)
        self._log1p = card.scaler.log1p
        # Per key: its window as it stands, newest row last and zeros above the valid rows, and the valid rows.
        self._keys: OrderedDict[str, _Rows] = OrderedDict()
        self._n = n

    def __len__(self) -> int:
        return len(self._keys)

    def scale(self, values: tuple[float, ...]) -> np.ndarray[Any, np.dtype[np.float32]]:
        """One scaled float32 row for a flow's feature values (all of the sensor's, in the contract's order)."""
        x = np.asarray(values, dtype=np.float64)
        if self._columns is not None:
            x = x[self._columns]
        if self._log1p:
            x = np.sign(x) * np.log1p(np.abs(x))
        return np.asarray((x - self._center) / self._scale, dtype=np.float32)

    def add(self, record: FlowRecord) -> WindowEntry:
        """Append the record to its key's window and return the window as it now stands."""
        key = self.key_of.of(record.meta)
        rows = self._keys.get(key)
        if rows is None:
            rows = _Rows(np.zeros((self.t, self._n), dtype=np.float32), 0)
            self._keys[key] = rows
            if len(self._keys) > self.max_keys:
                self._keys.popitem(last=False)
                if self.on_evict is not None:
                    self.on_evict()
        else:
            self._keys.move_to_end(key)
        window = rows.window
        window[:-1] = window[1:]  # the oldest row falls off the top (NumPy copies overlapping rows safely)
        window[-1] = self.scale(record.values)
        rows.valid = min(rows.valid + 1, self.t)
        tensor = window.copy()
        return WindowEntry(
            sensor=record.meta.sensor,
            key=key,
            flow=record.meta,
            tensor=tensor,
            valid_rows=rows.valid,
            feature_set_id=self.card.feature_set_id,
        )

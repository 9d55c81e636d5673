"""Train / validation / test splits (EVALUATION.md): split first, windows come after.

Every split returns row indices into a :class:`~tapwatch.models.training.data.Dataset`. Splits with time carve
the validation part out of the training period as whole time blocks, so no window ever bridges parts.

>>> import pandas as pd
>>> from tapwatch.models.training.data_common import Dataset
>>> ds = Dataset.from_frame("toy", pd.DataFrame({"a": range(20)}), pd.Series(["b", "x"] * 10), "b")
>>> s = stratified_split(ds, test_fraction=0.3, val_fraction=0.2, seed=0)
>>> len(s.train), len(s.val), len(s.test)
(11, 3, 6)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from tapwatch.features.errors import BadInputError
from tapwatch.models.training.data_common import Dataset

CIC_TEST_HOSTS: tuple[str, ...] = (
    "192.168.10.8", "192.168.10.9", "192.168.10.15", "192.168.10.12", "192.168.10.17", "192.168.10.51",
)  # fmt: skip
"""Hosts the CIC-IDS2017 host split holds out: the infiltrated host (.8: Infiltration - Portscan, Botnet),
two more Botnet hosts (.9, .15), two benign-only workstations and a server. 172.16.0.1 (the testbed NAT,
sole source of ten attack classes) stays in training; held out, training would have almost no attacks."""


@dataclass(frozen=True, eq=False)
class Split:
    """Disjoint, sorted row indices of the train, validation and test parts, with notes for the report."""

    name: str
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for part in ("train", "val", "test"):
            object.__setattr__(self, part, np.sort(np.asarray(getattr(self, part), dtype=np.int64)))
        joined = np.concatenate([self.train, self.val, self.test])
        if len(np.unique(joined)) != len(joined):
            raise ValueError(f"split {self.name}: parts overlap")

    def parts(self) -> dict[str, np.ndarray]:
        return {"train": self.train, "val": self.val, "test": self.test}

    def describe(self, ds: Dataset) -> dict[str, Any]:
        """Rows and class counts per part, and the notes."""
        out: dict[str, Any] = {"name": self.name, "notes": list(self.notes)}
        for part, rows in self.parts().items():
            counts = ds.y.iloc[rows].value_counts()
            out[part] = {"rows": len(rows), "classes": {str(k): int(v) for k, v in counts.items()}}
        return out


def _seconds(ds: Dataset) -> np.ndarray:
    if not ds.has_hosts:
        raise BadInputError(ds.name, "has no Src IP and Timestamp: time and host splits are impossible")
    ts = ds.meta["Timestamp"].to_numpy().astype("datetime64[us]").astype(np.int64)
    return np.asarray(ts / 1e6)


def carve_time_blocks(
    ds: Dataset, rows: np.ndarray, fraction: float, block_seconds: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str]:
    """Move whole time blocks of ``rows`` to validation, at most ``fraction`` of any class.

    Blocks are visited in a seeded random order and taken while no class would exceed its share, so
    validation gets most classes without taking all of a short attack. Returns (train, val, note).
    """
    t = _seconds(ds)[rows]
    block = np.floor((t - t.min()) / block_seconds).astype(np.int64)
    table = pd.crosstab(block, ds.y.to_numpy()[rows])
    cap = fraction * table.sum(axis=0).to_numpy(dtype=np.float64) + 1e-9
    taken = np.zeros_like(cap)
    chosen = []
    rng = np.random.default_rng(seed)
    counts = table.to_numpy(dtype=np.float64)
    for i in rng.permutation(len(table)):
        if np.all(taken + counts[i] <= cap):
            taken += counts[i]
            chosen.append(table.index[i])
    in_val = np.isin(block, chosen)
    missing = [str(c) for c, n in zip(table.columns, taken, strict=True) if n == 0]
    note = (
        f"validation: {len(chosen)} of {len(table)} {block_seconds:g}-s time blocks of the training part "
        f"({int(in_val.sum())} rows), at most {fraction:.0%} of any class; classes absent from validation: {missing}"
    )
    return rows[~in_val], rows[in_val], note


def _unseen(ds: Dataset, train: np.ndarray, test: np.ndarray) -> str:
    unseen = sorted(set(ds.y.iloc[test]) - set(ds.y.iloc[train]))
    return f"test classes never in training: {unseen}"


def time_split(
    ds: Dataset, test_fraction: float = 0.3, val_fraction: float = 0.15, block_seconds: float = 60.0, seed: int = 0
) -> Split:
    """First ``1 - test_fraction`` of the flows by Timestamp train, the rest test; validation from train."""
    t = _seconds(ds)
    order = np.argsort(t, kind="stable")
    cut = round(len(order) * (1 - test_fraction))
    pool, test = order[:cut], order[cut:]
    train, val, note = carve_time_blocks(ds, pool, val_fraction, block_seconds, seed)
    when = pd.Timestamp(ds.meta["Timestamp"].iloc[test[0]]) if len(test) else None
    notes = (f"time split: first {1 - test_fraction:.0%} of flows by Timestamp train, test from {when}", note,
             _unseen(ds, pool, test))  # fmt: skip
    return Split("time", train, val, test, notes)


def host_split(
    ds: Dataset,
    test_hosts: Sequence[str] = CIC_TEST_HOSTS,
    val_fraction: float = 0.15,
    block_seconds: float = 60.0,
    seed: int = 0,
) -> Split:
    """Every flow of ``test_hosts`` (by ``Src IP``) tests; the other hosts train; validation from train."""
    _seconds(ds)
    hosts = ds.meta["Src IP"].to_numpy()
    absent = sorted(set(test_hosts) - set(hosts))
    if absent:
        raise BadInputError("test_hosts", f"{absent} are not source hosts of {ds.name}")
    in_test = np.isin(hosts, list(test_hosts))
    pool, test = np.flatnonzero(~in_test), np.flatnonzero(in_test)
    train, val, note = carve_time_blocks(ds, pool, val_fraction, block_seconds, seed)
    notes = (f"host split: source hosts {list(test_hosts)} test, the other hosts train", note, _unseen(ds, pool, test))
    return Split("host", train, val, test, notes)


def _strata(y: pd.Series) -> np.ndarray:
    """Classes as strata; classes with fewer than 3 rows share one stratum (sklearn needs 2 per part)."""
    counts = y.value_counts()
    rare = set(counts.index[counts < 3])
    return np.asarray(y.where(~y.isin(rare), "__rare__").to_numpy())


def _stratified(rows: np.ndarray, y: pd.Series, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if fraction <= 0:
        return rows, rows[:0]
    keep, take = train_test_split(rows, test_size=fraction, random_state=seed, stratify=_strata(y.iloc[rows]))
    return np.asarray(keep), np.asarray(take)


def stratified_split(ds: Dataset, test_fraction: float = 0.3, val_fraction: float = 0.15, seed: int = 0) -> Split:
    """Random stratified split of rows (per-flow data); ``val_fraction`` is a share of the training part."""
    pool, test = _stratified(np.arange(len(ds.y)), ds.y, test_fraction, seed)
    train, val = _stratified(pool, ds.y, val_fraction, seed)
    note = f"random split stratified by class: {test_fraction:.0%} test, {val_fraction:.0%} of the rest validation"
    return Split("random", train, val, test, (note, _unseen(ds, pool, test)))


def predefined_split(
    ds: Dataset, column: str = "part", test_value: str = "KDDTest+", val_fraction: float = 0.15, seed: int = 0
) -> Split:
    """The dataset's own split (NSL-KDD: KDDTest+ tests); stratified validation from the training rows."""
    if column not in ds.meta.columns:
        raise BadInputError(ds.name, f"has no meta column {column!r} naming an official split")
    in_test = (ds.meta[column] == test_value).to_numpy()
    pool, test = np.flatnonzero(~in_test), np.flatnonzero(in_test)
    train, val = _stratified(pool, ds.y, val_fraction, seed)
    notes = (f"official split: {column} == {test_value!r} tests", _unseen(ds, pool, test))
    return Split("official", train, val, test, notes)


def drop_seen_in_train(ds: Dataset, split: Split) -> Split:
    """Remove validation and test rows whose feature vector occurs in training (EVALUATION.md rule 2)."""
    key = pd.util.hash_pandas_object(ds.X, index=False).to_numpy()
    kept = {}
    for part in ("val", "test"):
        rows = getattr(split, part)
        kept[part] = rows[~np.isin(key[rows], key[split.train])]
    note = (
        f"removed {len(split.val) - len(kept['val'])} validation and {len(split.test) - len(kept['test'])} test "
        "rows whose feature vector occurs in training"
    )
    return replace(split, val=kept["val"], test=kept["test"], notes=(*split.notes, note))

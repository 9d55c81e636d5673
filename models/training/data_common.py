"""The :class:`Dataset` record and the cleaning steps every loader shares.

A loader reads its files once (hashing the uncompressed bytes), checks the schema, normalises the
label spelling, counts exact duplicates, drops identifiers, replaces missing and non-finite values,
encodes categorical columns and records each of these as a human-readable step for the report.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapwatch.features.errors import BadInputError


def default_root() -> Path:
    """The folder holding one folder per dataset: ``TAPWATCH_DATASETS`` if set; else ``../shared/datasets`` from
    the working directory (the repository root, where the README's commands and the tests run); else next to the
    source checkout (editable install).

    Resolved when a loader is called without a ``root``, never at import: importing a module reads nothing.
    """
    env = os.environ.get("TAPWATCH_DATASETS")
    if env:
        return Path(env)
    from_cwd = Path.cwd().parent / "shared" / "datasets"
    if from_cwd.is_dir():
        return from_cwd.resolve()
    return Path(__file__).resolve().parents[2].parent / "shared" / "datasets"


class Encoding(str, Enum):
    """How categorical columns become numbers."""

    ONEHOT = "onehot"
    ORDINAL = "ordinal"


class Dedupe(str, Enum):
    """Which duplicate rows a loader drops (it always counts them).

    ``EXACT``: rows equal in every column of the file except the row id (``id``). ``FEATURES``: rows
    whose encoded feature vector and class both occur earlier (one row per label of a conflicting vector
    stays).
    """

    NONE = "none"
    EXACT = "exact"
    FEATURES = "features"


@dataclass(frozen=True)
class FileInfo:
    """One input file: name, rows read and the sha256 of its uncompressed bytes."""

    name: str
    rows: int
    sha256: str
    expected_sha256: str | None = None

    @property
    def verified(self) -> bool:
        """The digest matches the dataset's SHA256SUMS."""
        return self.expected_sha256 == self.sha256


@dataclass(frozen=True)
class CategoricalEncoding:
    """How one categorical column was encoded.

    One-hot columns are named ``"<column>=<category>"`` in ``categories`` order; ordinal codes are the
    positions in ``categories``; a category not in ``categories`` is all zeros (one-hot) or -1 (ordinal).
    """

    column: str
    kind: Encoding
    categories: tuple[str, ...]

    @property
    def output_columns(self) -> tuple[str, ...]:
        if self.kind is Encoding.ORDINAL:
            return (self.column,)
        return tuple(f"{self.column}={c}" for c in self.categories)


@dataclass(frozen=True, eq=False)
class Dataset:
    """A cleaned dataset: numeric features, labels and what was done to get them.

    Parameters
    ----------
    name
        Dataset id, e.g. ``"cic-ids2017"`` or ``"unsw-nb15-nottl"``.
    X
        Numeric features (float64), columns in the fixed order ``features``, index 0..n-1.
    y
        Class per row, normalised spelling (str).
    y_binary
        0 benign, 1 attack (int64), consistent with ``y``.
    meta
        Per-row columns that are not features: ``Src IP``, ``Timestamp`` (flow start) and ``End`` (start
        + duration) for CIC-IDS2017 (windows),
        ``part`` and ``family`` for NSL-KDD, none elsewhere.
    features, encodings, files, steps, counts
        Feature order; categorical encodings; input files with sha256; human-readable notes of what was
        dropped, encoded or fixed; the same facts as numbers.
    benign_class
        The class of benign rows.

    Example
    -------
    >>> ds = Dataset.from_frame("toy", pd.DataFrame({"a": [1.0, 2.0]}), pd.Series(["benign", "x"]), "benign")
    >>> ds.class_names, ds.y_binary.tolist()
    (('benign', 'x'), [0, 1])
    """

    name: str
    X: pd.DataFrame
    y: pd.Series
    y_binary: np.ndarray
    meta: pd.DataFrame
    features: tuple[str, ...]
    benign_class: str
    encodings: tuple[CategoricalEncoding, ...] = ()
    files: tuple[FileInfo, ...] = ()
    steps: tuple[str, ...] = ()
    counts: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.X)
        if len(self.y) != n or len(self.y_binary) != n or len(self.meta) != n:
            raise ValueError(f"{self.name}: X, y, y_binary and meta differ in length")
        if tuple(self.X.columns) != self.features:
            raise ValueError(f"{self.name}: X columns differ from the feature list")

    @classmethod
    def from_frame(cls, name: str, x: pd.DataFrame, y: pd.Series, benign_class: str) -> Dataset:
        """A dataset from features and classes alone (tests, fixtures)."""
        y = y.reset_index(drop=True).astype(str)
        y_binary = (y != benign_class).to_numpy(dtype=np.int64)
        x = x.reset_index(drop=True).astype(np.float64)
        meta = pd.DataFrame(index=x.index)
        return cls(name, x, y, y_binary, meta, tuple(x.columns), benign_class)

    @property
    def class_names(self) -> tuple[str, ...]:
        """All classes, the benign class first, then sorted."""
        others = sorted(set(self.y.unique()) - {self.benign_class})
        return (self.benign_class, *others)

    @property
    def has_hosts(self) -> bool:
        """Rows carry a source host and a time, so per-host windows can be built."""
        return "Src IP" in self.meta.columns and "Timestamp" in self.meta.columns

    def class_counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.y.value_counts().items()}

    def describe(self) -> dict[str, Any]:
        """Plain data for a report: shape, classes, files, counts and steps."""
        return {
            "name": self.name,
            "rows": len(self.X),
            "features": len(self.features),
            "classes": self.class_counts(),
            "attack_rows": int(self.y_binary.sum()),
            "files": [{"file": f.name, "rows": f.rows, "sha256": f.sha256, "verified": f.verified} for f in self.files],
            "encodings": [
                {"column": e.column, "kind": e.kind.value, "categories": list(e.categories)} for e in self.encodings
            ],
            "counts": dict(self.counts),
            "steps": list(self.steps),
        }


def expected_digests(folder: Path) -> dict[str, str]:
    """Digests from ``SHA256SUMS`` in ``folder`` keyed by file name (uncompressed names)."""
    path = folder / "SHA256SUMS"
    if not path.exists():
        return {}
    pairs = (line.split(maxsplit=1) for line in path.read_text().splitlines() if line.strip())
    return {Path(name.strip()).name: digest for digest, name in pairs}


def read_table(path: Path, expected: Mapping[str, str], header: bool = True) -> tuple[pd.DataFrame, FileInfo]:
    """Read a CSV (``.gz`` or plain) once: hash the uncompressed bytes, parse them.

    BOM and CRLF are handled (``utf-8-sig``; pandas accepts ``\\r\\n``); ``-`` and empty fields become
    missing values; header names are stripped of surrounding spaces.
    """
    if not path.exists():
        raise BadInputError(str(path), "file not found (is ../shared/datasets present?)")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    digest = hashlib.sha256(raw).hexdigest()
    frame = pd.read_csv(
        io.BytesIO(raw),
        encoding="utf-8-sig",
        header=0 if header else None,
        na_values=["-"],
        low_memory=False,
    )
    if header:
        frame.columns = [str(c).strip() for c in frame.columns]
    name = path.name.removesuffix(".gz")
    return frame, FileInfo(name, len(frame), digest, expected.get(name))


def check_columns(subject: str, found: Iterable[str], expected: Sequence[str]) -> None:
    """Raise :class:`BadInputError` naming the missing and the unexpected columns, if any."""
    found_list = list(found)
    dups = sorted({c for c in found_list if found_list.count(c) > 1})
    missing = [c for c in expected if c not in found_list]
    unexpected = [c for c in found_list if c not in expected]
    if not (missing or unexpected or dups):
        return
    parts = []
    if missing:
        parts.append(f"missing columns {missing}")
    if unexpected:
        parts.append(f"unexpected columns {unexpected}")
    if dups:
        parts.append(f"repeated columns {dups}")
    raise BadInputError(subject, "; ".join(parts) + f" (expected the {len(expected)} documented columns)")


def count_exact_duplicates(frame: pd.DataFrame, row_id: str | None) -> pd.Series:
    """Mask of rows equal to an earlier row in every column but the row id."""
    cols = [c for c in frame.columns if c != row_id]
    return frame.duplicated(subset=cols, keep="first")


def clean_numeric(frame: pd.DataFrame, subject: str) -> tuple[pd.DataFrame, dict[str, int], list[str]]:
    """Columns to float64; missing ("-", empty) and ±inf replaced by 0, counted per column."""
    out = pd.DataFrame(index=frame.index)
    missing: dict[str, int] = {}
    infinite: dict[str, int] = {}
    for col in frame.columns:
        values = pd.to_numeric(frame[col], errors="coerce")
        bad = values.isna() & frame[col].notna()
        if bad.any():
            sample = sorted(set(frame.loc[bad, col].astype(str)))[:5]
            raise BadInputError(subject, f"column {col!r} holds non-numeric values {sample}")
        arr = values.to_numpy(dtype=np.float64)
        if (n := int(np.isnan(arr).sum())) > 0:
            missing[col] = n
        if (n := int(np.isinf(arr).sum())) > 0:
            infinite[col] = n
        out[col] = np.where(np.isfinite(arr), arr, 0.0)
    steps = []
    if missing:
        steps.append(f"replaced {sum(missing.values())} missing values ('-' or empty) with 0: {missing}")
    if infinite:
        steps.append(f"replaced {sum(infinite.values())} ±inf values with 0: {infinite}")
    counts = {"missing_values": sum(missing.values()), "infinite_values": sum(infinite.values())}
    return out, counts, steps


def fit_encodings(frame: pd.DataFrame, columns: Sequence[str], kind: Encoding) -> tuple[CategoricalEncoding, ...]:
    """Sorted category lists of ``columns`` (missing values are the category ``"-"``)."""
    out = []
    for c in columns:
        codes, names = _factorize(frame[c])
        out.append(CategoricalEncoding(c, kind, tuple(sorted(set(names[np.unique(codes)].tolist())))))
    return tuple(out)


def _factorize(col: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes into stripped category names; missing values are ``"-"`` (only distinct values are stripped)."""
    codes, uniques = pd.factorize(col, use_na_sentinel=True)
    names = np.array([str(u).strip() for u in uniques] + ["-"], dtype=object)
    return np.where(codes < 0, len(names) - 1, codes), names


def apply_encodings(
    frame: pd.DataFrame, encodings: Sequence[CategoricalEncoding]
) -> tuple[pd.DataFrame, dict[str, int]]:
    """Replace each encoded column in place (keeping the column order); count unknown categories."""
    by_col = {e.column: e for e in encodings}
    blocks: list[pd.DataFrame] = []
    unknown: dict[str, int] = {}
    for col in frame.columns:
        enc = by_col.get(col)
        if enc is None:
            blocks.append(frame[[col]])
            continue
        raw_codes, names = _factorize(frame[col])
        position = {c: i for i, c in enumerate(enc.categories)}
        codes = np.array([position.get(n, -1) for n in names], dtype=np.int64)[raw_codes]
        if (n := int((codes < 0).sum())) > 0:
            unknown[col] = n
        if enc.kind is Encoding.ORDINAL:
            blocks.append(pd.DataFrame({col: codes.astype(np.float64)}, index=frame.index))
        else:
            onehot = (codes[:, None] == np.arange(len(enc.categories))[None, :]).astype(np.float64)
            blocks.append(pd.DataFrame(onehot, columns=list(enc.output_columns), index=frame.index))
    return pd.concat(blocks, axis=1), unknown


def describe_encodings(encodings: Sequence[CategoricalEncoding]) -> str:
    sizes = ", ".join(f"{e.column} ({len(e.categories)})" for e in encodings)
    kind = encodings[0].kind.value if encodings else "none"
    return f"encoded {len(encodings)} categorical columns ({kind}; categories sorted, '-' = none): {sizes}"


def feature_duplicates(x: pd.DataFrame, y: pd.Series) -> tuple[pd.Series, pd.Series, dict[str, int]]:
    """Rows whose feature vector occurs earlier; rows whose (vector, class) occurs earlier; conflict counts.

    ``conflicting_feature_vectors`` is how many distinct feature vectors carry more than one class,
    ``conflicting_rows`` how many rows carry such a vector.
    """
    key = pd.util.hash_pandas_object(x, index=False)
    vec_dup = key.duplicated(keep="first")
    pair = pd.DataFrame({"k": key.to_numpy(), "y": y.to_numpy()})
    pair_dup = pd.Series(pair.duplicated(keep="first").to_numpy(), index=x.index)
    classes_per_key = pair.drop_duplicates().groupby("k").size()
    conflicting = classes_per_key.index[classes_per_key.to_numpy() > 1]
    counts = {
        "conflicting_feature_vectors": len(conflicting),
        "conflicting_rows": int(pair["k"].isin(conflicting).sum()),
    }
    return vec_dup, pair_dup, counts


@dataclass(frozen=True)
class Parts:
    """What a loader hands to :func:`finish`: everything of the future :class:`Dataset` but the dedupe."""

    name: str
    X: pd.DataFrame
    y: pd.Series
    meta: pd.DataFrame
    benign_class: str
    encodings: tuple[CategoricalEncoding, ...]
    files: tuple[FileInfo, ...]
    exact_dup: pd.Series
    steps: list[str]
    counts: dict[str, int]


def finish(parts: Parts, dedupe: Dedupe) -> Dataset:
    """Count feature-vector duplicates, drop the rows ``dedupe`` asks for and build the record."""
    x, y, meta = parts.X, parts.y, parts.meta
    steps, counts = list(parts.steps), dict(parts.counts)
    vec_dup, pair_dup, conflicts = feature_duplicates(x, y)
    counts["exact_duplicates"] = int(parts.exact_dup.sum())
    counts["feature_duplicates"] = int(vec_dup.sum())
    counts |= conflicts
    steps.append(
        f"{counts['exact_duplicates']} exact duplicate rows (all columns but the row id); "
        f"{counts['feature_duplicates']} rows repeat an earlier feature vector; "
        f"{conflicts['conflicting_feature_vectors']} feature vectors ({conflicts['conflicting_rows']} rows) "
        "carry more than one class"
    )
    drop = {Dedupe.NONE: None, Dedupe.EXACT: parts.exact_dup, Dedupe.FEATURES: pair_dup}[dedupe]
    counts["dropped_duplicates"] = 0
    if drop is not None:
        keep = ~drop.to_numpy()
        counts["dropped_duplicates"] = int((~keep).sum())
        x, y, meta = x[keep], y[keep], meta[keep]
        steps.append(f"dedupe={dedupe.value}: dropped {counts['dropped_duplicates']} rows, kept {int(keep.sum())}")
    x, y, meta = x.reset_index(drop=True), y.reset_index(drop=True), meta.reset_index(drop=True)
    counts["rows"] = len(x)
    y_binary = (y != parts.benign_class).to_numpy(dtype=np.int64)
    return Dataset(
        name=parts.name,
        X=x,
        y=y,
        y_binary=y_binary,
        meta=meta,
        features=tuple(x.columns),
        benign_class=parts.benign_class,
        encodings=parts.encodings,
        files=parts.files,
        steps=tuple(steps),
        counts=counts,
    )

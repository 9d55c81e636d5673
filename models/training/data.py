"""Dataset loaders for ../shared/datasets: each returns a typed, cleaned :class:`Dataset`.

* :func:`load_cic_ids2017`: the corrected CIC-IDS2017 subset, the 82 contract features in the sensor's
  order, time features at the sensor's 1 ms resolution by default, ``Src IP`` and ``Timestamp`` as meta.
* :func:`load_unsw_nb15`: the UNSW-NB15 testing partition, with or without the TTL-derived features.
* :func:`load_ton_iot`: the ToN-IoT network train/test file as published today.
* :func:`load_nsl_kdd`: KDDTrain+ and KDDTest+ (``meta["part"]`` is the official split).
* ``lab`` and ``cic-ids2017+lab``: tapwatch's own lab flows, alone or beside CIC-IDS2017, classes as families
  (:mod:`tapwatch.models.training.data_lab`).

Every loader checks the schema (a :class:`~tapwatch.features.errors.BadInputError` names missing and
unexpected columns), hashes the uncompressed files, normalises label spellings, drops identifiers,
replaces missing and non-finite values, encodes categories, counts duplicates and records each step in
``Dataset.steps`` for the report. Splits and windows live in :mod:`tapwatch.models.training.sequences`.

>>> DatasetName("unsw-nb15-nottl").value
'unsw-nb15-nottl'
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from pathlib import Path

from tapwatch.models.training.data_cic import (
    CIC_BENIGN,
    CIC_CLASSES,
    CIC_COLUMNS,
    ORIGINAL_TO_CORRECTED,
    ColumnMapping,
    load_cic_ids2017,
    map_cic_columns,
    normalize_cic_label,
)
from tapwatch.models.training.data_common import (
    CategoricalEncoding,
    Dataset,
    Dedupe,
    Encoding,
    FileInfo,
    check_columns,
    default_root,
)
from tapwatch.models.training.data_lab import DEFAULT_CORPUS, load_cic_lab, load_lab
from tapwatch.models.training.data_tables import (
    KDD_COLUMNS,
    KDD_FAMILIES,
    KDD_PARTS,
    TON_CATEGORICAL,
    TON_COLUMNS,
    UNSW_COLUMNS,
    UNSW_TTL_FEATURES,
    load_nsl_kdd,
    load_ton_iot,
    load_unsw_nb15,
    normalize_kdd_label,
    normalize_ton_label,
    normalize_unsw_label,
)

__all__ = [
    "CIC_BENIGN",
    "CIC_CLASSES",
    "CIC_COLUMNS",
    "KDD_COLUMNS",
    "KDD_FAMILIES",
    "KDD_PARTS",
    "ORIGINAL_TO_CORRECTED",
    "TON_CATEGORICAL",
    "TON_COLUMNS",
    "UNSW_COLUMNS",
    "UNSW_TTL_FEATURES",
    "CategoricalEncoding",
    "ColumnMapping",
    "Dataset",
    "DatasetName",
    "Dedupe",
    "Encoding",
    "FileInfo",
    "check_columns",
    "default_root",
    "load_cic_ids2017",
    "load_dataset",
    "load_nsl_kdd",
    "load_ton_iot",
    "load_unsw_nb15",
    "map_cic_columns",
    "normalize_cic_label",
    "normalize_kdd_label",
    "normalize_ton_label",
    "normalize_unsw_label",
]


class DatasetName(str, Enum):
    """The datasets the benchmark runs on (``tapwatch train --dataset``)."""

    CIC_IDS2017 = "cic-ids2017"
    UNSW_NB15 = "unsw-nb15"
    UNSW_NB15_NOTTL = "unsw-nb15-nottl"
    TON_IOT = "ton-iot"
    NSL_KDD = "nsl-kdd"
    LAB = "lab"
    CIC_LAB = "cic-ids2017+lab"

    @property
    def is_lab(self) -> bool:
        """The dataset holds tapwatch's own lab flows (families as classes, episode splits)."""
        return self in (DatasetName.LAB, DatasetName.CIC_LAB)


def load_dataset(name: DatasetName | str, root: Path | None = None, dedupe: Dedupe = Dedupe.NONE,
                 corpora: Sequence[Path] = (), test_corpora: Sequence[Path] = ()) -> Dataset:  # fmt: skip
    """Load a dataset by name with its loader's defaults (CIC-IDS2017 quantised, one-hot categories).

    ``corpora`` and ``test_corpora`` are the lab corpora of ``lab`` and ``cic-ids2017+lab`` (default
    ``lab/corpus``, no test corpus); the lab datasets are never deduplicated (windows need every flow).
    """
    which = DatasetName(name)
    if which.is_lab:
        train = tuple(corpora) or (DEFAULT_CORPUS,)
        if which is DatasetName.LAB:
            return load_lab(train, test_corpora)
        return load_cic_lab(root, train, test_corpora)
    if which is DatasetName.CIC_IDS2017:
        return load_cic_ids2017(root, dedupe=dedupe)
    if which in (DatasetName.UNSW_NB15, DatasetName.UNSW_NB15_NOTTL):
        return load_unsw_nb15(root, with_ttl=which is DatasetName.UNSW_NB15, dedupe=dedupe)
    if which is DatasetName.TON_IOT:
        return load_ton_iot(root, dedupe=dedupe)
    return load_nsl_kdd(root, dedupe=dedupe)

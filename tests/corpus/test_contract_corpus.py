"""The feature contract against the corrected CIC-IDS2017 release in ../shared (the contract itself:
tests/unit/test_contract.py)."""

from __future__ import annotations

import gzip
from pathlib import Path

from tapwatch.features.contract import FEATURE_NAMES, IDENTIFIER_COLUMNS, LABEL_COLUMNS


def test_feature_list_is_the_corrected_release_header_minus_identifiers(shared: Path) -> None:
    for f in sorted((shared / "datasets" / "cic-ids2017" / "engelen_improved_sample_rnd5000").glob("*.csv.gz")):
        with gzip.open(f, "rt") as fh:
            header = fh.readline().strip().split(",")
        features = [c for c in header if c not in IDENTIFIER_COLUMNS + LABEL_COLUMNS]
        assert tuple(features) == FEATURE_NAMES, f.name

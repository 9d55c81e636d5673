"""The corrected CIC-IDS2017 subset: loader, label spellings and the original release's column names.

The subset (``cic-ids2017/engelen_improved_sample_rnd5000``, 16 files, one per class) has the corrected
release's 91 columns: the identifiers of :data:`IDENTIFIER_COLUMNS`, the 82 features of
:data:`FEATURE_NAMES` (the one feature list, shared with the sensor) and :data:`LABEL_COLUMNS`.

>>> normalize_cic_label("Web Attack – Brute Force"), normalize_cic_label("PortScan"), normalize_cic_label("BENIGN")
('Web Attack - Brute Force', 'Portscan', 'BENIGN')
>>> m = map_cic_columns([" Total Fwd Packets", "Fwd Header Length.1", " Label", "Flow ID"])
>>> m.rename[" Total Fwd Packets"], m.duplicates, m.rename[" Label"]
('Total Fwd Packet', ('Fwd Header Length.1',), 'Label')
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from tapwatch.features.contract import FEATURE_NAMES, IDENTIFIER_COLUMNS, LABEL_COLUMNS
from tapwatch.features.errors import BadInputError
from tapwatch.features.resolution import quantize_columns
from tapwatch.models.training.data_common import (
    Dataset,
    Dedupe,
    Parts,
    check_columns,
    clean_numeric,
    count_exact_duplicates,
    default_root,
    expected_digests,
    finish,
    read_table,
)

CIC_DIR = Path("cic-ids2017") / "engelen_improved_sample_rnd5000"
CIC_COLUMNS: tuple[str, ...] = (*IDENTIFIER_COLUMNS[:6], "Protocol", "Timestamp", *FEATURE_NAMES[1:], *LABEL_COLUMNS)
"""The corrected release's column order (``Protocol`` sits between the ports and the timestamp)."""
CIC_BENIGN = "BENIGN"
CIC_CLASSES: tuple[str, ...] = (
    "BENIGN", "Botnet", "DDoS", "DoS GoldenEye", "DoS Hulk", "DoS Slowhttptest", "DoS Slowloris", "FTP-Patator",
    "Heartbleed", "Infiltration", "Infiltration - Portscan", "Portscan", "SSH-Patator", "Web Attack - Brute Force",
    "Web Attack - SQL Injection", "Web Attack - XSS",
)  # fmt: skip
"""The corrected release's class spellings (Engelen et al.), which the loader normalises to."""

# Spellings of the original release (and of common re-exports) that differ beyond case, spaces and dashes.
_LABEL_ALIASES = {
    "bot": "Botnet",
    "web attack brute force": "Web Attack - Brute Force",
    "web attack sql injection": "Web Attack - SQL Injection",
    "web attack sqli": "Web Attack - SQL Injection",
    "web attack xss": "Web Attack - XSS",
    "infiltration portscan": "Infiltration - Portscan",
    "infilteration": "Infiltration",
}
ATTEMPTED_SUFFIX = re.compile(r"\s*[-–—]\s*attempted\s*$", re.IGNORECASE)


def _label_key(raw: str) -> str:
    """Case-, space- and dash-insensitive key (en/em dashes, the release's mojibake '\ufffd')."""
    return re.sub(r"[\s\-–—\ufffd]+", " ", raw).strip().lower()


_LABEL_KEYS = {_label_key(c): c for c in CIC_CLASSES} | _LABEL_ALIASES


def normalize_cic_label(raw: str) -> str:
    """The corrected release's spelling of a CIC-IDS2017 label; ``"… - Attempted"`` labels are BENIGN.

    The corrected release's README says attempted attacks (no effect on the victim) are benign traffic.
    Raises ``KeyError`` for a label that is not a CIC-IDS2017 class.
    """
    if ATTEMPTED_SUFFIX.search(raw):
        return CIC_BENIGN
    return _LABEL_KEYS[_label_key(raw)]


# The original release (MachineLearningCVE / TrafficLabelling) -> the corrected release, after stripping
# the leading spaces of the original headers. "Fwd Header Length" appears twice there (pandas reads the
# second as "Fwd Header Length.1"); CICFlowMeter wrote the same value into both.
ORIGINAL_TO_CORRECTED = {
    "Source IP": "Src IP",
    "Source Port": "Src Port",
    "Destination IP": "Dst IP",
    "Destination Port": "Dst Port",
    "Total Fwd Packets": "Total Fwd Packet",
    "Total Backward Packets": "Total Bwd packets",
    "Total Length of Fwd Packets": "Total Length of Fwd Packet",
    "Total Length of Bwd Packets": "Total Length of Bwd Packet",
    "Min Packet Length": "Packet Length Min",
    "Max Packet Length": "Packet Length Max",
    "CWE Flag Count": "CWR Flag Count",
    "Avg Fwd Segment Size": "Fwd Segment Size Avg",
    "Avg Bwd Segment Size": "Bwd Segment Size Avg",
    "Fwd Avg Bytes/Bulk": "Fwd Bytes/Bulk Avg",
    "Fwd Avg Packets/Bulk": "Fwd Packet/Bulk Avg",
    "Fwd Avg Bulk Rate": "Fwd Bulk Rate Avg",
    "Bwd Avg Bytes/Bulk": "Bwd Bytes/Bulk Avg",
    "Bwd Avg Packets/Bulk": "Bwd Packet/Bulk Avg",
    "Bwd Avg Bulk Rate": "Bwd Bulk Rate Avg",
    "Init_Win_bytes_forward": "FWD Init Win Bytes",
    "Init_Win_bytes_backward": "Bwd Init Win Bytes",
    "act_data_pkt_fwd": "Fwd Act Data Pkts",
    "min_seg_size_forward": "Fwd Seg Size Min",
}
_KNOWN = frozenset(CIC_COLUMNS)


@dataclass(frozen=True)
class ColumnMapping:
    """How the header of a CICFlowMeter-style CSV maps onto the corrected release's names.

    ``rename`` maps each recognised header (as spelled in the file) to its corrected name;
    ``duplicates`` are repeated columns to drop (``Fwd Header Length.1``); ``unknown`` are other columns
    (tapwatch's own extras, for example); ``missing_features`` are features of :data:`FEATURE_NAMES`
    that no column provides (the original release lacks five).
    """

    rename: dict[str, str]
    duplicates: tuple[str, ...]
    unknown: tuple[str, ...]
    missing_features: tuple[str, ...]


def map_cic_columns(columns: Iterable[str]) -> ColumnMapping:
    """Map original-release, corrected-release or ``tapwatch flows`` headers to corrected names."""
    rename: dict[str, str] = {}
    duplicates: list[str] = []
    unknown: list[str] = []
    for col in columns:
        name = str(col).strip()
        target = name if name in _KNOWN else ORIGINAL_TO_CORRECTED.get(name)
        base = re.sub(r"\.\d+$", "", name)
        if target is not None and target not in rename.values():
            rename[str(col)] = target
        elif target is not None or (base != name and (base in _KNOWN or base in ORIGINAL_TO_CORRECTED)):
            duplicates.append(str(col))
        else:
            unknown.append(str(col))
    missing = tuple(f for f in FEATURE_NAMES if f not in rename.values())
    return ColumnMapping(rename, tuple(duplicates), tuple(unknown), missing)


def _labels(frame: pd.DataFrame, subject: str) -> tuple[pd.Series, list[str], int]:
    raw = frame["Label"].astype(str)
    mapping: dict[str, str] = {}
    unknown = []
    for value in raw.unique():
        try:
            mapping[value] = normalize_cic_label(value)
        except KeyError:
            unknown.append(value)
    if unknown:
        raise BadInputError(subject, f"unknown labels {sorted(unknown)}; known: {list(CIC_CLASSES)}")
    renamed = {k: v for k, v in mapping.items() if k != v}
    steps = [f"label spellings normalised: {renamed}"] if renamed else []
    attempted = int(raw.map(lambda v: bool(ATTEMPTED_SUFFIX.search(v))).sum())
    if attempted:
        steps.append(f"{attempted} '… - Attempted' rows relabelled BENIGN (the corrected release's advice)")
    return raw.map(mapping), steps, attempted


def load_cic_ids2017(root: Path | None = None, *, quantize: bool = True, dedupe: Dedupe = Dedupe.NONE) -> Dataset:
    """Load the corrected CIC-IDS2017 subset (16 files) with the 82 features in the contract's order.

    Parameters
    ----------
    root
        The folder holding ``cic-ids2017/`` (default ``../shared/datasets``).
    quantize
        Map the µs time features to the sensor's 1 ms resolution and recompute the rates
        (:func:`tapwatch.features.resolution.quantize_columns`); required for the deployment model.
    dedupe
        Which duplicates to drop (always counted).

    Example
    -------
    >>> ds = load_cic_ids2017()  # doctest: +SKIP
    >>> ds.features == FEATURE_NAMES, ds.meta.columns.tolist()  # doctest: +SKIP
    (True, ['Src IP', 'Timestamp', 'End'])
    """
    folder = (root if root is not None else default_root()) / CIC_DIR
    paths = sorted(folder.glob("*.csv.gz")) + sorted(folder.glob("*.csv"))
    if not paths:
        raise BadInputError(str(folder), "no *.csv or *.csv.gz files (is ../shared/datasets present?)")
    expected = expected_digests(folder.parent)
    frames, files = [], []
    for path in paths:
        frame, info = read_table(path, expected)
        check_columns(str(path), frame.columns, CIC_COLUMNS)
        frames.append(frame[list(CIC_COLUMNS)])
        files.append(info)
    frame = pd.concat(frames, ignore_index=True)
    subject = str(folder)
    steps = [f"read {len(files)} files, {len(frame)} rows, {len(CIC_COLUMNS)} columns"]
    y, label_steps, attempted = _labels(frame, subject)
    steps += label_steps
    exact_dup = count_exact_duplicates(frame, row_id="id")
    start = _timestamps(frame, subject)
    end = start + pd.to_timedelta(pd.to_numeric(frame["Flow Duration"], errors="coerce").fillna(0), unit="us")
    meta = pd.DataFrame({"Src IP": frame["Src IP"].astype(str), "Timestamp": start, "End": end})
    steps.append(
        f"dropped identifiers {list(IDENTIFIER_COLUMNS)}; Src IP, Timestamp, End (start + duration) kept as meta"
    )
    steps.append(f"dropped label columns {list(LABEL_COLUMNS)}")
    x, counts, clean_steps = clean_numeric(frame[list(FEATURE_NAMES)], subject)
    steps += clean_steps
    if quantize:
        quantize_columns(x)
        steps.append("time features rounded to the sensor's 1 ms resolution, rates recomputed (quantize_columns)")
    counts |= {"rows_read": len(frame), "attempted_relabelled": attempted}
    parts = Parts("cic-ids2017", x, y, meta, CIC_BENIGN, (), tuple(files), exact_dup, steps, counts)
    return finish(parts, dedupe)


def _timestamps(frame: pd.DataFrame, subject: str) -> pd.Series:
    try:
        return pd.to_datetime(frame["Timestamp"], format="ISO8601")
    except (ValueError, TypeError) as err:
        raise BadInputError(subject, f"column 'Timestamp' is not ISO 8601 ({err})") from err

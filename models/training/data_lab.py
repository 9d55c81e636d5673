"""tapwatch's own flows: the lab corpus, alone or beside CIC-IDS2017, labelled by family.

The lab corpus (``python -m lab.corpus build``) is ``flows.csv.gz``: one row per flow that ``tapwatch flows``
wrote from the lab's packets, with its ``unit`` (scenario, seed, link profile), ``episode_id`` and ``family``.
Training on it gives the model the sensor's own features (train/serve parity) and benign traffic of many kinds.

* :func:`load_lab` reads one or more corpora. Classes are the families an alert is named by
  (:class:`~tapwatch.features.families.Family`). Flows of one packet are left out: the sensor never scores them
  (a spoofed flood's one-packet flows reach the volume view instead). ``Src IP`` is prefixed with the unit, so
  a window never joins two runs; ``Emitted`` is the row's place in its run's ``flows.csv``, the order in which
  the sensor handed the flows to the windows.
* :func:`load_cic_lab` joins the CIC-IDS2017 subset (classes mapped to families, ``Emitted`` by flow end) with
  the training corpora and, as test rows, held-out corpora.
* :func:`episode_split` and :func:`cic_lab_split` split them: lab validation takes whole episodes (grouped across
  the link profiles of one scenario and seed, which replay the same schedule), CIC rows keep their time split.

>>> sorted(LAB_CLASSES)[:2], LAB_BENIGN
(['benign', 'botnet'], 'benign')
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import BadInputError
from tapwatch.features.families import Family, family_of_class
from tapwatch.models.training.data_cic import load_cic_ids2017
from tapwatch.models.training.data_common import Dataset, Dedupe, FileInfo, Parts, clean_numeric, finish, read_table
from tapwatch.models.training.data_split import Split, time_split

LAB_BENIGN = Family.BENIGN.value
LAB_CLASSES: tuple[str, ...] = tuple(f.value for f in Family)
LAB_META = ("unit", "scenario", "seed", "link_profile", "episode_id")
DEFAULT_CORPUS = Path("lab") / "corpus"
TRAIN, TEST = "train", "test"


Rows = tuple[pd.DataFrame, pd.Series, pd.DataFrame]
"""Features, classes and meta of some rows."""


def _read_corpus(corpus: Path) -> tuple[pd.DataFrame, FileInfo]:
    path = corpus / "flows.csv.gz" if corpus.is_dir() else corpus
    if not path.exists():
        raise BadInputError(str(corpus), "no lab corpus here (build one with: python -m lab.corpus build)")
    frame, info = read_table(path, {})
    needed = [*FEATURE_NAMES, "Src IP", "first_seen_ms", "last_seen_ms", "packets", "family", *LAB_META]
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise BadInputError(str(path), f"missing columns {missing} (not a lab corpus dataset?)")
    unknown = sorted(set(frame["family"].astype(str)) - set(LAB_CLASSES))
    if unknown:
        raise BadInputError(str(path), f"unknown families {unknown}; known: {list(LAB_CLASSES)}")
    return frame, FileInfo(f"{corpus.name}/{info.name}", info.rows, info.sha256, None)


def _lab_rows(frame: pd.DataFrame, role: str, offset: int) -> Rows:
    """Features, classes and meta of one corpus's scored flows (two packets or more)."""
    scored = (pd.to_numeric(frame["packets"], errors="coerce").fillna(0) >= 2).to_numpy()
    position = np.flatnonzero(scored)
    frame = frame[scored]
    x, _counts, _steps = clean_numeric(frame[list(FEATURE_NAMES)], "lab corpus")
    unit = frame["unit"].astype(str)
    meta = pd.DataFrame(
        {
            "Src IP": unit + "|" + frame["Src IP"].astype(str),
            "Timestamp": pd.to_datetime(frame["first_seen_ms"], unit="ms"),
            "End": pd.to_datetime(frame["last_seen_ms"], unit="ms"),
            "Emitted": offset + position.astype(np.int64),
            "source": "lab",
            "role": role,
            **{c: frame[c].astype(str) for c in LAB_META},
        }
    )
    return x, frame["family"].astype(str), meta


def _lab_parts(corpora: Sequence[Path], role: str, offset: int = 0) -> tuple[list[Rows], list[FileInfo], int]:
    pieces, files, dropped = [], [], 0
    for corpus in corpora:
        frame, info = _read_corpus(Path(corpus))
        x, y, meta = _lab_rows(frame, role, offset)
        dropped += len(frame) - len(x)
        offset += len(frame)
        pieces.append((x, y, meta))
        files.append(info)
    return pieces, files, dropped


def _join(pieces: Sequence[Rows]) -> Rows:
    x = pd.concat([p[0] for p in pieces], ignore_index=True)
    y = pd.concat([p[1] for p in pieces], ignore_index=True)
    meta = pd.concat([p[2] for p in pieces], ignore_index=True)
    return x, y, meta


def load_lab(corpora: Sequence[Path] = (DEFAULT_CORPUS,), test_corpora: Sequence[Path] = ()) -> Dataset:
    """The flows of the lab corpora (``meta["role"]``: ``train``, or ``test`` for ``test_corpora``)."""
    if not corpora:
        raise BadInputError("lab corpus", "no corpus given")
    train, files, dropped = _lab_parts(corpora, TRAIN)
    test, test_files, test_dropped = _lab_parts(test_corpora, TEST, offset=10**12)
    x, y, meta = _join([*train, *test])
    steps = [
        f"read {len(files) + len(test_files)} lab corpora ({len(test_files)} held out for test), {len(x)} flows kept",
        f"left out {dropped + test_dropped} flows of one packet (the sensor does not score them)",
        "classes are families; Src IP prefixed with the unit; Emitted = order in the run's flows.csv",
    ]
    parts = Parts("lab", x, y, meta, LAB_BENIGN, (), (*files, *test_files), pd.Series(False, index=x.index), steps,
                  {"one_packet_flows_dropped": dropped + test_dropped})  # fmt: skip
    return finish(parts, Dedupe.NONE)


def cic_as_families(ds: Dataset) -> Dataset:
    """The CIC-IDS2017 dataset with each class replaced by its family and the lab's meta columns."""
    mapping = {c: family_of_class(c) for c in ds.y.unique()}
    unknown = sorted(c for c, f in mapping.items() if f is None)
    if unknown:
        raise BadInputError(ds.name, f"classes {unknown} belong to no family")
    y = ds.y.map({c: f.value for c, f in mapping.items() if f is not None})
    meta = ds.meta.copy()
    end = meta["End"].to_numpy().astype("datetime64[us]").astype(np.int64)
    meta["Emitted"] = np.argsort(np.argsort(end, kind="stable"), kind="stable").astype(np.int64)
    meta["source"], meta["role"] = "cic", TRAIN
    for col in LAB_META:
        meta[col] = "cic-ids2017" if col in ("unit", "scenario") else ""
    steps = (*ds.steps, f"CIC classes mapped to families: { {c: f.value for c, f in mapping.items() if f} }")
    return Dataset(ds.name, ds.X, y, (y != LAB_BENIGN).to_numpy(np.int64), meta, ds.features, LAB_BENIGN,
                   ds.encodings, ds.files, steps, dict(ds.counts))  # fmt: skip


def load_cic_lab(root: Path | None = None, corpora: Sequence[Path] = (DEFAULT_CORPUS,),
                 test_corpora: Sequence[Path] = ()) -> Dataset:  # fmt: skip
    """CIC-IDS2017 (as families) followed by the lab corpora: one dataset, one feature order, one class set."""
    cic = cic_as_families(load_cic_ids2017(root))
    lab = load_lab(corpora, test_corpora)
    lab_meta = lab.meta.assign(Emitted=lab.meta["Emitted"] + len(cic.y))
    x = pd.concat([cic.X, lab.X], ignore_index=True)
    y = pd.concat([cic.y, lab.y], ignore_index=True)
    meta = pd.concat([cic.meta, lab_meta], ignore_index=True)
    steps = (*cic.steps, *lab.steps, f"joined: {len(cic.y)} CIC rows, {len(lab.y)} lab rows")
    return Dataset("cic-ids2017+lab", x, y, (y != LAB_BENIGN).to_numpy(np.int64), meta, cic.features, LAB_BENIGN,
                   (), (*cic.files, *lab.files), steps, {**cic.counts, **lab.counts})  # fmt: skip


def episode_groups(meta: pd.DataFrame) -> pd.Series:
    """One key per episode across the link profiles of a scenario and seed (they replay the same schedule)."""
    return meta["scenario"].astype(str) + "-s" + meta["seed"].astype(str) + "/" + meta["episode_id"].astype(str)


def draw_episodes(keys: pd.Series, families: pd.Series, share: float, seed: int, by_rows: bool = False) -> set[str]:
    """Per family, ``share`` of its episodes (at least one when it has two, never all of them).

    ``by_rows``: episodes are drawn until they hold ``share`` of the family's rows instead (benign episodes are a
    client's whole day, a few of them big, so a count would leave the validation's benign part to chance).
    """
    if not 0 < share < 1:
        raise BadInputError("share", f"must be between 0 and 1, got {share}")
    rng = random.Random(seed)
    drawn: set[str] = set()
    for _family, group in sorted(pd.DataFrame({"k": keys, "f": families}).groupby("f")["k"]):
        sizes = group.value_counts()
        found = sorted(sizes.index)
        rng.shuffle(found)
        if by_rows:
            taken = np.cumsum([sizes[k] for k in found])
            count = int(np.searchsorted(taken, share * taken[-1])) + 1
        else:
            count = round(len(found) * share)
        count = min(max(count, 1), len(found) - 1) if len(found) >= 2 else 0
        drawn.update(found[:count])
    return drawn


def episode_split(ds: Dataset, rows: np.ndarray, val_share: float = 0.15, seed: int = 0) -> tuple[np.ndarray, ...]:
    """Training lab ``rows`` as (train, val): whole episode groups go to validation, drawn per family."""
    meta = ds.meta.iloc[rows]
    keys = episode_groups(meta)
    val = draw_episodes(keys, ds.y.iloc[rows], val_share, seed, by_rows=True)
    in_val = keys.isin(val).to_numpy()
    return rows[~in_val], rows[in_val]


def cic_lab_split(ds: Dataset, deploy: bool = False, seed: int = 0) -> Split:
    """CIC rows by the time split (``deploy``: its test part trains too); lab training rows by episode; the
    held-out corpora (``role == "test"``) test."""
    source, role = ds.meta["source"].to_numpy(), ds.meta["role"].to_numpy()
    cic_rows = np.flatnonzero(source == "cic")
    notes: list[str] = []
    c_train, c_val, c_test = (np.zeros(0, np.int64),) * 3
    if len(cic_rows):
        sub = _subset(ds, cic_rows)
        cs = time_split(sub, seed=seed)
        c_train, c_val, c_test = (cic_rows[p] for p in (cs.train, cs.val, cs.test))
        if deploy:
            c_train, c_test = np.concatenate([c_train, c_test]), c_test[:0]
        notes += [f"CIC: {n}" for n in cs.notes] + (["CIC: the time split's test part trains too"] if deploy else [])
    l_train, l_val = episode_split(ds, np.flatnonzero((source == "lab") & (role == TRAIN)), seed=seed)
    l_test = np.flatnonzero((source == "lab") & (role == TEST))
    notes.append(
        f"lab: validation = {len(set(episode_groups(ds.meta.iloc[l_val])))} whole episodes (about 15% of each "
        f"family's flows, grouped across profiles); test = {len(l_test)} flows of held-out corpora"
    )
    name = "cic-lab-deploy" if deploy else "cic-lab"
    return Split(name, np.concatenate([c_train, l_train]), np.concatenate([c_val, l_val]),
                 np.concatenate([c_test, l_test]), tuple(notes))  # fmt: skip


def _subset(ds: Dataset, rows: np.ndarray) -> Dataset:
    def pick(frame: Any) -> Any:
        return frame.iloc[rows].reset_index(drop=True)

    return Dataset(ds.name, pick(ds.X), pick(ds.y), ds.y_binary[rows], pick(ds.meta), ds.features, ds.benign_class)

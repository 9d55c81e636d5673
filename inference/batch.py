"""Turn a batch of stream entries into verdicts and dead letters (pure functions, no I/O).

:func:`triage` decodes every entry and checks it against the serving model: a window must follow a known
schema version, have the model's feature-set id and shape (T, F), and hold finite numbers. What fails goes
to the dead-letter stream with a :class:`DeadReason`. :func:`decide` turns the model's probabilities
into :class:`~tapwatch.features.schema.Verdict` records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from tapwatch.bus.entries import MAX_ENTRY_BYTES, oversized
from tapwatch.bus.streams import Entry
from tapwatch.features.errors import SchemaError
from tapwatch.features.schema import Verdict, WindowEntry
from tapwatch.inference.model import Model, Probabilities

NON_FINITE_DETAIL = "NaN or infinity in the window"


class DeadReason(str, Enum):
    """Why an entry was dead-lettered (a closed set: it is a metric label)."""

    TOO_LARGE = "too_large"
    """Over the worker's ``max_entry_bytes``: refused before anything of it was parsed."""
    MISSING_FIELD = "missing_field"
    """A field of the window schema is absent."""
    VERSION = "version"
    """Unknown window schema version."""
    DTYPE = "dtype"
    """The tensor is not float32."""
    SHAPE = "shape"
    """The tensor bytes do not match the stated shape, or the shape is not the model's (T, F)."""
    FLOW_META = "flow_meta"
    """The newest flow's metadata is not valid JSON of the FlowMeta schema."""
    FEATURE_SET = "feature_set"
    """Built for another feature set (order, units, resolution or T) than the serving model's."""
    NON_FINITE = "non_finite"
    """NaN or infinity in the window, or in the model's output for it."""
    MALFORMED = "malformed"
    """Anything else that cannot be parsed (for example field names or values that are not UTF-8)."""

    @classmethod
    def of(cls, err: SchemaError) -> DeadReason:
        """The reason for a schema error; reasons this worker does not know become ``malformed``.

        >>> DeadReason.of(SchemaError("window", "version", "v9")).value
        'version'
        >>> DeadReason.of(SchemaError("window", "something_new", "")).value
        'malformed'
        """
        try:
            return cls(err.reason)
        except ValueError:
            return cls.MALFORMED


@dataclass(frozen=True)
class Accepted:
    """A window that passed every check, with its stream entry id and original fields."""

    entry_id: str
    window: WindowEntry
    fields: dict[str, bytes]


@dataclass(frozen=True)
class Dead:
    """An entry to dead-letter: its id, original fields, reason and a line of detail."""

    entry_id: str
    fields: dict[str, bytes]
    reason: DeadReason
    detail: str


@dataclass(frozen=True)
class Origin:
    """Where dead letters came from, recorded in each of them."""

    stream: str
    group: str
    consumer: str


def check_window(fields: dict[str, bytes], model: Model) -> WindowEntry:
    """Decode one entry and check its schema, feature set and shape against ``model``; raise
    :class:`SchemaError` with the reason (finiteness is checked on the stacked batch by :func:`triage`)."""
    try:
        window = WindowEntry.decode(fields)
    except UnicodeDecodeError as err:  # decode() lets non-UTF-8 text fields through as this
        raise SchemaError("window", DeadReason.MALFORMED.value, f"not UTF-8: {err}") from err
    if window.feature_set_id != model.card.feature_set_id:
        detail = f"feature set {window.feature_set_id!r}, model {model.card.name} has {model.card.feature_set_id!r}"
        raise SchemaError("window", DeadReason.FEATURE_SET.value, detail)
    if window.tensor.shape != model.window_shape:
        raise SchemaError("window", DeadReason.SHAPE.value, f"shape {window.tensor.shape}, model {model.window_shape}")
    return window


def triage(
    entries: Sequence[Entry], model: Model, max_entry_bytes: int = MAX_ENTRY_BYTES
) -> tuple[list[Accepted], list[Dead], np.ndarray[Any, np.dtype[np.float32]] | None]:
    """Split entries into windows the model can take and dead letters, and stack the model input.

    An entry over ``max_entry_bytes`` is dead-lettered before anything of it is parsed.
    The NaN/infinity check runs once on the stacked batch, so windows with NaN or infinity come last among
    the dead letters. The model input is None when no window is accepted.
    """
    accepted: list[Accepted] = []
    dead: list[Dead] = []
    for entry_id, fields in entries:
        if (size := oversized(fields, max_entry_bytes)) is not None:
            detail = f"{size} bytes, over max_entry_bytes {max_entry_bytes}"
            dead.append(Dead(entry_id, fields, DeadReason.TOO_LARGE, detail))
            continue
        try:
            accepted.append(Accepted(entry_id, check_window(fields, model), fields))
        except SchemaError as err:
            dead.append(Dead(entry_id, fields, DeadReason.of(err), err.detail))
    if not accepted:
        return accepted, dead, None
    stacked = np.stack([a.window.tensor for a in accepted])
    batch: np.ndarray[Any, np.dtype[np.float32]] = stacked.astype(np.float32, copy=False)
    finite = np.asarray(np.isfinite(batch).all(axis=(1, 2)), dtype=bool)
    if not finite.all():
        dead += [Dead(a.entry_id, a.fields, DeadReason.NON_FINITE, NON_FINITE_DETAIL)
                 for a, ok in zip(accepted, finite, strict=True) if not ok]  # fmt: skip
        accepted = [a for a, ok in zip(accepted, finite, strict=True) if ok]
        batch = batch[finite]
    return accepted, dead, (batch if accepted else None)


def decide(
    model: Model,
    accepted: Sequence[Accepted],
    probs: Probabilities,
    now_ms: int,
    novelty: Sequence[float] | None = None,
) -> tuple[list[Verdict], list[Dead]]:
    """One verdict per window; a window whose output row is not finite becomes a dead letter instead.

    The attack score is ``1 - P(benign)``; windows scoring at or over the card's threshold carry their
    tensor so the alerter can explain them without another look-up. ``novelty``: each window's novelty ratio
    under the site profile (:mod:`tapwatch.inference.profiled`), carried by its verdict.
    """
    card = model.card
    classes = tuple(card.class_names)
    scores = np.clip(1.0 - probs[:, model.benign_index].astype(np.float64), 0.0, 1.0)
    best = probs.argmax(axis=1)
    finite = [bool(ok) for ok in np.asarray(np.isfinite(probs).all(axis=1))]
    rows: list[list[float]] = probs.astype(np.float64).tolist()
    verdicts: list[Verdict] = []
    dead: list[Dead] = []
    for i, item in enumerate(accepted):
        w = item.window
        if not finite[i]:
            dead.append(Dead(item.entry_id, item.fields, DeadReason.NON_FINITE, "model output not finite"))
            continue
        over = bool(scores[i] >= model.threshold)
        verdicts.append(Verdict(
            window_id=item.entry_id, sensor=w.sensor, key=w.key, flow=w.flow, model=card.name,
            model_version=card.version, class_names=classes, probabilities=tuple(rows[i]),
            predicted=classes[int(best[i])], score=float(scores[i]), threshold=model.threshold,
            feature_set_id=w.feature_set_id, decided_at_ms=now_ms, tensor=w.tensor if over else None,
            valid_rows=w.valid_rows, novelty=novelty[i] if novelty is not None else None,
        ))  # fmt: skip
    return verdicts, dead


def dead_letter(dead: Dead, origin: Origin, now_ms: int) -> dict[str, str | bytes]:
    """The dead-letter entry: the original fields (not of one too large: it would fill the dead-letter stream in its
    turn) plus ``dead_*`` fields saying why and from where."""
    out: dict[str, str | bytes] = {} if dead.reason is DeadReason.TOO_LARGE else dict(dead.fields)
    out.update({
        "dead_reason": dead.reason.value, "dead_detail": dead.detail[:500], "dead_entry_id": dead.entry_id,
        "dead_stream": origin.stream, "dead_group": origin.group, "dead_consumer": origin.consumer,
        "dead_at_ms": str(now_ms),
    })  # fmt: skip
    return out

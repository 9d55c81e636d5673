"""Versioned records handed between stages: :class:`FlowRecord` and :class:`WindowEntry`.

A reader rejects a version it does not know with :class:`~tapwatch.features.errors.SchemaError`.
Window entries travel on the bus as flat string/bytes maps (Redis stream fields); the window tensor is
raw little-endian float32 bytes, never JSON numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from enum import Enum
from typing import Any

import numpy as np

from tapwatch.features.contract import FEATURE_NAMES, feature_index
from tapwatch.features.errors import SchemaError
from tapwatch.features.fieldcheck import (
    COUNT,
    PORT,
    STREAM_ID,
    TEXT,
    TIME,
    _classes_json,
    check_value,
    classes_and_probs,
    integer,
    load_json,
    number,
    verdict_tensor,
)

_Bytes = bytes  # FlowMeta has a field named "bytes"

FLOW_SCHEMA_VERSION = 1
WINDOW_SCHEMA_VERSION = 1


class ExpiryReason(str, Enum):
    """Why a flow was closed (a closed set: it is a metric label)."""

    TCP_FIN = "fin"
    """Both sides sent FIN and the last one was acknowledged (CICFlowMeter READY_FOR_TERMINATION)."""
    TCP_RST = "rst"
    """A RST was seen (CICFlowMeter READY_FOR_TERMINATION)."""
    FLOW_TIMEOUT = "flow_timeout"
    """A packet arrived more than the flow timeout (120 s) after the flow's first packet."""
    IDLE = "idle"
    """No packet for the idle timeout; emitted on the capture clock or, live, on the wall clock."""
    ICMP_CHANGE = "icmp_change"
    """An ICMP packet whose type and code both differ from the flow's started a new flow."""
    END_OF_CAPTURE = "end_of_capture"
    """The pcap input ended and every remaining flow was flushed."""
    SHUTDOWN = "shutdown"
    """Live capture stopped and every remaining flow was flushed."""


@dataclass(frozen=True)
class FlowMeta:
    """The identifying part of a flow, copied into windows, verdicts and alerts.

    Times are epoch milliseconds (the sensor's resolution); ``packets`` and ``bytes`` count both
    directions at the link layer (whole frames), as Suricata's and Zeek's flow records do.
    ``expired_at_ms`` is the wall-clock time at which the sensor closed the flow, the start of the
    latency budget to an alert.
    """

    flow_id: int
    community_id: str
    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    protocol: int
    first_seen_ms: int
    last_seen_ms: int
    packets: int
    bytes: int
    expiry: ExpiryReason
    expired_at_ms: int
    sensor: str

    def to_json(self) -> str:
        """Compact JSON; the text a record was decoded from is reused (a verdict copies its window's flow)."""
        cached: str | None = self.__dict__.get("_json")
        if cached is not None:
            return cached
        # Built field by field: dataclasses.asdict deep-copies and cost a fifth of a worker's time.
        d = {name: getattr(self, name) for name in _META_FIELDS}
        d["expiry"] = self.expiry.value
        text = json.dumps(d, separators=(",", ":"))
        object.__setattr__(self, "_json", text)
        return text

    @classmethod
    def from_json(cls, text: str | _Bytes) -> FlowMeta:
        try:
            d = json.loads(text)
            d["expiry"] = ExpiryReason(d["expiry"])
            meta = cls(**d)
        except (ValueError, TypeError, KeyError) as err:
            raise SchemaError("window", "flow_meta", str(err)) from err
        # Only a JSON object of exactly these fields gets here; its text is what to_json would say.
        object.__setattr__(meta, "_json", text.decode() if isinstance(text, _Bytes) else text)
        return meta

    @classmethod
    def checked(cls, text: str | _Bytes, record: str) -> FlowMeta:
        """:meth:`from_json` for a reader that acts on the flow (the alerter): every field's type and range is
        checked (:class:`SchemaError` with reason ``dtype``, ``value``, ``non_finite``, ``truncated``,
        ``missing_field`` or ``flow_meta``), and keys it does not know are ignored.

        >>> FlowMeta.checked('{"flow_id": 1, "community_id": "1:x=", "src_ip": "10.0.0.1", "src_port": 1, "dst_ip": '
        ...     '"::1", "dst_port": 80, "protocol": 6, "first_seen_ms": 0, "last_seen_ms": 5, "packets": 2, "bytes": '
        ...     '120, "expiry": "fin", "expired_at_ms": 6, "sensor": "s", "new": 1}', "verdict").dst_port
        80
        """
        d = load_json(text, record, "flow")
        if not isinstance(d, dict):
            raise SchemaError(record, "dtype", "flow is not a JSON object")
        for name in _META_FIELDS:
            if name not in d:
                raise SchemaError(record, "missing_field", f"flow field {name!r} is missing")
            check_value(record, f"flow.{name}", d[name], *_META_CHECKS[name])
        try:
            expiry = ExpiryReason(d["expiry"])
        except ValueError as err:
            raise SchemaError(record, "value", f"flow.expiry {str(d['expiry'])[:40]!r} is no expiry reason") from err
        meta = cls(**{**{name: d[name] for name in _META_FIELDS}, "expiry": expiry})
        if len(d) == len(_META_FIELDS):  # exactly these fields: the text is what to_json would say
            object.__setattr__(meta, "_json", text.decode() if isinstance(text, _Bytes) else text)
        return meta


_META_FIELDS = tuple(f.name for f in fields(FlowMeta))
_META_CHECKS: dict[str, tuple[type, float, float]] = {
    "flow_id": COUNT, "community_id": TEXT, "src_ip": TEXT, "src_port": PORT, "dst_ip": TEXT, "dst_port": PORT,
    "protocol": (int, 0, 255), "first_seen_ms": TIME, "last_seen_ms": TIME, "packets": COUNT, "bytes": COUNT,
    "expiry": TEXT, "expired_at_ms": TIME, "sensor": TEXT,
}  # fmt: skip
"""Type, lowest and highest value (for text: length) of each FlowMeta field, as a reader checks them."""


@dataclass(frozen=True)
class FlowRecord:
    """A finished flow: its identity and its feature values in :data:`FEATURE_NAMES` order.

    Parameters
    ----------
    meta
        5-tuple, Community ID, times, expiry reason, sensor.
    values
        One value per feature of the contract, in contract order.

    Example
    -------
    >>> rec = FlowRecord(meta=None, values=tuple(float(i) for i in range(82)))  # type: ignore[arg-type]
    >>> rec.feature("Flow Duration")
    1.0
    """

    meta: FlowMeta
    values: tuple[float, ...]
    version: int = field(default=FLOW_SCHEMA_VERSION)

    def feature(self, name: str) -> float:
        return self.values[feature_index(name)]

    def features(self) -> dict[str, float]:
        return dict(zip(FEATURE_NAMES, self.values, strict=True))


def make_flow_id(sensor: str, community_id: str, first_seen_ms: int, seq: int) -> int:
    """A 63-bit flow id (Suricata's ``flow_id`` is a signed 64-bit integer), stable for the same input.

    >>> make_flow_id("s", "1:abc", 1, 2) == make_flow_id("s", "1:abc", 1, 2)
    True
    """
    digest = hashlib.blake2b(f"{sensor}|{community_id}|{first_seen_ms}|{seq}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 63) - 1)


class Encoded(dict[str, Any]):
    """An entry's fields as ``encode()`` made them, carrying the object they encode.

    The in-process bus (:class:`~tapwatch.bus.streams.MemoryBus`, ``detect`` and ``run``) keeps the object with the
    fields it stores, and ``decode()`` then returns that object instead of parsing and checking again what this
    process itself wrote a moment before (a third of ``detect``'s reading time). A Redis bus sends the fields
    only, so whatever comes from a server or another process is parsed and checked in full. Readers still run
    their own checks of what they act on (the worker: feature set, shape, finiteness).

    Changing a field forgets the object: the fields are then what a reader parses and checks.

    >>> e = Encoded({"a": "1"}, obj=42)
    >>> e, e.obj, Encoded.object_of(e, int), Encoded.object_of({"a": "1"}, int)
    ({'a': '1'}, 42, 42, None)
    >>> e["a"] = "2"
    >>> Encoded.object_of(e, int) is None
    True
    """

    __slots__ = ("obj",)

    def __init__(self, fields: Mapping[str, Any], obj: Any) -> None:
        super().__init__(fields)
        self.obj = obj

    def _changed(self) -> None:
        self.obj = None

    def __setitem__(self, key: str, value: Any) -> None:
        self._changed()
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self._changed()
        super().__delitem__(key)

    def __ior__(self, other: Any) -> Encoded:  # type: ignore[override,misc]
        self._changed()
        return super().__ior__(other)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._changed()
        super().update(*args, **kwargs)

    def pop(self, *args: Any) -> Any:
        self._changed()
        return super().pop(*args)

    def popitem(self) -> tuple[str, Any]:
        self._changed()
        return super().popitem()

    def setdefault(self, key: str, default: Any = None) -> Any:
        self._changed()
        return super().setdefault(key, default)

    def clear(self) -> None:
        self._changed()
        super().clear()

    @staticmethod
    def object_of(fields: Mapping[Any, Any], cls: type[Any]) -> Any:
        """The object ``fields`` were encoded from when they carry one of type ``cls``, else None."""
        if type(fields) is Encoded and type(fields.obj) is cls:
            return fields.obj
        return None


class _Fields:
    """A field map read from the bus, with the checks shared by every record's ``decode``."""

    def __init__(self, record: str, fields: Mapping[Any, Any]) -> None:
        self.record = record
        # The buses hand over str keys already (RedisBus decodes them once per entry): no copy then.
        if all(type(k) is str for k in fields):
            self.f: Mapping[str, Any] = fields
        else:
            self.f = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.f

    def text(self, name: str) -> str:
        if name not in self.f:
            raise SchemaError(self.record, "missing_field", f"field {name!r} is missing")
        v = self.f[name]
        try:
            return v.decode() if isinstance(v, bytes) else str(v)
        except UnicodeDecodeError as err:
            raise SchemaError(self.record, "malformed", f"field {name!r} is not UTF-8") from err

    def tensor(self) -> tuple[np.ndarray[Any, np.dtype[np.float32]], int]:
        """The (T, F) float32 tensor and its number of valid rows, checked against ``shape`` and ``valid``."""
        try:
            shape = tuple(int(n) for n in self.text("shape").split(","))
            valid = int(self.text("valid"))
        except ValueError as err:
            raise SchemaError(self.record, "shape", str(err)) from err
        raw = self.f.get("tensor", b"")
        raw = raw if isinstance(raw, bytes) else str(raw).encode()
        if len(shape) != 2 or shape[0] * shape[1] * 4 != len(raw) or not 0 <= valid <= shape[0]:
            raise SchemaError(self.record, "shape", f"shape {shape} does not match {len(raw)} tensor bytes")
        return np.frombuffer(raw, dtype="<f4").reshape(shape), valid


def _tensor_fields(tensor: np.ndarray[Any, Any], valid_rows: int) -> dict[str, str | bytes]:
    t = np.ascontiguousarray(tensor, dtype="<f4")
    return {"shape": ",".join(str(n) for n in t.shape), "valid": str(valid_rows), "tensor": t.tobytes()}


@dataclass(frozen=True)
class WindowEntry:
    """The last T flows of one key, ready for a model, as it travels on ``tapwatch:windows``.

    Parameters
    ----------
    sensor
        The sensor that built it.
    key
        The window key (the source host by default).
    flow
        Metadata of the newest flow (enough to write an alert with no other look-up).
    tensor
        float32 array of shape (T, F), scaled with the model card's scaler, left-padded with zeros.
    valid_rows
        How many of the T rows hold real flows (the last ``valid_rows`` ones).
    feature_set_id
        :func:`tapwatch.features.contract.feature_set_id` of the model the window was built for.
    """

    sensor: str
    key: str
    flow: FlowMeta
    tensor: np.ndarray[Any, np.dtype[np.float32]]
    valid_rows: int
    feature_set_id: str
    version: int = WINDOW_SCHEMA_VERSION

    def encode(self) -> dict[str, str | bytes]:
        """Flat field map for XADD; the tensor as raw little-endian float32 bytes."""
        fields = {
            "v": str(self.version),
            "sensor": self.sensor,
            "key": self.key,
            "flow": self.flow.to_json(),
            "dtype": "float32",
            "fsid": self.feature_set_id,
            **_tensor_fields(self.tensor, self.valid_rows),
        }
        return Encoded(fields, self)

    @classmethod
    def decode(cls, fields: Mapping[Any, Any]) -> WindowEntry:
        """Parse a field map read from the bus; raises :class:`SchemaError` with a closed-set reason."""
        if (own := Encoded.object_of(fields, cls)) is not None:
            return own  # type: ignore[no-any-return]
        f = _Fields("window", fields)
        text = f.text
        version = text("v")
        if version != str(WINDOW_SCHEMA_VERSION):
            raise SchemaError("window", "version", f"unknown window schema version {version!r}")
        if text("dtype") != "float32":
            raise SchemaError("window", "dtype", f"unsupported dtype {text('dtype')!r}")
        tensor, valid = f.tensor()
        return cls(
            sensor=text("sensor"),
            key=text("key"),
            flow=FlowMeta.from_json(text("flow")),
            tensor=tensor,
            valid_rows=valid,
            feature_set_id=text("fsid"),
        )


VERDICT_SCHEMA_VERSION = 1
ALERT_ENTRY_VERSION = 1
"""Version of an entry of ``tapwatch:alerts`` (fields ``v``, ``eve``: the EVE line, and ``signature_id``, ``severity``,
``window_id``); a reader takes one without ``v`` (an older alerter's) as version 1 and refuses any other."""


@dataclass(frozen=True)
class Verdict:
    """A model's decision on one window, as it travels on ``tapwatch:verdicts``.

    Parameters
    ----------
    window_id
        The window's stream entry id (the alerter's idempotency key).
    sensor, key, flow
        Copied from the window: the newest flow's metadata is enough to write an alert.
    model, model_version
        Name and version from the model card.
    class_names, probabilities
        The model's classes and their probabilities, in the card's order.
    predicted
        The most probable class.
    score
        The attack score, 1 - P(benign class).
    threshold
        The card's decision threshold on ``score``.
    feature_set_id
        The window's (and the model's) feature-set id.
    decided_at_ms
        Wall-clock time of the decision.
    tensor, valid_rows
        The window, carried only when ``score >= threshold`` so the alerter can explain it.
    novelty
        How unlike the site's benign windows this one is: the site profile's novelty model's reconstruction error
        over its threshold (None: the worker had no novelty model). An optional field: verdicts without it decode.
    """

    window_id: str
    sensor: str
    key: str
    flow: FlowMeta
    model: str
    model_version: str
    class_names: tuple[str, ...]
    probabilities: tuple[float, ...]
    predicted: str
    score: float
    threshold: float
    feature_set_id: str
    decided_at_ms: int
    tensor: np.ndarray[Any, np.dtype[np.float32]] | None = None
    valid_rows: int = 0
    version: int = VERDICT_SCHEMA_VERSION
    novelty: float | None = None

    @property
    def over_threshold(self) -> bool:
        return self.score >= self.threshold

    def encode(self) -> dict[str, str | bytes]:
        out: dict[str, str | bytes] = {
            "v": str(self.version),
            "window_id": self.window_id,
            "sensor": self.sensor,
            "key": self.key,
            "flow": self.flow.to_json(),
            "model": self.model,
            "model_version": self.model_version,
            "classes": _classes_json(self.class_names),
            "probs": json.dumps([round(float(p), 7) for p in self.probabilities]),
            "predicted": self.predicted,
            "score": repr(float(self.score)),
            "threshold": repr(float(self.threshold)),
            "fsid": self.feature_set_id,
            "at": str(self.decided_at_ms),
        }
        if self.tensor is not None:
            out.update(_tensor_fields(self.tensor, self.valid_rows))
        if self.novelty is not None:
            out["novelty"] = repr(float(self.novelty))
        return Encoded(out, self)

    @classmethod
    def decode(cls, fields: Mapping[Any, Any]) -> Verdict:
        """Parse a field map read from the bus; raises :class:`SchemaError` with a closed-set reason.

        Every field is checked for its type and range (the alerter acts on them: a wrong one must be refused here,
        not fail later); fields this version does not know are ignored, as Suricata's and Zeek's readers ignore
        unknown keys.
        """
        if (own := Encoded.object_of(fields, cls)) is not None:
            return own  # type: ignore[no-any-return]
        f = _Fields("verdict", fields)
        text = f.text
        if text("v") != str(VERDICT_SCHEMA_VERSION):
            raise SchemaError("verdict", "version", f"unknown verdict schema version {text('v')[:40]!r}")
        window_id = text("window_id")
        if not STREAM_ID.fullmatch(window_id):
            raise SchemaError("verdict", "value", f"window_id is no stream entry id ({len(window_id)} characters)")
        names = {n: text(n) for n in ("sensor", "key", "model", "model_version", "predicted", "fsid")}
        for name, value in names.items():
            check_value("verdict", name, value, *TEXT)
        classes, probs = classes_and_probs(text("classes"), text("probs"), names["predicted"])
        score, threshold = number(text, "score", 0.0, 1.0), number(text, "threshold", 0.0, 1.0)
        novelty = number(text, "novelty", 0.0, math.inf) if "novelty" in f else None
        at = integer(text, "at", *TIME[1:])
        tensor, valid = verdict_tensor(f) if "tensor" in f else (None, 0)
        return cls(
            window_id=window_id, sensor=names["sensor"], key=names["key"],
            flow=FlowMeta.checked(text("flow"), "verdict"), model=names["model"], model_version=names["model_version"],
            class_names=classes, probabilities=probs, predicted=names["predicted"], score=score, threshold=threshold,
            feature_set_id=names["fsid"], decided_at_ms=at, tensor=tensor, valid_rows=valid, novelty=novelty,
        )  # fmt: skip

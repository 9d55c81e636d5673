"""The feature contract: the one ordered list of model input features, their units and CIC rules.

The default feature set is that of the corrected CIC-IDS2017 release (Engelen et al., CNS 2022), with the
column names of ``../shared/datasets/cic-ids2017``; identifiers (flow id, IPs, ports, timestamp) are not
features. Every feature is defined here once; the sensor (:mod:`tapwatch.capture.cicflow`), the training
code and the model card all read this list, and :func:`feature_set_id` hashes it so that a window is never
fed to a model built for another feature order, unit or time resolution.

"fwd" is the direction of the flow's first packet (CICFlowMeter reverses it when the first packet is a
SYN-ACK). Packet lengths are transport payload bytes (TCP/UDP payload from the IP total length, so
Ethernet padding is never counted; 0 for ICMP and other protocols), header lengths are transport header
bytes (TCP data offset × 4, 8 for UDP, 0 otherwise), as in CICFlowMeter's ``BasicPacketInfo``.

Time resolution: NFStream timestamps packets in whole milliseconds, so every duration and gap is a
difference of millisecond timestamps expressed in microseconds (a multiple of 1000); means and standard
deviations of several gaps need not be.
:mod:`tapwatch.features.resolution` maps training rows measured at 1 µs onto that resolution.

>>> len(FEATURES)
82
>>> FEATURE_NAMES[:3]
('Protocol', 'Flow Duration', 'Total Fwd Packet')
>>> feature_index('Flow Duration')
1
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from enum import Enum

from tapwatch.features.errors import ConfigError

TIME_RESOLUTION_US = 1000
"""The sensor measures packet times in whole milliseconds (NFStream's clock)."""

FEATURE_SET_NAME = "cic-ids2017-engelen"


class Unit(str, Enum):
    """Units of the CIC features."""

    MICROSECONDS = "us"
    PACKETS = "packets"
    BYTES = "bytes"
    BYTES_PER_SECOND = "bytes/s"
    PACKETS_PER_SECOND = "packets/s"
    COUNT = "count"
    RATIO = "ratio"
    CODE = "code"


@dataclass(frozen=True)
class FeatureDef:
    """One model input feature.

    Parameters
    ----------
    name
        The CIC-IDS2017 (corrected release) column name.
    unit
        The feature's unit.
    rule
        The CICFlowMeter rule it follows (``BasicFlow`` / ``FlowGenerator`` of the corrected CICFlowMeter).

    Example
    -------
    >>> FEATURES[1].unit is Unit.MICROSECONDS
    True
    """

    name: str
    unit: Unit
    rule: str

    @property
    def is_time(self) -> bool:
        """Measured in microseconds, so quantised to the sensor's resolution."""
        return self.unit is Unit.MICROSECONDS

    @property
    def is_rate(self) -> bool:
        """Divided by the flow or bulk duration, so recomputed after quantisation."""
        return self.unit in (Unit.BYTES_PER_SECOND, Unit.PACKETS_PER_SECOND)


_U = Unit
_STATS = ("Max", "Min", "Mean", "Std")


def _defs() -> tuple[FeatureDef, ...]:
    d: list[FeatureDef] = [
        FeatureDef("Protocol", _U.CODE, "IP protocol number of the flow (6 TCP, 17 UDP, 1 ICMP, 0 other)"),
        FeatureDef("Flow Duration", _U.MICROSECONDS, "last seen - first seen over both directions"),
        FeatureDef("Total Fwd Packet", _U.PACKETS, "packets from the flow's source"),
        FeatureDef("Total Bwd packets", _U.PACKETS, "packets towards the flow's source"),
        FeatureDef("Total Length of Fwd Packet", _U.BYTES, "sum of fwd transport payload lengths"),
        FeatureDef("Total Length of Bwd Packet", _U.BYTES, "sum of bwd transport payload lengths"),
    ]
    for direction in ("Fwd", "Bwd"):
        for stat in _STATS:
            rule = f"{stat.lower()} of {direction.lower()} payload lengths; 0 without {direction.lower()} packets"
            if stat == "Std":
                rule = f"sample standard deviation (n-1) of {direction.lower()} payload lengths; 0 if n < 2"
            d.append(FeatureDef(f"{direction} Packet Length {stat}", _U.BYTES, rule))
    d += [
        FeatureDef("Flow Bytes/s", _U.BYTES_PER_SECOND, "payload bytes / (duration / 1e6); -1 if duration 0"),
        FeatureDef("Flow Packets/s", _U.PACKETS_PER_SECOND, "packets / (duration / 1e6); -1 if duration 0"),
        FeatureDef("Flow IAT Mean", _U.MICROSECONDS, "mean gap between consecutive packets, both directions"),
        FeatureDef("Flow IAT Std", _U.MICROSECONDS, "sample std of those gaps; 0 if fewer than 2 gaps"),
        FeatureDef("Flow IAT Max", _U.MICROSECONDS, "largest gap; 0 for a one-packet flow"),
        FeatureDef("Flow IAT Min", _U.MICROSECONDS, "smallest gap; 0 for a one-packet flow"),
    ]
    for direction in ("Fwd", "Bwd"):
        low = direction.lower()
        d.append(FeatureDef(f"{direction} IAT Total", _U.MICROSECONDS, f"sum of {low} gaps; 0 if < 2 {low} pkts"))
        d.append(FeatureDef(f"{direction} IAT Mean", _U.MICROSECONDS, f"mean {low} gap; 0 if < 2 {low} pkts"))
        d.append(FeatureDef(f"{direction} IAT Std", _U.MICROSECONDS, f"sample std of {low} gaps; 0 if < 3 pkts"))
        d.append(FeatureDef(f"{direction} IAT Max", _U.MICROSECONDS, f"largest {low} gap; 0 if < 2 {low} pkts"))
        d.append(FeatureDef(f"{direction} IAT Min", _U.MICROSECONDS, f"smallest {low} gap; 0 if < 2 {low} pkts"))
    for flag in ("PSH", "URG", "RST"):
        for direction in ("Fwd", "Bwd"):
            d.append(FeatureDef(f"{direction} {flag} Flags", _U.COUNT, f"{direction.lower()} packets with {flag}"))
    d += [
        FeatureDef("Fwd Header Length", _U.BYTES, "sum of fwd transport header lengths (TCP doff*4, UDP 8)"),
        FeatureDef("Bwd Header Length", _U.BYTES, "sum of bwd transport header lengths (TCP doff*4, UDP 8)"),
        FeatureDef("Fwd Packets/s", _U.PACKETS_PER_SECOND, "fwd packets / (duration / 1e6); 0 if duration 0"),
        FeatureDef("Bwd Packets/s", _U.PACKETS_PER_SECOND, "bwd packets / (duration / 1e6); 0 if duration 0"),
        FeatureDef("Packet Length Min", _U.BYTES, "min payload length over both directions"),
        FeatureDef("Packet Length Max", _U.BYTES, "max payload length over both directions"),
        FeatureDef("Packet Length Mean", _U.BYTES, "mean payload length over both directions"),
        FeatureDef("Packet Length Std", _U.BYTES, "sample std of payload lengths; 0 if 1 packet"),
        FeatureDef("Packet Length Variance", _U.BYTES, "sample variance of payload lengths (bytes squared)"),
    ]
    for flag in ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "CWR", "ECE"):
        d.append(FeatureDef(f"{flag} Flag Count", _U.COUNT, f"packets with {flag}, both directions"))
    d += [
        FeatureDef("Down/Up Ratio", _U.RATIO, "bwd packets / fwd packets; 0 without fwd packets"),
        FeatureDef("Average Packet Size", _U.BYTES, "payload bytes / packets"),
        FeatureDef("Fwd Segment Size Avg", _U.BYTES, "fwd payload bytes / fwd packets"),
        FeatureDef("Bwd Segment Size Avg", _U.BYTES, "bwd payload bytes / bwd packets"),
    ]
    for direction in ("Fwd", "Bwd"):
        low = direction.lower()
        d += [
            FeatureDef(
                f"{direction} Bytes/Bulk Avg", _U.BYTES, f"{low} bulk bytes / {low} bulks (>=4 data pkts, gaps<=1s)"
            ),
            FeatureDef(f"{direction} Packet/Bulk Avg", _U.PACKETS, f"{low} bulk packets / {low} bulks"),
            FeatureDef(f"{direction} Bulk Rate Avg", _U.BYTES_PER_SECOND, f"{low} bulk bytes / bulk duration (s)"),
        ]
    d += [
        # The corrected release divides by the packet count (integer division); checked on every row of
        # the subset. CICFlowMeter's public code divides by the number of gaps over 1 s instead.
        FeatureDef("Subflow Fwd Packets", _U.PACKETS, "floor(fwd packets / packets), as the corrected release"),
        FeatureDef("Subflow Fwd Bytes", _U.BYTES, "floor(fwd payload bytes / packets), as the corrected release"),
        FeatureDef("Subflow Bwd Packets", _U.PACKETS, "floor(bwd packets / packets), as the corrected release"),
        FeatureDef("Subflow Bwd Bytes", _U.BYTES, "floor(bwd payload bytes / packets), as the corrected release"),
        FeatureDef("FWD Init Win Bytes", _U.BYTES, "TCP window of the first packet if it is fwd, else 0"),
        # The release's build overwrites it with every bwd packet (0 on all FTP-Patator rows ending in a RST).
        FeatureDef("Bwd Init Win Bytes", _U.BYTES, "TCP window of the last bwd packet, as the corrected release"),
        # The release's build does not count the first packet (at most fwd packets - 1 in 99.98 % of rows).
        FeatureDef("Fwd Act Data Pkts", _U.PACKETS, "fwd packets after the first with >= 1 byte of payload"),
        FeatureDef("Fwd Seg Size Min", _U.BYTES, "smallest fwd transport header length"),
    ]
    for kind, what in (("Active", "active period (gaps <= activity timeout)"), ("Idle", "idle gap > activity timeout")):
        for stat in ("Mean", "Std", "Max", "Min"):
            d.append(FeatureDef(f"{kind} {stat}", _U.MICROSECONDS, f"{stat.lower()} {what}; 0 if none"))
    d += [
        FeatureDef("ICMP Code", _U.CODE, "ICMP code of the flow's first packet; -1 if not ICMP"),
        FeatureDef("ICMP Type", _U.CODE, "ICMP type of the flow's first packet; -1 if not ICMP"),
        FeatureDef(
            "Total TCP Flow Time",
            _U.MICROSECONDS,
            "TCP: duration of the connection across flow-timeout splits (earlier parts and gaps + this part); "
            "0 for UDP and ICMP",
        ),
    ]
    return tuple(d)


FEATURES: tuple[FeatureDef, ...] = _defs()
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
_INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
TIME_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.is_time)
RATE_FEATURES: tuple[str, ...] = tuple(f.name for f in FEATURES if f.is_rate)

IDENTIFIER_COLUMNS: tuple[str, ...] = (
    "id",
    "Flow ID",
    "Src IP",
    "Src Port",
    "Dst IP",
    "Dst Port",
    "Timestamp",
)
"""Columns of the corrected CSVs that identify a flow; never model inputs."""

LABEL_COLUMNS: tuple[str, ...] = ("Label", "Attempted Category")

ORIGINAL_RELEASE_LACKS: tuple[str, ...] = (
    "Fwd RST Flags",
    "Bwd RST Flags",
    "ICMP Code",
    "ICMP Type",
    "Total TCP Flow Time",
)
"""Features of the corrected release (and the sensor) that the original CIC-IDS2017 release does not have."""

ORIGINAL_FEATURE_NAMES: tuple[str, ...] = tuple(n for n in FEATURE_NAMES if n not in ORIGINAL_RELEASE_LACKS)
"""The 77 features both releases and the sensor define, in the contract's order (the original release's
TrafficLabelling CSVs have them all; its MachineLearningCVE CSVs also lack ``Protocol``)."""

MLCVE_FEATURE_NAMES: tuple[str, ...] = tuple(n for n in ORIGINAL_FEATURE_NAMES if n != "Protocol")
"""The 76 features of the original release's MachineLearningCVE CSVs (no identifiers, so no ``Protocol``)."""

FEATURE_SUBSETS: dict[str, tuple[str, ...]] = {
    "all": FEATURE_NAMES,
    "original": ORIGINAL_FEATURE_NAMES,
    "original-mlcve": MLCVE_FEATURE_NAMES,
}
"""Named feature subsets a model can be trained on (``tapwatch train --features``)."""


def feature_subset(name: str) -> tuple[str, ...]:
    """The features of a named subset of :data:`FEATURE_SUBSETS`, in the contract's order.

    >>> len(feature_subset("all")), len(feature_subset("original")), len(feature_subset("original-mlcve"))
    (82, 77, 76)
    """
    try:
        return FEATURE_SUBSETS[name]
    except KeyError:
        known = ", ".join(FEATURE_SUBSETS)
        raise ConfigError("--features", f"unknown feature subset {name!r}; known: {known}") from None


def feature_index(name: str) -> int:
    """Position of a feature in the model's input order."""
    return _INDEX[name]


def feature_set_id(window_length: int, names: tuple[str, ...] = FEATURE_NAMES) -> str:
    """Hash of the ordered feature names, their units, the time resolution and the window length T.

    A worker refuses a window whose id differs from its model card's.

    >>> feature_set_id(10) == feature_set_id(10)
    True
    >>> feature_set_id(10) != feature_set_id(5)
    True
    """
    units = {f.name: f.unit.value for f in FEATURES}
    payload = {
        "set": FEATURE_SET_NAME,
        "features": [[n, units.get(n, "?")] for n in names],
        "time_resolution_us": TIME_RESOLUTION_US,
        "window_length": window_length,
    }
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return f"{FEATURE_SET_NAME}/{digest[:16]}"

"""CICFlowMeter's flow state machine, in plain Python, fed one packet at a time.

This is the sensor's definition of every feature in :mod:`tapwatch.features.contract`. It follows the
CICFlowMeter build that wrote the corrected CIC-IDS2017 release (Engelen et al.): ``BasicFlow`` and
``FlowGenerator``, with the release's own quirks where its rows show them (subflow columns, the first
packet not counted in ``Fwd Act Data Pkts``, ``Bwd Init Win Bytes`` from the last backward packet,
``Total TCP Flow Time`` only for TCP). It knows nothing of NFStream: :mod:`tapwatch.capture.plugin` feeds
it, and the unit tests feed it hand-built packets through real pcaps.

Times are integer microseconds. The sensor's clock ticks in milliseconds, so in production every packet
time, duration and gap is a multiple of 1000 (means and deviations of them need not be).

This runs once per packet, so :meth:`CicFlow.add` keeps its state in flat integer attributes (exact
integer sums of values and squares instead of per-statistic objects) and counts TCP flag bytes in a dict.

>>> f = CicFlow(protocol=6, time_us=0, fwd=True, payload=0, header=24, flags=SYN, window=1024)
>>> f.add(49, False, 0, 20, RST | ACK, 0)
>>> f.tcp_state == READY
True
>>> v = dict(zip(FEATURE_NAMES, f.values()))
>>> v["Flow Duration"], v["Fwd Header Length"], v["Bwd Header Length"], v["FWD Init Win Bytes"]
(49.0, 24.0, 20.0, 1024.0)
"""

from __future__ import annotations

import math
from operator import attrgetter
from typing import Any

from tapwatch.features.contract import FEATURE_NAMES

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
FLAG_COLUMNS = (FIN, SYN, RST, PSH, ACK, URG, CWR, ECE)  # the order of the "... Flag Count" columns
OPEN, FIRST_FIN, SECOND_FIN, READY = 0, 1, 2, 3  # FlowGenerator's TCP termination states
BULK_MIN_PACKETS = 4  # BasicFlow.updateForwardBulk: a bulk is 4+ data packets ...
BULK_MAX_GAP_US = 1_000_000  # ... with gaps of at most 1 s

_INF = math.inf
_BITS = [tuple(1 if b & bit else 0 for bit in FLAG_COLUMNS) for b in range(256)]  # flag byte -> column bits


def summary(n: int, total: int, squares: int, lo: float, hi: float) -> tuple[float, float, float, float]:
    """(max, min, mean, sample std) from exact integer sums, as commons-math ``SummaryStatistics``.

    >>> summary(2, 4, 10, 1, 3)
    (3.0, 1.0, 2.0, 1.4142135623730951)
    >>> summary(0, 0, 0, math.inf, -math.inf)
    (0.0, 0.0, 0.0, 0.0)
    """
    if n == 0:
        return (0.0, 0.0, 0.0, 0.0)
    return (float(hi), float(lo), total / n, math.sqrt(variance(n, total, squares)))


def variance(n: int, total: int, squares: int) -> float:
    """Sample variance (n - 1) from exact integer sums; 0 for fewer than two values."""
    if n < 2:
        return 0.0
    return max(0, n * squares - total * total) / (n * (n - 1))


class Bulk:
    """``BasicFlow.updateForwardBulk`` / ``updateBackwardBulk`` for one direction (data packets only)."""

    __slots__ = ("count_helper", "duration", "last_ts", "packets", "size_helper", "start_helper", "states", "total")

    def __init__(self) -> None:
        self.duration = self.packets = self.total = self.states = 0
        self.count_helper = self.start_helper = self.size_helper = self.last_ts = 0

    def update(self, ts: int, size: int) -> None:
        """Add a packet with ``size`` > 0 bytes of payload (the caller applied the other-direction reset)."""
        if self.start_helper == 0 or ts - self.last_ts > BULK_MAX_GAP_US:
            self.start_helper = self.last_ts = ts
            self.count_helper = 1
            self.size_helper = size
            return
        self.count_helper += 1
        self.size_helper += size
        if self.count_helper == BULK_MIN_PACKETS:
            self.states += 1
            self.packets += self.count_helper
            self.total += self.size_helper
            self.duration += ts - self.start_helper
        elif self.count_helper > BULK_MIN_PACKETS:
            self.packets += 1
            self.total += size
            self.duration += ts - self.last_ts
        self.last_ts = ts

    def snapshot(self) -> tuple[int, ...]:
        return (self.duration, self.packets, self.total, self.states)

    @classmethod
    def restore(cls, snap: tuple[int, ...]) -> Bulk:
        b = cls()
        b.duration, b.packets, b.total, b.states = snap
        return b

    def features(self) -> tuple[float, float, float]:
        """(bytes/bulk, packets/bulk, bulk rate in bytes/s)."""
        if not self.states:
            return (0.0, 0.0, self.total / (self.duration / 1e6) if self.duration else 0.0)
        rate = self.total / (self.duration / 1e6) if self.duration else 0.0
        return (self.total / self.states, self.packets / self.states, rate)


class CicFlow:
    """One CICFlowMeter flow. Create it with the first packet, :meth:`add` the rest, read :meth:`values`.

    Parameters
    ----------
    protocol
        IP protocol number.
    time_us, fwd, payload, header, flags, window
        The first packet: time, direction (False when the flow was reversed because its first packet was
        a SYN-ACK), transport payload length (0 for ICMP), transport header length, TCP flag byte, TCP
        window field.
    activity_timeout_us
        The active/idle threshold (CICFlowMeter's 5 s).
    icmp
        (type, code) of the first packet for ICMP flows, else None.
    carried_us
        For a TCP connection split by the flow timeout: the connection time before this part, added to
        ``Total TCP Flow Time``.
    """

    __slots__ = (
        "act_data_fwd",
        "act_max",
        "act_min",
        "act_n",
        "act_sq",
        "act_sum",
        "activity_timeout_us",
        "biat_max",
        "biat_min",
        "biat_sq",
        "bulk_bwd",
        "bulk_fwd",
        "bwd_first",
        "bwd_flags",
        "bwd_header",
        "bwd_last",
        "bwd_max",
        "bwd_min",
        "bwd_n",
        "bwd_sq",
        "bwd_sum",
        "carried_us",
        "end_active",
        "fiat_max",
        "fiat_min",
        "fiat_sq",
        "fwd_first",
        "fwd_flags",
        "fwd_header",
        "fwd_last",
        "fwd_max",
        "fwd_min",
        "fwd_n",
        "fwd_sq",
        "fwd_sum",
        "iat_max",
        "iat_min",
        "iat_sq",
        "icmp",
        "idl_max",
        "idl_min",
        "idl_n",
        "idl_sq",
        "idl_sum",
        "init_win_bwd",
        "init_win_fwd",
        "last_us",
        "min_seg_fwd",
        "protocol",
        "start_active",
        "start_us",
        "tcp_state",
    )  # fmt: skip

    def __init__(
        self,
        protocol: int,
        time_us: int,
        fwd: bool,
        payload: int,
        header: int,
        flags: int,
        window: int,
        activity_timeout_us: int = 5_000_000,
        icmp: tuple[int, int] | None = None,
        carried_us: int = 0,
    ) -> None:
        t = time_us
        self.protocol, self.activity_timeout_us, self.icmp, self.carried_us = (
            protocol,
            activity_timeout_us,
            icmp,
            carried_us,
        )
        self.tcp_state = OPEN
        self.start_us = self.last_us = self.start_active = self.end_active = t
        self.iat_sq, self.iat_min, self.iat_max = 0, _INF, -_INF
        self.fwd_n = self.fwd_sum = self.fwd_sq = self.bwd_n = self.bwd_sum = self.bwd_sq = 0
        self.fwd_min = self.bwd_min = _INF
        self.fwd_max = self.bwd_max = -_INF
        self.fwd_first = self.fwd_last = self.bwd_first = self.bwd_last = t
        self.fiat_sq = self.biat_sq = 0
        self.fiat_min = self.biat_min = _INF
        self.fiat_max = self.biat_max = -_INF
        self.act_n = self.act_sum = self.act_sq = self.idl_n = self.idl_sum = self.idl_sq = 0
        self.act_min = self.idl_min = _INF
        self.act_max = self.idl_max = -_INF
        self.fwd_flags: dict[int, int] = {}
        self.bwd_flags: dict[int, int] = {}
        self.fwd_header = self.bwd_header = self.act_data_fwd = self.min_seg_fwd = 0
        self.init_win_fwd = self.init_win_bwd = 0
        self.bulk_fwd, self.bulk_bwd = Bulk(), Bulk()
        # BasicFlow.firstPacket: the first packet sets the fwd window and min segment size. The release's
        # build counts no data packet here (Fwd Act Data Pkts is at most fwd packets - 1 in its rows).
        if fwd:
            self.min_seg_fwd = header
            self.init_win_fwd = window
        self._count(t, fwd, payload, header, flags, window)
        self.act_data_fwd = 0

    def add(self, t: int, fwd: bool, payload: int, header: int, flags: int, window: int) -> None:
        """``FlowGenerator.addPacket`` for a packet that belongs to this open flow."""
        # updateActiveIdleTime, before BasicFlow.addPacket
        if t - self.end_active > self.activity_timeout_us:
            active = self.end_active - self.start_active
            if active > 0:
                self.act_n += 1
                self.act_sum += active
                self.act_sq += active * active
                self.act_min = min(self.act_min, active)
                self.act_max = max(self.act_max, active)
            idle = t - self.end_active
            self.idl_n += 1
            self.idl_sum += idle
            self.idl_sq += idle * idle
            self.idl_min = min(self.idl_min, idle)
            self.idl_max = max(self.idl_max, idle)
            self.start_active = t
        self.end_active = t
        gap = t - self.last_us
        self.iat_sq += gap * gap
        if gap < self.iat_min:
            self.iat_min = gap
        if gap > self.iat_max:
            self.iat_max = gap
        self.last_us = t
        if fwd:
            if self.fwd_n:
                g = t - self.fwd_last
                self.fiat_sq += g * g
                self.fiat_min = min(self.fiat_min, g)
                self.fiat_max = max(self.fiat_max, g)
            else:
                self.fwd_first = t
            if header < self.min_seg_fwd:
                self.min_seg_fwd = header
        else:
            if self.bwd_n:
                g = t - self.bwd_last
                self.biat_sq += g * g
                self.biat_min = min(self.biat_min, g)
                self.biat_max = max(self.biat_max, g)
            else:
                self.bwd_first = t
        self._count(t, fwd, payload, header, flags, window)
        if flags and self.protocol == 6:
            self._tcp_state(flags)

    def _count(self, t: int, fwd: bool, payload: int, header: int, flags: int, window: int) -> None:
        """Per-direction counters, flags and bulk (shared by the first and later packets)."""
        if fwd:
            self.fwd_n += 1
            self.fwd_sum += payload
            self.fwd_sq += payload * payload
            if payload < self.fwd_min:
                self.fwd_min = payload
            if payload > self.fwd_max:
                self.fwd_max = payload
            self.fwd_header += header
            self.fwd_last = t
            if payload:
                self.act_data_fwd += 1
            if flags:
                self.fwd_flags[flags] = self.fwd_flags.get(flags, 0) + 1
            if self.bulk_bwd.last_ts > self.bulk_fwd.start_helper:
                self.bulk_fwd.start_helper = 0
            if payload > 0:
                self.bulk_fwd.update(t, payload)
        else:
            self.bwd_n += 1
            self.bwd_sum += payload
            self.bwd_sq += payload * payload
            if payload < self.bwd_min:
                self.bwd_min = payload
            if payload > self.bwd_max:
                self.bwd_max = payload
            self.bwd_header += header
            self.bwd_last = t
            self.init_win_bwd = window  # the release's build keeps the last backward window
            if flags:
                self.bwd_flags[flags] = self.bwd_flags.get(flags, 0) + 1
            if self.bulk_fwd.last_ts > self.bulk_bwd.start_helper:
                self.bulk_bwd.start_helper = 0
            if payload > 0:
                self.bulk_bwd.update(t, payload)

    def _tcp_state(self, flags: int) -> None:
        """FlowGenerator's FIN/RST/ACK branches (the first matching flag decides)."""
        if flags & FIN:
            if self.tcp_state == OPEN:
                self.tcp_state = FIRST_FIN
            elif (
                self.tcp_state == FIRST_FIN
                and self._count_flag(self.fwd_flags, FIN)
                and self._count_flag(self.bwd_flags, FIN)
            ):
                self.tcp_state = SECOND_FIN
        elif flags & RST or (flags & ACK and self.tcp_state == SECOND_FIN):
            self.tcp_state = READY

    @staticmethod
    def _count_flag(counts: dict[int, int], bit: int) -> int:
        return sum(n for fl, n in counts.items() if fl & bit)

    # -- results ----------------------------------------------------------------------------------
    @property
    def packets(self) -> int:
        return self.fwd_n + self.bwd_n

    def snapshot(self) -> tuple[Any, ...]:
        """The state :meth:`values` needs, as a plain tuple: cheap to take in the meter and to pickle.

        The meter process is the sensor's bottleneck and the reader is mostly idle, so the meter ships
        this and the reader calls :meth:`restore` and :meth:`values`.
        """
        return (_STATE(self), self.bulk_fwd.snapshot(), self.bulk_bwd.snapshot())

    @classmethod
    def restore(cls, snap: tuple[Any, ...]) -> CicFlow:
        """A flow rebuilt from :meth:`snapshot`, good for :meth:`values` (not for more packets).

        >>> f = CicFlow(6, 0, True, 10, 20, ACK, 100)
        >>> f.add(1000, False, 5, 20, ACK, 200)
        >>> CicFlow.restore(f.snapshot()).values() == f.values()
        True
        """
        flow = cls.__new__(cls)
        for name, value in zip(_STATE_NAMES, snap[0], strict=True):
            setattr(flow, name, value)
        flow.bulk_fwd, flow.bulk_bwd = Bulk.restore(snap[1]), Bulk.restore(snap[2])
        return flow

    def values(self) -> tuple[float, ...]:
        """The 82 feature values in contract order (``BasicFlow.dumpFlowBasedFeaturesEx``)."""
        duration = self.last_us - self.start_us
        fn, bn = self.fwd_n, self.bwd_n
        fb, bb = self.fwd_sum, self.bwd_sum
        n = fn + bn
        secs = duration / 1e6
        v: list[float] = [self.protocol, duration, fn, bn, fb, bb]
        v += summary(fn, fb, self.fwd_sq, self.fwd_min, self.fwd_max)
        v += summary(bn, bb, self.bwd_sq, self.bwd_min, self.bwd_max)
        v += [(fb + bb) / secs, n / secs] if duration else [-1.0, -1.0]
        hi, lo, mean, std = summary(n - 1, duration, self.iat_sq, self.iat_min, self.iat_max)
        v += [mean, std, hi, lo]
        for cnt, first, last, sq, mn, mx in (
            (fn, self.fwd_first, self.fwd_last, self.fiat_sq, self.fiat_min, self.fiat_max),
            (bn, self.bwd_first, self.bwd_last, self.biat_sq, self.biat_min, self.biat_max),
        ):
            if cnt > 1:
                hi, lo, mean, std = summary(cnt - 1, last - first, sq, mn, mx)
                v += [last - first, mean, std, hi, lo]
            else:
                v += [0.0] * 5
        fwd_bits, bwd_bits = _flag_columns(self.fwd_flags), _flag_columns(self.bwd_flags)
        # columns FIN, SYN, RST, PSH, ACK, URG, CWR, ECE: PSH is 3, URG 5, RST 2
        v += [fwd_bits[3], bwd_bits[3], fwd_bits[5], bwd_bits[5], fwd_bits[2], bwd_bits[2]]
        v += [self.fwd_header, self.bwd_header]
        v += [fn / secs, bn / secs] if duration else [0.0, 0.0]
        total_sq = self.fwd_sq + self.bwd_sq
        hi, lo, mean, std = summary(
            n, fb + bb, total_sq, min(self.fwd_min, self.bwd_min), max(self.fwd_max, self.bwd_max)
        )
        v += [lo, hi, mean, std, variance(n, fb + bb, total_sq)]
        v += [f + b for f, b in zip(fwd_bits, bwd_bits, strict=True)]
        v += [bn / fn if fn else 0.0, (fb + bb) / n, fb / fn if fn else 0.0, bb / bn if bn else 0.0]
        v += self.bulk_fwd.features()
        v += self.bulk_bwd.features()
        # The release's subflow columns are integer divisions by the packet count (true of all 43,419 rows
        # of the subset), not CICFlowMeter's public gap-based subflow count; the model learns them.
        v += [fn // n, fb // n, bn // n, bb // n]
        v += [self.init_win_fwd, self.init_win_bwd, self.act_data_fwd, self.min_seg_fwd]
        for cnt, tot, sq, mn, mx in (
            (self.act_n, self.act_sum, self.act_sq, self.act_min, self.act_max),
            (self.idl_n, self.idl_sum, self.idl_sq, self.idl_min, self.idl_max),
        ):
            hi, lo, mean, std = summary(cnt, tot, sq, mn, mx)
            v += [mean, std, hi, lo]
        icmp_type, icmp_code = self.icmp if self.icmp is not None else (-1, -1)
        v += [icmp_code, icmp_type, self.carried_us + duration if self.protocol == 6 else 0]
        return tuple(map(float, v))


def _flag_columns(counts: dict[int, int]) -> list[int]:
    """Packets per flag column (FIN, SYN, RST, PSH, ACK, URG, CWR, ECE) from counts per flag byte."""
    out = [0] * 8
    for flags, n in counts.items():
        bits = _BITS[flags]
        for i in range(8):
            if bits[i]:
                out[i] += n
    return out


_STATE_NAMES = tuple(n for n in CicFlow.__slots__ if n not in ("bulk_fwd", "bulk_bwd"))
_STATE = attrgetter(*_STATE_NAMES)

assert len(FEATURE_NAMES) == 82

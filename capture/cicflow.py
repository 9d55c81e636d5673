"""CICFlowMeter's flow state machine, in plain Python, fed one packet at a time.

This is the sensor's definition of every feature in :mod:`tapwatch.features.contract`. It follows the
corrected CICFlowMeter of Engelen et al. (``BasicFlow`` and ``FlowGenerator``); each method names the
rule it implements. It knows nothing of NFStream: :mod:`tapwatch.capture.plugin` feeds it, and the unit
tests feed it hand-built packets through real pcaps.

Times are integer microseconds. The sensor's clock ticks in milliseconds, so in production every time is
a multiple of 1000 (see :data:`~tapwatch.features.contract.TIME_RESOLUTION_US`).

>>> f = CicFlow(protocol=6, first=Packet(0, True, 0, 24, SYN, 1024))
>>> f.add(Packet(49, False, 0, 20, RST | ACK, 0))
>>> f.tcp_state is TcpState.READY
True
>>> v = dict(zip(FEATURE_NAMES, f.values()))
>>> v["Flow Duration"], v["Fwd Header Length"], v["Bwd Header Length"], v["FWD Init Win Bytes"]
(49.0, 24.0, 20.0, 1024.0)
"""

from __future__ import annotations

import math
from enum import Enum
from typing import NamedTuple

from tapwatch.features.contract import FEATURE_NAMES

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80
_FLAG_ORDER = (FIN, SYN, RST, PSH, ACK, URG, CWR, ECE)  # the order of the "... Flag Count" columns
BULK_MIN_PACKETS = 4  # BasicFlow.updateForwardBulk: a bulk is 4+ data packets ...
BULK_MAX_GAP_US = 1_000_000  # ... with gaps of at most 1 s


class Packet(NamedTuple):
    """What CICFlowMeter reads of a packet (``BasicPacketInfo``).

    ``payload`` is the transport payload length from the IP total length (0 for ICMP), ``header`` the
    transport header length (TCP data offset × 4, 8 for UDP, 0 otherwise), ``flags`` the TCP flag byte,
    ``window`` the raw TCP window field.
    """

    time_us: int
    fwd: bool
    payload: int
    header: int
    flags: int
    window: int


class TcpState(str, Enum):
    """``FlowGenerator``'s TCP termination states."""

    OPEN = "open"
    FIRST_FIN = "first_fin"
    SECOND_FIN = "second_fin"
    READY = "ready_for_termination"


class Stats:
    """Apache commons ``SummaryStatistics`` as CICFlowMeter uses it: n, sum, min, max, mean, sample std.

    >>> s = Stats(); s.add(1.0); s.add(3.0)
    >>> s.n, s.total, s.mean, s.std(), s.variance()
    (2, 4.0, 2.0, 1.4142135623730951, 2.0)
    """

    __slots__ = ("m2", "maximum", "mean", "minimum", "n", "total")

    def __init__(self) -> None:
        self.n = 0
        self.total = 0.0
        self.mean = 0.0
        self.m2 = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf

    def add(self, x: float) -> None:
        self.n += 1
        self.total += x
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        if x < self.minimum:
            self.minimum = x
        if x > self.maximum:
            self.maximum = x

    def variance(self) -> float:
        """Sample variance (n - 1); 0 for one value, as commons-math returns."""
        return self.m2 / (self.n - 1) if self.n > 1 else 0.0

    def std(self) -> float:
        return math.sqrt(self.variance())

    def summary(self) -> tuple[float, float, float, float]:
        """(max, min, mean, std), or zeros when empty (CICFlowMeter writes 0 for empty statistics)."""
        if self.n == 0:
            return (0.0, 0.0, 0.0, 0.0)
        return (self.maximum, self.minimum, self.mean, self.std())


class Bulk:
    """``BasicFlow.updateForwardBulk`` / ``updateBackwardBulk`` for one direction."""

    __slots__ = ("count_helper", "duration", "last_ts", "packets", "size_helper", "start_helper", "states", "total")

    def __init__(self) -> None:
        self.duration = 0
        self.packets = 0
        self.total = 0
        self.states = 0
        self.count_helper = 0
        self.start_helper = 0
        self.size_helper = 0
        self.last_ts = 0

    def update(self, ts: int, size: int, last_bulk_ts_other: int) -> None:
        if last_bulk_ts_other > self.start_helper:
            self.start_helper = 0
        if size <= 0:
            return
        if self.start_helper == 0 or ts - self.last_ts > BULK_MAX_GAP_US:
            self.start_helper = ts
            self.last_ts = ts
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

    def features(self) -> tuple[float, float, float]:
        """(bytes/bulk, packets/bulk, bulk rate in bytes/s)."""
        per_bytes = self.total / self.states if self.states else 0.0
        per_packets = self.packets / self.states if self.states else 0.0
        rate = self.total / (self.duration / 1e6) if self.duration else 0.0
        return (per_bytes, per_packets, rate)


class CicFlow:
    """One CICFlowMeter flow. Create it with the first packet, :meth:`add` the rest, read :meth:`values`.

    Parameters
    ----------
    protocol
        IP protocol number.
    first
        The first packet, already oriented (``fwd`` is True unless the flow was reversed because the
        first packet was a SYN-ACK).
    activity_timeout_us
        The active/idle threshold (CICFlowMeter's 5 s).
    icmp
        (type, code) of the first packet for ICMP flows, else None.
    carried_us
        For a TCP connection split by the flow timeout: the connection time before this part
        (earlier parts and the gap to this one), added to ``Total TCP Flow Time``.
    """

    __slots__ = (
        "act_data_fwd",
        "active",
        "activity_timeout_us",
        "all_len",
        "bulk_bwd",
        "bulk_fwd",
        "bwd_flags",
        "bwd_header",
        "bwd_iat",
        "bwd_last",
        "bwd_len",
        "carried_us",
        "end_active",
        "flag_counts",
        "flow_iat",
        "fwd_flags",
        "fwd_header",
        "fwd_iat",
        "fwd_last",
        "fwd_len",
        "icmp",
        "idle",
        "init_win_bwd",
        "init_win_fwd",
        "last_us",
        "min_seg_fwd",
        "protocol",
        "start_active",
        "start_us",
        "tcp_state",
    )

    def __init__(
        self,
        protocol: int,
        first: Packet,
        activity_timeout_us: int = 5_000_000,
        icmp: tuple[int, int] | None = None,
        carried_us: int = 0,
    ) -> None:
        self.protocol = protocol
        self.activity_timeout_us = activity_timeout_us
        self.icmp = icmp
        self.carried_us = carried_us
        self.tcp_state = TcpState.OPEN
        self.fwd_len, self.bwd_len, self.all_len = Stats(), Stats(), Stats()
        self.flow_iat, self.fwd_iat, self.bwd_iat = Stats(), Stats(), Stats()
        self.active, self.idle = Stats(), Stats()
        self.bulk_fwd, self.bulk_bwd = Bulk(), Bulk()
        self.flag_counts = [0] * 8
        self.fwd_flags = [0, 0, 0, 0]  # PSH, URG, RST, FIN from fwd packets
        self.bwd_flags = [0, 0, 0, 0]
        self.fwd_header = self.bwd_header = 0
        self.act_data_fwd = 0
        self.min_seg_fwd = 0
        self.init_win_fwd = self.init_win_bwd = 0
        t = first.time_us
        self.start_us = self.last_us = t
        self.start_active = self.end_active = t
        self.fwd_last = self.bwd_last = t
        self._bulk(first)
        self._flags(first)
        self.all_len.add(first.payload)
        # BasicFlow.firstPacket: the first packet sets the initial window and min segment size.
        if first.fwd:
            self.min_seg_fwd = first.header
            self.init_win_fwd = first.window
        else:
            self.init_win_bwd = first.window
        self._direction(first, first_packet=True)

    # -- per packet -------------------------------------------------------------------------------
    def add(self, p: Packet) -> None:
        """``FlowGenerator.addPacket`` for a packet of an open flow (after the split checks)."""
        t = p.time_us
        # FlowGenerator: updateActiveIdleTime before addPacket.
        if t - self.end_active > self.activity_timeout_us:
            if self.end_active - self.start_active > 0:
                self.active.add(self.end_active - self.start_active)
            self.idle.add(t - self.end_active)
            self.start_active = t
        self.end_active = t
        self._bulk(p)
        self._flags(p)
        self.all_len.add(p.payload)
        if p.fwd:
            if p.header < self.min_seg_fwd:
                self.min_seg_fwd = p.header
        elif self.init_win_bwd == 0:
            self.init_win_bwd = p.window
        self._direction(p, first_packet=False)
        self.flow_iat.add(t - self.last_us)
        self.last_us = t
        self._tcp_state(p.flags)

    def _bulk(self, p: Packet) -> None:
        if p.fwd:
            self.bulk_fwd.update(p.time_us, p.payload, self.bulk_bwd.last_ts)
        else:
            self.bulk_bwd.update(p.time_us, p.payload, self.bulk_fwd.last_ts)

    def _flags(self, p: Packet) -> None:
        fl = p.flags
        if fl:
            counts = self.flag_counts
            for i, bit in enumerate(_FLAG_ORDER):
                if fl & bit:
                    counts[i] += 1

    def _direction(self, p: Packet, first_packet: bool) -> None:
        t, fl = p.time_us, p.flags
        if p.fwd:
            if not first_packet and self.fwd_len.n >= 1:
                self.fwd_iat.add(t - self.fwd_last)
            self.fwd_last = t
            self.fwd_len.add(p.payload)
            self.fwd_header += p.header
            if p.payload >= 1:
                self.act_data_fwd += 1
            d = self.fwd_flags
        else:
            if not first_packet and self.bwd_len.n >= 1:
                self.bwd_iat.add(t - self.bwd_last)
            self.bwd_last = t
            self.bwd_len.add(p.payload)
            self.bwd_header += p.header
            d = self.bwd_flags
        if fl:
            d[0] += bool(fl & PSH)
            d[1] += bool(fl & URG)
            d[2] += bool(fl & RST)
            d[3] += bool(fl & FIN)

    def _tcp_state(self, flags: int) -> None:
        """FlowGenerator's FIN/RST/ACK branches (the first matching flag decides)."""
        if self.protocol != 6:
            return
        if flags & FIN:
            if self.tcp_state is TcpState.OPEN:
                self.tcp_state = TcpState.FIRST_FIN
            elif self.tcp_state is TcpState.FIRST_FIN and self.fwd_flags[3] > 0 and self.bwd_flags[3] > 0:
                self.tcp_state = TcpState.SECOND_FIN
        elif flags & RST or (flags & ACK and self.tcp_state is TcpState.SECOND_FIN):
            self.tcp_state = TcpState.READY

    # -- results ----------------------------------------------------------------------------------
    @property
    def packets(self) -> int:
        return self.fwd_len.n + self.bwd_len.n

    def values(self) -> tuple[float, ...]:
        """The 82 feature values in contract order (``BasicFlow.dumpFlowBasedFeaturesEx``)."""
        duration = self.last_us - self.start_us
        fwd_n, bwd_n = self.fwd_len.n, self.bwd_len.n
        fwd_bytes, bwd_bytes = self.fwd_len.total, self.bwd_len.total
        packets = fwd_n + bwd_n
        secs = duration / 1e6
        v: list[float] = [float(self.protocol), float(duration), float(fwd_n), float(bwd_n), fwd_bytes, bwd_bytes]
        v += self.fwd_len.summary()
        v += self.bwd_len.summary()
        v += [(fwd_bytes + bwd_bytes) / secs, packets / secs] if duration else [-1.0, -1.0]
        fi = self.flow_iat
        v += [fi.mean, fi.std(), fi.maximum, fi.minimum] if fi.n else [0.0] * 4
        for iat, n in ((self.fwd_iat, fwd_n), (self.bwd_iat, bwd_n)):
            v += [iat.total, iat.mean, iat.std(), iat.maximum, iat.minimum] if n > 1 else [0.0] * 5
        ff, bf = self.fwd_flags, self.bwd_flags
        v += [ff[0], bf[0], ff[1], bf[1], ff[2], bf[2]]
        v += [float(self.fwd_header), float(self.bwd_header)]
        v += [fwd_n / secs, bwd_n / secs] if duration else [0.0, 0.0]
        al = self.all_len
        v += [al.minimum, al.maximum, al.mean, al.std(), al.variance()]
        v += [float(c) for c in self.flag_counts]
        v.append(bwd_n / fwd_n if fwd_n else 0.0)
        v.append((fwd_bytes + bwd_bytes) / packets)
        v.append(fwd_bytes / fwd_n if fwd_n else 0.0)
        v.append(bwd_bytes / bwd_n if bwd_n else 0.0)
        v += self.bulk_fwd.features()
        v += self.bulk_bwd.features()
        # The corrected release's subflow columns are integer divisions by the packet count (true of all
        # 43,419 rows of the subset), not CICFlowMeter's public gap-based subflow count; the model learns them.
        v += [
            float(fwd_n // packets),
            float(fwd_bytes // packets),
            float(bwd_n // packets),
            float(bwd_bytes // packets),
        ]
        v += [float(self.init_win_fwd), float(self.init_win_bwd), float(self.act_data_fwd), float(self.min_seg_fwd)]
        a, i = self.active, self.idle
        v += [a.mean, a.std(), a.maximum, a.minimum] if a.n else [0.0] * 4
        v += [i.mean, i.std(), i.maximum, i.minimum] if i.n else [0.0] * 4
        icmp_type, icmp_code = self.icmp if self.icmp is not None else (-1, -1)
        v += [float(icmp_code), float(icmp_type)]
        v.append(float(self.carried_us + duration) if self.protocol == 6 else 0.0)
        return tuple(float(x) for x in v)


assert len(FEATURE_NAMES) == 82

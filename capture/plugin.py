"""The NFStream plugin that runs :class:`~tapwatch.capture.cicflow.CicFlow` inside NFStream's meter.

NFStream parses packets and keys flows; this plugin orients each flow as CICFlowMeter does, feeds every
packet to a :class:`CicFlow`, and closes flows by CICFlowMeter's rules:

* TCP FIN/RST: a flow that reached CICFlowMeter's READY_FOR_TERMINATION state (a RST, or the ACK after
  FINs from both sides) still takes the packets that follow, as CICFlowMeter does (the release has 8,608
  rows with two or more RSTs), until a SYN starts the next connection; tapwatch also closes it once no
  packet came for ``termination_linger_ms`` (CICFlowMeter would wait for the flow timeout), so that a
  finished connection is reported within seconds.
* The 120 s flow timeout is NFStream's active timeout; a TCP connection that continues keeps its
  orientation and carries its elapsed time into ``Total TCP Flow Time`` (the ``carry`` table).
* ICMP: a packet whose type and code both differ from the flow's starts a new flow.

Live capture has two problems NFStream cannot solve by itself: its clock only advances when packets
arrive, so finished flows on a quiet link are never emitted, and stopping it discards its flow cache.
With ``live=True`` the plugin therefore owns emission: a clock thread in the meter process expires
flows idle on the wall clock, every result goes to ``results`` (a multiprocessing queue the sensor
reads), and when ``stop`` is set the thread flushes every open flow, sends :data:`FLUSHED` and ends
the meter process.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, NamedTuple

from nfstream import NFPlugin

from tapwatch.capture.cicflow import READY, RST, SYN, CicFlow
from tapwatch.capture.fastpath import COMPILED, COMPILED_MAX_MS, FlowState, decode, packet_layout
from tapwatch.features.schema import ExpiryReason

FLUSHED = "tapwatch:flushed"
"""Sent on the results queue once a stopping live meter has flushed every flow."""

CAPTURE_DELAY_MS = 1_500
"""How late a packet can reach the meter live: NFStream opens libpcap with a 1000 ms buffer timeout, and
TPACKET_V3 hands packets over in blocks retired after at most that long (plus a margin). Wall-clock
expiry and the stop flush wait this long, so that no buffered packet is cut off its flow."""

IDLE_OR_END = "idle_or_end"
"""Pcap mode: NFStream expired the flow with no reason; the reader maps it to idle or end_of_capture."""

_CARRY_LIMIT = 65_536  # continuation entries are consumed by the very next packet; this only bounds leaks


class FlowResult(NamedTuple):
    """A closed flow as the meter hands it to the sensor (picklable, no NFStream objects)."""

    src_ip: str
    src_port: int
    dst_ip: str
    dst_port: int
    protocol: int
    first_ms: int
    last_ms: int
    packets: int
    bytes: int
    reason: str
    state: tuple[Any, ...]
    """:meth:`CicFlow.snapshot` (live): the reader computes the feature values from it; empty when ``values`` is set."""
    icmp: tuple[int, int] | None = None
    """(type, code) of the first packet of an ICMP or ICMPv6 flow (for the Community ID)."""
    values: tuple[float, ...] | None = None
    """With :attr:`MeterConfig.values_in_meter` (``detect``): the feature values, computed here
    (``CicFlow.restore(snapshot).values()``, the same code the reader would run). Most flows of a capture end at
    its end, when the meter has read every packet and a busy reader has every flow still to do: the meter's
    idle core takes this part of the reader's work. A light reader (``flows``) is better off doing it itself."""


@dataclass(frozen=True)
class MeterConfig:
    """What the plugin needs to know; built from the capture settings."""

    activity_timeout_us: int = 5_000_000
    idle_timeout_ms: int = 120_000
    flow_timeout_ms: int = 120_000
    termination_linger_ms: int = 2_000
    live: bool = False
    clock_interval_s: float = 0.5
    values_in_meter: bool = False
    """Pcap mode: compute each flow's feature values in the meter (see :attr:`FlowResult.values`)."""


class _State:
    """One CIC flow inside one NFStream flow."""

    __slots__ = ("bytes", "cic", "dst", "icmp", "last_ms", "protocol", "reason", "reversed", "src")

    def __init__(self, pkt: Any, reversed_: bool, cic: FlowState, icmp: tuple[int, int] | None) -> None:
        self.reversed = reversed_
        a, b = (pkt.src_ip, pkt.src_port), (pkt.dst_ip, pkt.dst_port)
        self.src, self.dst = (b, a) if reversed_ else (a, b)
        self.protocol = pkt.protocol
        self.cic: FlowState | None = cic
        self.icmp = icmp
        self.bytes = pkt.raw_size
        self.last_ms = pkt.time
        self.reason = ExpiryReason.IDLE


def _key(pkt: Any) -> tuple[Any, ...]:
    a, b = (pkt.src_ip, pkt.src_port), (pkt.dst_ip, pkt.dst_port)
    return (pkt.protocol, *(a + b if a <= b else b + a))


class CicPlugin(NFPlugin):  # type: ignore[misc]
    """NFStream plugin computing the CIC feature set; see the module docstring.

    Parameters
    ----------
    config
        Timeouts and the live flag.
    results
        Live mode only: a multiprocessing queue that receives every :class:`FlowResult`, then
        :data:`FLUSHED`.
    stop
        Live mode only: a multiprocessing event; when set the meter flushes and exits.

    Example
    -------
    >>> CicPlugin(MeterConfig()).config.idle_timeout_ms
    120000
    """

    config: MeterConfig
    results: Any
    stop: Any

    def __init__(self, config: MeterConfig, results: Any = None, stop: Any = None) -> None:
        super().__init__(config=config, results=results, stop=stop)
        self._clock_ms = 0
        self._carry: OrderedDict[tuple[Any, ...], tuple[tuple[Any, int], int, int]] = OrderedDict()
        self._open: OrderedDict[int, Any] = OrderedDict()  # live: NFStream flows by id(), LRU order
        self._ready: OrderedDict[int, Any] = OrderedDict()  # live: flows ready for termination, LRU order
        self._lock: threading.Lock | None = None
        self._pid = -1
        self._linger_ms = config.termination_linger_ms
        self._compiled_before_ms = COMPILED_MAX_MS - config.flow_timeout_ms - config.idle_timeout_ms
        self._raw: bool | None = None  # NFStream's packets skipped (see _go_raw); None: not decided yet
        self._pythonize: Any = None
        self._cast: Any = None
        if not config.live:  # no clock thread, no lock: NFStream calls the flow logic directly (per packet)
            self.on_update = self._update  # type: ignore[method-assign]

    # -- NFStream entry points -------------------------------------------------------------------
    def on_init(self, packet: Any, flow: Any) -> None:
        if self.config.live:
            self._ensure_clock()
            assert self._lock is not None
            with self._lock:
                self._init(packet, flow)
                if self._raw is None:
                    self._raw = self._go_raw(packet)
        else:
            self._init(packet, flow)
            if self._raw is None:
                self._raw = self._go_raw(packet)

    def on_update(self, packet: Any, flow: Any) -> None:
        assert self._lock is not None
        with self._lock:
            self._update(packet, flow)

    def on_expire(self, flow: Any) -> None:
        if self.config.live:
            assert self._lock is not None
            with self._lock:
                self._expire(flow)
        else:
            self._expire(flow)

    # -- NFStream's packets skipped (compiled meter) ---------------------------------------------------
    def _go_raw(self, packet: Any) -> bool:
        """In NFStream's meter process, on its first packet: stop NFStream building a Python packet per packet.

        NFStream hands plugins a 28-field namedtuple made per packet (``nfstream.flow.pythonize_packet``), a
        third of the meter's time, and copies its C flow's counters into Python attributes (``NFlow.sync``).
        With the compiled meter, this process's NFStream is told to pass its C packet as it is and to copy
        nothing; the common case of :meth:`_update` then runs in C on the struct (``add_raw``, its layout read
        from cffi), and every other case builds NFStream's own packet with NFStream's own function and runs the
        reference code. Only a packet of NFStream's own type switches this on (unit tests drive
        the plugin with hand-built packets); live, every call still takes the lock the clock thread shares.
        """
        import nfstream.flow as nf_flow

        if not COMPILED or not isinstance(packet, nf_flow.nf_packet):
            return False
        from _lib_engine import ffi

        layout = packet_layout(ffi)
        if layout is None:
            return False
        from tapwatch.capture import _cicflow  # type: ignore[attr-defined]

        _cicflow.set_layout(*layout)
        original = nf_flow.pythonize_packet
        self._pythonize = lambda pkt, flow: original(pkt, ffi, flow)
        self._cast = ffi.cast
        nf_flow.pythonize_packet = _as_is
        # NFlow.sync copies the C flow's counters into Python attributes at every packet when plugins run; nothing
        # here reads them (the reader reads the plugin's results, NFStream's idle check the C struct), so in this
        # process it copies nothing (an eighth of the meter's time).
        nf_flow.NFlow.sync = _no_sync
        if self.config.live:  # the clock thread shares the flows: every call under the lock, as before
            self.on_init = self._locked_init_raw  # type: ignore[method-assign]
            self.on_update = self._locked_update_raw  # type: ignore[method-assign]
        else:
            self.on_init = self._init_raw  # type: ignore[method-assign]
            self.on_update = self._update_raw  # type: ignore[method-assign]
        return True

    def _locked_init_raw(self, packet: Any, flow: Any) -> None:
        assert self._lock is not None
        with self._lock:
            self._init_raw(packet, flow)

    def _locked_update_raw(self, packet: Any, flow: Any) -> None:
        assert self._lock is not None
        with self._lock:
            self._update_raw(packet, flow)

    def _init_raw(self, packet: Any, flow: Any) -> None:
        self._init(self._pythonize(packet, flow), flow)

    def _update_raw(self, packet: Any, flow: Any) -> None:
        st: _State = flow.udps.state
        cic = st.cic
        if cic is not None and type(cic) is FlowState:
            done = cic.add_raw(int(self._cast("uintptr_t", packet)), st.reversed)
            if done >= 0:  # what _update does in its common case, done in C
                st.bytes += done >> 2
                st.last_ms = cic.last_us // 1000
                if done & 3:
                    st.reason = ExpiryReason.TCP_RST if done & 3 == 1 else ExpiryReason.TCP_FIN
                if self.config.live:
                    self._track(flow, st.last_ms)
                return
        self._update(self._pythonize(packet, flow), flow)

    # -- flow logic ------------------------------------------------------------------------------
    def _start(self, packet: Any, continues: bool = True) -> _State:
        """A new CIC flow starting with ``packet``: orientation, carried connection time, ICMP type."""
        t = packet.time
        carry = self._carry.pop(_key(packet), None) if continues else None
        carried_us = 0
        if carry is not None and (packet.protocol == 6 or t - carry[2] <= self.config.flow_timeout_ms):
            src, cum_us, last_ms = carry
            reversed_ = (packet.src_ip, packet.src_port) != src
            if packet.protocol == 6:
                carried_us = cum_us + (t - last_ms) * 1000
        else:  # FlowGenerator: a flow whose first packet is a SYN-ACK is oriented from the server
            reversed_ = packet.protocol == 6 and bool(packet.syn and packet.ack)
        payload, header, flags, window, icmp = decode(packet)
        # CICFlowMeter reads ICMP type and code for ICMPv4 only (jNetPcap's Icmp header).
        cic_icmp = icmp if packet.protocol == 1 else None
        cfg = self.config
        # The compiled state holds microseconds in 64 bits (until the year 2262); NFStream's active timeout
        # keeps every packet of a flow within flow_timeout_ms of its first. A corrupt capture's later times
        # get the definition, whose integers have no limit (the reader then refuses times past 9999).
        state = FlowState if t < self._compiled_before_ms else CicFlow
        cic = state(packet.protocol, t * 1000, not reversed_, payload, header, flags, window,
                    cfg.activity_timeout_us, cic_icmp, carried_us)  # fmt: skip
        return _State(packet, reversed_, cic, icmp)

    def _init(self, packet: Any, flow: Any) -> None:
        flow.udps.results = []
        flow.udps.state = self._start(packet)
        if self.config.live:
            self._clock_ms = max(self._clock_ms, packet.time)
            self._open[id(flow)] = flow

    def _update(self, packet: Any, flow: Any) -> None:
        t = packet.time
        st: _State = flow.udps.state
        cic = st.cic
        if cic is None:  # closed on the wall clock while quiet: this packet starts the next flow
            flow.udps.state = self._start(packet)
        else:
            payload, header, flags, window, icmp = decode(packet)
            if cic.tcp_state == READY and (flags & SYN or t - st.last_ms > self._linger_ms):
                # FlowGenerator: a SYN on a flow ready for termination starts the next connection
                self._emit(flow, st, st.reason)
                flow.udps.state = self._start(packet, continues=False)
            elif icmp and st.protocol == 1 and st.icmp and icmp[0] != st.icmp[0] and icmp[1] != st.icmp[1]:
                self._emit(flow, st, ExpiryReason.ICMP_CHANGE)
                flow.udps.state = self._start(packet, continues=False)
            else:
                was_ready = cic.tcp_state == READY
                cic.add(t * 1000, (packet.direction == 0) != st.reversed, payload, header, flags, window)
                st.bytes += packet.raw_size
                st.last_ms = t
                if cic.tcp_state == READY and not was_ready:
                    st.reason = ExpiryReason.TCP_RST if flags & RST else ExpiryReason.TCP_FIN
        if self.config.live:
            self._track(flow, t)

    def _track(self, flow: Any, t: int) -> None:
        """Live: the clock and the flows by recent activity, for expiry on the wall clock."""
        self._clock_ms = max(self._clock_ms, t)
        fid = id(flow)
        self._open[fid] = flow
        self._open.move_to_end(fid)
        st = flow.udps.state
        if st.cic is not None and st.cic.tcp_state == READY:
            self._ready[fid] = flow
            self._ready.move_to_end(fid)

    def _expire(self, flow: Any) -> None:
        st: _State | None = flow.udps.state
        if st is not None and st.cic is not None:
            reason: str
            if st.cic.tcp_state == READY:
                reason = st.reason.value
            else:
                # NFStream's flow or idle timeout; a later packet of the same connection continues it.
                cum = st.cic.carried_us + (st.cic.last_us - st.cic.start_us)
                self._carry[_key_state(st)] = (st.src, cum, st.last_ms)
                while len(self._carry) > _CARRY_LIMIT:
                    self._carry.popitem(last=False)
                if flow.expiration_id == 1:
                    reason = ExpiryReason.FLOW_TIMEOUT.value
                elif self.config.live:
                    reason = ExpiryReason.IDLE.value
                else:  # NFStream's end-of-file flush looks like an idle expiry; the reader tells them apart
                    reason = IDLE_OR_END
            self._emit(flow, st, reason)
        flow.udps.state = None
        if self.config.live:
            self._open.pop(id(flow), None)
            self._ready.pop(id(flow), None)

    def _emit(self, flow: Any, st: _State, reason: ExpiryReason | str) -> None:
        cic = st.cic
        assert cic is not None
        label = reason.value if isinstance(reason, ExpiryReason) else reason
        start, last = cic.start_us // 1000, cic.last_us // 1000
        snap = cic.snapshot()
        values = CicFlow.restore(snap).values() if self.config.values_in_meter and not self.config.live else None
        result = FlowResult(
            st.src[0], st.src[1], st.dst[0], st.dst[1], st.protocol, start, last, cic.packets, st.bytes, label,
            snap if values is None else (), st.icmp, values,
        )  # fmt: skip
        st.cic = None
        if self.config.live:
            self.results.put(result)
        else:
            flow.udps.results.append(result)

    # -- live clock ------------------------------------------------------------------------------
    def _ensure_clock(self) -> None:
        if self._pid == os.getpid():
            return
        self._pid = os.getpid()
        self._lock = threading.Lock()
        threading.Thread(target=self._clock, name="tapwatch-meter-clock", daemon=True).start()

    def _expire_quiet(self, flows: OrderedDict[int, Any], now: int, quiet_ms: int) -> None:
        """Emit flows (least recently active first) with no packet for ``quiet_ms``."""
        while flows:
            fid, flow = next(iter(flows.items()))
            st = flow.udps.state
            if st is not None and st.cic is not None:
                if now - st.last_ms < quiet_ms:
                    return
                self._emit(flow, st, st.reason if st.cic.tcp_state == READY else ExpiryReason.IDLE)
            del flows[fid]

    def _clock(self) -> None:
        """Expire flows idle on the wall clock; on stop, flush everything and end the meter process."""
        assert self._lock is not None
        while not self.stop.wait(self.config.clock_interval_s):
            now = max(int(time.time() * 1000) - CAPTURE_DELAY_MS, self._clock_ms)
            with self._lock:
                self._expire_quiet(self._ready, now, self.config.termination_linger_ms)
                self._expire_quiet(self._open, now, self.config.idle_timeout_ms)
        with self._lock:
            for flow in list(self._open.values()):
                st = flow.udps.state
                if st is not None and st.cic is not None:
                    self._emit(flow, st, st.reason if st.cic.tcp_state == READY else ExpiryReason.SHUTDOWN)
            self._open.clear()
            self.results.put(FLUSHED)
        # The queue's feeder thread must write everything before this process ends.
        self.results.close()
        self.results.join_thread()
        os._exit(0)


def _no_sync(flow: Any, *args: Any) -> None:
    """Stands in for ``nfstream.flow.NFlow.sync`` in a meter that reads none of the attributes it copies."""


def _as_is(packet: Any, ffi: Any, flow: Any) -> Any:
    """Stands in for ``nfstream.flow.pythonize_packet`` in a meter that reads NFStream's C packets itself."""
    return packet


def _key_state(st: _State) -> tuple[Any, ...]:
    a, b = st.src, st.dst
    return (st.protocol, *(a + b if a <= b else b + a))

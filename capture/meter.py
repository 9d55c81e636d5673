"""Run NFStream with the CIC plugin over pcap files or a live interface and yield :class:`FlowRecord`.

:class:`PcapSource` reads one or more files as one capture (NFStream's multiple-file mode), flushes every
flow at the end and reports files whose structure breaks. :class:`LiveSource` captures on an interface;
the plugin's clock thread emits flows on a quiet link, and :meth:`LiveSource.stop` flushes every open flow
before the meter ends (see :mod:`tapwatch.capture.plugin`).
"""

from __future__ import annotations

import contextlib
import gc
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nfstream import NFStreamer
from nfstream import streamer as nfstream_streamer

from tapwatch.capture.bpf import bpf_error, check_bpf
from tapwatch.capture.cicflow import CicFlow
from tapwatch.capture.cid import community_id
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.plugin import CAPTURE_DELAY_MS, FLUSHED, IDLE_OR_END, CicPlugin, FlowResult, MeterConfig
from tapwatch.capture.source import MAX_CAPTURE_MS, PcapScan, check_interface, link_type_problem, probe_pcap, scan_pcap
from tapwatch.features.errors import BadInputError, TapwatchError
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord, make_flow_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CaptureConfig:
    """How flows are cut and named. Defaults follow CICFlowMeter, as the training data were cut.

    Parameters
    ----------
    sensor
        The sensor name written into every record.
    bpf_filter
        A BPF filter applied by libpcap.
    flow_timeout_s
        CICFlowMeter's flow timeout: a packet more than this after a flow's first packet starts a new flow.
    activity_timeout_s
        CICFlowMeter's activity timeout that splits active and idle periods.
    idle_timeout_s
        A flow with no packet for this long is closed (on the capture clock; live also on the wall clock).
    emit_single_packet_flows
        CICFlowMeter writes no one-packet flow (the corrected CSVs hold none); they are always counted, and
        emitted only when this is set (the sensor sets it for its aggregates and keeps them out of windows).
    termination_linger_s
        A TCP flow ready for termination (RST, or FINs both ways and the last ACK) takes later packets, as
        CICFlowMeter does, until a SYN or until no packet came for this long; then it is closed.
    buffer_mib
        Live: the kernel's capture buffer (libpcap's buffer size: the TPACKET ring), MiB; 0: libpcap's default
        (2 MiB). With the default, ``tapwatch run`` dropped 0.4-0.7% of the packets in the kernel under the lab's
        spoofed SYN flood; with 16 and 32 MiB, none (docs/bench/live.md). 64 MiB dropped none either, but with it
        some flows of a quiet link reached the meter seconds late (tests/netns/test_live_capture.py failed about
        one run in three; cause not found), so 16 MiB it is (``--capture-buffer``).
    values_in_meter
        Pcap files: the meter process computes each flow's feature values, for a reader with more to do than the
        meter (``detect``; see :attr:`~tapwatch.capture.plugin.FlowResult.values`).
    """

    sensor: str = field(default_factory=socket.gethostname)
    bpf_filter: str | None = None
    flow_timeout_s: int = 120
    activity_timeout_s: float = 5.0
    idle_timeout_s: int = 120
    emit_single_packet_flows: bool = False
    termination_linger_s: float = 2.0
    snaplen: int = 1536
    promiscuous: bool = True
    values_in_meter: bool = False
    buffer_mib: int = 16

    def meter(self, live: bool) -> MeterConfig:
        return MeterConfig(
            activity_timeout_us=int(self.activity_timeout_s * 1_000_000),
            idle_timeout_ms=self.idle_timeout_s * 1000,
            flow_timeout_ms=self.flow_timeout_s * 1000,
            termination_linger_ms=int(self.termination_linger_s * 1000),
            live=live,
            values_in_meter=self.values_in_meter,
        )

    def input_error(self, source: str, err: ValueError) -> BadInputError:
        """NFStream's error for ``source`` as one line; a filter libpcap refused names ``--bpf``, not the input."""
        if self.bpf_filter and "BPF" in str(err):
            return bpf_error(self.bpf_filter, str(err))
        return BadInputError(source, str(err))

    def streamer(self, source: Any, plugin: CicPlugin) -> NFStreamer:
        _bind_meters_to_their_reader()
        return NFStreamer(
            source=source,
            decode_tunnels=True,
            bpf_filter=self.bpf_filter,
            promiscuous_mode=self.promiscuous,
            snapshot_length=self.snaplen,
            socket_buffer_size=self.buffer_mib * 2**20,  # 0: libpcap's default (pcap files: unused)
            idle_timeout=self.idle_timeout_s,
            active_timeout=self.flow_timeout_s,
            accounting_mode=0,
            udps=[plugin],
            n_dissections=0,
            statistical_analysis=False,
            n_meters=1,  # one meter keeps flows in capture order; the plugin's live clock assumes it
            performance_report=0,
        )


def _bind_meters_to_their_reader() -> None:
    """Make every NFStream meter process end when the process that reads it dies.

    A meter is a daemon child, ended at its reader's normal exit; a reader killed with SIGKILL (the OOM killer, an
    operator, a supervisor that gave up waiting) left it running: live, still sniffing the interface beside the
    restarted sensor; offline, blocked for ever on its full queue. NFStream starts ``nfstream.streamer.meter_workflow``
    by that name, so the meter runs it through :func:`_meter_ended_with_reader`, which first starts a thread that
    waits for the reader's death (the sentinel multiprocessing gives every child: a pipe its parent holds open) and
    then ends the meter. Not ``PR_SET_PDEATHSIG``: it fires when the forking *thread* ends, and ``detect`` forks the
    meter from a thread that ends before the meter (see :class:`_Prefetch`).
    """
    if nfstream_streamer.meter_workflow is not _meter_ended_with_reader:
        _NFSTREAM_METER[0] = nfstream_streamer.meter_workflow
        nfstream_streamer.meter_workflow = _meter_ended_with_reader


_NFSTREAM_METER: list[Any] = [None]
METER_ORPHANED_EXIT = 3
"""The exit status of a meter that ended because its reader died."""


def _meter_ended_with_reader(*args: Any) -> Any:
    reader = multiprocessing.parent_process()
    if reader is not None:
        threading.Thread(target=_end_with, args=(reader.sentinel,), name="tapwatch-reader-watch", daemon=True).start()
    return _NFSTREAM_METER[0](*args)


def _end_with(sentinel: int) -> None:
    multiprocessing.connection.wait([sentinel])  # readable once the reader is gone (its end of the pipe closed)
    os._exit(METER_ORPHANED_EXIT)


class RecordBuilder:
    """Turn meter results into :class:`FlowRecord`: Community ID, flow id, counters."""

    def __init__(self, config: CaptureConfig, metrics: CaptureMetrics) -> None:
        self.config = config
        self.metrics = metrics
        self._seq = 0
        self._single_seq = 0
        self._flows_by_reason = {reason.value: metrics.flows.labels(reason=reason.value) for reason in ExpiryReason}
        self.out_of_time = 0
        """Flows left out because a time of theirs is one no output can hold (a corrupt pcap timestamp)."""

    def community_id(self, r: FlowResult) -> str:
        return community_id(r.protocol, r.src_ip, r.dst_ip, r.src_port, r.dst_port, r.icmp)

    def _next_seq(self, packets: int) -> int:
        """One-packet flows are numbered apart (negative): a flow of two packets or more gets the same id whether
        or not one-packet flows are emitted, so `capture` (which emits them for its aggregates) and `detect` name
        the same flow alike."""
        if packets < 2:
            self._single_seq -= 1
            return self._single_seq
        self._seq += 1
        return self._seq

    def build(self, r: FlowResult, capture_end_ms: int | None = None) -> FlowRecord | None:
        """Count the flow; return its record, or None for a one-packet flow (unless configured) or a flow whose
        times are impossible (NFStream keeps a corrupt timestamp, and every later one, since it never goes back)."""
        if not (0 <= r.first_ms <= MAX_CAPTURE_MS and 0 <= r.last_ms <= MAX_CAPTURE_MS):
            self.out_of_time += 1
            return None
        if r.reason == IDLE_OR_END:
            idle = capture_end_ms is not None and capture_end_ms - r.last_ms >= self.config.idle_timeout_s * 1000
            r = r._replace(reason=(ExpiryReason.IDLE if idle else ExpiryReason.END_OF_CAPTURE).value)
        m = self.metrics
        m.packets.inc(r.packets)
        m.bytes.inc(r.bytes)
        self._flows_by_reason[r.reason].inc()
        if r.packets < 2:
            m.single_packet.inc()
            if not self.config.emit_single_packet_flows:
                return None
        cid = self.community_id(r)
        meta = FlowMeta(
            flow_id=make_flow_id(self.config.sensor, cid, r.first_ms, self._next_seq(r.packets)),
            community_id=cid,
            src_ip=r.src_ip,
            src_port=r.src_port,
            dst_ip=r.dst_ip,
            dst_port=r.dst_port,
            protocol=r.protocol,
            first_seen_ms=r.first_ms,
            last_seen_ms=r.last_ms,
            packets=r.packets,
            bytes=r.bytes,
            expiry=ExpiryReason(r.reason),
            expired_at_ms=int(time.time() * 1000),
            sensor=self.config.sensor,
        )
        values = r.values if r.values is not None else CicFlow.restore(r.state).values()
        return FlowRecord(meta=meta, values=values)


class PcapSource:
    """Flows of one or more pcap/pcapng files read as one capture.

    Unusable files (missing, empty, not a capture) are refused at construction. The structure walk that
    finds truncation (:func:`scan_pcap`) runs in a thread beside NFStream, in the reading process, which
    mostly waits for the meter. After iteration, :attr:`problems` lists the files whose structure broke
    (truncated or corrupt), with how much was read; their readable part has been processed.
    """

    def __init__(self, paths: list[str], config: CaptureConfig, metrics: CaptureMetrics) -> None:
        if not paths:
            raise BadInputError("pcap", "no input file given")
        for p in paths:
            probe_pcap(p)
        check_bpf(config.bpf_filter)
        # A link type NFStream cannot decode would be read as 0 packets without a word: refuse the file. With
        # several files the others are read and the refused ones reported (exit 2), as for a truncated file.
        refused = {str(p): why for p in paths if (why := link_type_problem(str(p))) is not None}
        if len(refused) == len(paths):
            first = str(paths[0])
            more = f" (and {len(paths) - 1} more files like it)" if len(paths) > 1 else ""
            raise BadInputError(first, refused[first] + more)
        self.paths = [str(p) for p in paths if str(p) not in refused]
        self.config = config
        self.metrics = metrics
        self.builder = RecordBuilder(config, metrics)
        self.refused = [PcapScan(p, 0, 0, os.path.getsize(p), why, read=False) for p, why in refused.items()]
        self.problems: list[PcapScan] = list(self.refused)
        self._scans: Future[list[PcapScan]] | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._started: _Prefetch | None = None

    @property
    def scans(self) -> list[PcapScan]:
        """The structure walks of every file (waits for them)."""
        if self._scans is None:
            return [scan_pcap(p) for p in self.paths]
        return self._scans.result()

    def start(self) -> None:
        """Begin reading now: the structure walk and NFStream's meter start, and a thread keeps the first flows.

        ``detect`` calls this before it loads the model, so that the meter process (forked here, while this
        process is idle: :meth:`start` returns once it runs) reads packets during the second that loading and
        building the stages take. Iterating without :meth:`start` starts at the first ``next``.
        """
        if self._started is not None:
            return
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tapwatch-scan")
        self._scans = self._pool.submit(lambda: [scan_pcap(p) for p in self.paths])
        plugin = CicPlugin(self.config.meter(live=False))
        source: Any = self.paths[0] if len(self.paths) == 1 else self.paths
        self._started = _Prefetch(iter(self.config.streamer(source, plugin)))

    def close(self) -> None:
        """Stop reading: end the meter if it still runs and the structure walk (after an error elsewhere, before
        or during the iteration; after a complete iteration there is nothing left to do)."""
        if self._started is not None:
            self._started.close()
        if self._pool is not None:
            self._pool.shutdown()

    def __iter__(self) -> Iterator[FlowRecord]:
        try:
            self.start()
            assert self._started is not None
            end_ms: int | None = None
            read = 0
            try:
                for nflow in self._started.take():
                    read += len(nflow.udps.results)
                    for result in nflow.udps.results:
                        if result.reason == IDLE_OR_END and end_ms is None:
                            end_ms = max(s.last_ms for s in self.scans)  # the first such flow waits for the walk
                        record = self.builder.build(result, end_ms)
                        if record is not None:
                            yield record
            except ValueError as err:  # NFStream reports libpcap errors (bad BPF filter, unreadable file)
                raise self.config.input_error(",".join(self.paths), err) from err
            if code := self._started.died():
                raise MeterDied(code, read)
            self.metrics.read_packets.inc(sum(s.packets for s in self.scans))
        finally:
            if self._pool is not None:
                self._pool.shutdown()
        self.problems = self.refused + [s for s in self.scans if s.problem is not None]
        if self.builder.out_of_time and len(self.problems) == len(self.refused):  # no walk explained them
            self.problems.append(self._out_of_time())
        for s in self.problems:
            log.info("pcap %s: %s", s.path, s.problem)  # the command prints it as its error line

    def _out_of_time(self) -> PcapScan:
        scans = self.scans
        words = (f"corrupt: {self.builder.out_of_time} flows had timestamps before 1970 or after the year 9999 and "
                 "were left out")  # fmt: skip
        return PcapScan(", ".join(self.paths), sum(s.packets for s in scans), 0, sum(s.size for s in scans), words)


class MeterDied(TapwatchError):
    """NFStream's meter process ended without finishing the capture (killed, or a crash in it)."""

    def __init__(self, exitcode: int, flows: int) -> None:
        how = f"was killed by signal {-exitcode}" if exitcode < 0 else f"exited with status {exitcode}"
        super().__init__(f"the meter process {how} before the end of the capture; {flows} flows were read")


class _Prefetch:
    """Iterate ``items`` in a thread until :meth:`take` is called, then hand the rest over to the caller.

    NFStream forks its meter on the first ``next``; the thread does that at once, and :class:`_Prefetch`
    returns from its constructor only when the meter process exists (or the iteration ended or failed), so
    the fork never races the caller's own work. The items read before :meth:`take` are kept in order (a few
    thousand flows per second of start-up at most); a failure is raised by :meth:`take`.
    """

    FORK_WAIT_S = 5.0
    DEATH_GRACE_S = 0.5

    def __init__(self, items: Iterator[Any]) -> None:
        self.items = items
        self.kept: list[Any] = []
        self.error: BaseException | None = None
        self.finished = False
        self.taken = threading.Event()
        self.ended = threading.Event()
        """Set when the meter was terminated on purpose (by NFStream or :meth:`close`)."""
        # The forked meter must never run a finalizer of this process's garbage (a queue or a lock of an earlier
        # run, copied in whatever state another thread held it): freeze every object, garbage included, so that the
        # child's garbage collector never visits objects it did not make (gc.freeze, as pre-fork servers do; no
        # gc.collect first: a frozen cycle is as harmless, and collecting took 50 ms of detect's start).
        gc.freeze()
        self.thread = threading.Thread(target=self._run, name="tapwatch-prefetch", daemon=True)
        self.thread.start()
        self.meter: Any = None
        """NFStream's meter process, once forked."""
        try:
            deadline = time.monotonic() + self.FORK_WAIT_S
            while self.thread.is_alive() and time.monotonic() < deadline:
                # NFStream's own list of its meters (a meter that died at once is no active child any more)
                frame = getattr(self.items, "gi_frame", None)
                meters = frame.f_locals.get("meters") if frame is not None else None
                forked = [p for p in meters or [] if p.pid is not None]  # this streamer's own, so never an old one
                if forked:
                    self.meter = forked[0]
                    self._mark_own_ends(self.meter)
                    threading.Thread(target=self._watch, name="tapwatch-meter-watch", daemon=True).start()
                    break
                time.sleep(0.002)
        finally:
            gc.unfreeze()

    def _mark_own_ends(self, meter: Any) -> None:
        """Remember when the meter was ended on purpose (NFStream terminates its meters when one reports an error,
        and :meth:`close` does): such an end is no death to report, and NFStream is closing the channel then."""
        terminate = meter.terminate

        def ended_on_purpose() -> None:
            self.ended.set()
            terminate()

        meter.terminate = ended_on_purpose

    def close(self) -> None:
        """End the meter if it still runs (the reader gave up before the end: nobody would drain its queue)."""
        if self.meter is not None and self.meter.is_alive():
            self.meter.terminate()
            self.meter.join(5.0)

    def _watch(self) -> None:
        """A meter that dies (killed, or a crash) sends NFStream no end message, and NFStream would wait for
        it for ever: wake NFStream's reading loop with the end message the meter would have sent. The reader
        then raises :class:`MeterDied` (see :meth:`died`).

        Not when the meter was ended on purpose: NFStream terminates a meter that reported an error (the meter's
        exit code is then -15 about one time in four) and goes on to close the channel; a message put then would
        start the channel's feeder thread after its close, and the process would wait for it at exit for ever
        (a fuzzed capture refused by libpcap timed out so).
        """
        self.meter.join()
        if self.ended.is_set() or not self.meter.exitcode:
            return
        # NFStream may have ended it before the wrapper of terminate was in place (an error reported in the
        # meter's first milliseconds): give its loop the time to close the channel and end, then look again.
        time.sleep(self.DEATH_GRACE_S)
        frame = getattr(self.items, "gi_frame", None)
        if self.ended.is_set() or frame is None or frame.f_locals.get("child_error") is not None:
            return
        channel = frame.f_locals.get("channel")
        if channel is not None and not getattr(channel, "_closed", False):
            with contextlib.suppress(ValueError):  # closed meanwhile: the reading loop has ended anyway
                channel.put(None)

    def died(self) -> int:
        """The meter's exit code if it ended abnormally (negative: the signal), else 0."""
        if self.meter is None or self.ended.is_set():
            return 0
        self.meter.join(5.0)
        return int(self.meter.exitcode or 0)

    def _run(self) -> None:
        try:
            for item in self.items:
                self.kept.append(item)
                if self.taken.is_set():
                    return
            self.finished = True
        except BaseException as err:  # raised again in the consumer's thread by take()
            self.error = err

    def take(self) -> Iterator[Any]:
        self.taken.set()
        self.thread.join()
        if self.error is not None:
            raise self.error
        kept, self.kept = self.kept, []
        yield from kept
        if not self.finished:
            yield from self.items


class LiveSource:
    """Flows captured live on one interface, until :meth:`stop`.

    Parameters
    ----------
    interface
        The interface to capture on (needs CAP_NET_RAW).
    config
        Timeouts, filter, sensor name.
    metrics
        Counters to update.
    flush_timeout_s
        How long :meth:`stop` waits for the meter to flush its open flows.
    """

    def __init__(
        self, interface: str, config: CaptureConfig, metrics: CaptureMetrics, flush_timeout_s: float = 10.0
    ) -> None:
        check_interface(interface)
        check_bpf(config.bpf_filter)
        self.interface = interface
        self.config = config
        self.metrics = metrics
        self.builder = RecordBuilder(config, metrics)
        self.flush_timeout_s = flush_timeout_s
        ctx = multiprocessing.get_context("fork")  # NFStream's meters are forked from this process
        # Bounded: when the reader falls behind, the meter blocks and the kernel drops (and counts) packets.
        self._results: Any = ctx.Queue(maxsize=32_767)
        self._stop_meter: Any = ctx.Event()
        self._stopping = threading.Event()
        self._ended = threading.Event()
        self._error: BaseException | None = None
        self._it: Any = None
        self.running = threading.Event()
        self._kernel_drops = 0
        self._read_packets = 0

    def stop(self) -> None:
        """Ask for a stop: :meth:`records` flushes every open flow, then ends."""
        self._stopping.set()

    def _drain(self) -> None:
        """Consume NFStream's own output; in live mode every result arrives on the plugin's queue."""
        try:
            for _ in self._it:
                pass
        except BaseException as err:  # a failing capture must reach the reader, not die in a thread
            self._error = err
        finally:
            self._ended.set()

    def records(self) -> Iterator[FlowRecord]:
        plugin = CicPlugin(self.config.meter(live=True), results=self._results, stop=self._stop_meter)
        try:
            streamer = self.config.streamer(self.interface, plugin)
        except ValueError as err:
            raise self.config.input_error(self.interface, err) from err
        self._it = iter(streamer)
        threading.Thread(target=self._drain, name="tapwatch-nfstream", daemon=True).start()
        self.running.set()
        flush_at: float | None = None
        deadline: float | None = None
        next_poll = 0.0
        while True:
            now = time.monotonic()
            if now >= next_poll:
                self._poll_kernel_drops()
                next_poll = now + 1.0
            if self._stopping.is_set() and flush_at is None:
                # libpcap hands packets to NFStream in blocks retired after up to 1 s: wait for the last one.
                flush_at = now + CAPTURE_DELAY_MS / 1000
            if flush_at is not None and deadline is None and now >= flush_at:
                self._stop_meter.set()
                deadline = now + self.flush_timeout_s
            try:
                item = self._results.get(timeout=0.2)
            except queue.Empty:
                if self._ended.is_set() and self._error is not None:
                    raise BadInputError(self.interface, str(self._error)) from self._error
                if deadline is not None and time.monotonic() > deadline:
                    log.info("live %s: meter sent no flush (it had seen no packet)", self.interface)
                    break
                continue
            if item == FLUSHED:
                break
            record = self.builder.build(item)
            if record is not None:
                yield record
        self._reap_meters()

    def _nfstream_locals(self) -> dict[str, Any]:
        """NFStream 6.6.0 keeps its meters and drop counters in the generator's locals only."""
        frame = self._it.gi_frame if self._it is not None else None
        return dict(frame.f_locals) if frame is not None else {}

    def _poll_kernel_drops(self) -> None:
        """NFStream's per-meter counters (kernel drops, packets processed, packets ignored as not IP), refreshed
        by its meter about once a second, into the sensor's counters."""
        perf = self._nfstream_locals().get("performances") or []
        drops = sum(int(p[0].value) for p in perf)
        if drops > self._kernel_drops:
            self.metrics.kernel_drops.inc(drops - self._kernel_drops)
            self._kernel_drops = drops
        read = sum(int(p[1].value) + int(p[2].value) for p in perf)
        if read > self._read_packets:
            self.metrics.read_packets.inc(read - self._read_packets)
            self._read_packets = read

    def _reap_meters(self) -> None:
        """The meter ends itself after its flush; terminate it only if it did not.

        NFStream's own reader thread stays blocked on its channel (a daemon thread): putting into that
        channel could block forever on a lock the ended meter held, so it is left alone.
        """
        for meter in self._nfstream_locals().get("meters", []):
            meter.join(timeout=5)
            if meter.is_alive():
                meter.terminate()
                meter.join(timeout=5)
        self._results.cancel_join_thread()

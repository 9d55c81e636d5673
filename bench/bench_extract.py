#!/usr/bin/env python3
"""Throughput of tapwatch's flow extractor against bare NFStream, on a pcap of real namespace traffic.

Run it as root with the project's interpreter (tapwatch installed)::

    python bench/bench_extract.py [--repeat 3] [--profile] [--rebuild | --pcap PATH]

Without ``--pcap`` it uses ``bench/out/bench_extract.pcap`` (gitignored), building it first when missing or
with ``--rebuild``: :func:`lab.traffic.bulk` makes HTTP downloads, DNS queries and a full-range
SYN scan between two fresh network namespaces, captured whole-frame by tcpdump on the client's veth (nothing
leaves the namespaces). A built pcap must hold at least :data:`MIN_PACKETS` packets.

Every measured run is a fresh interpreter (``--child``), so peak memory is per run: the reading process's
VmHWM, and ``RUSAGE_CHILDREN`` for NFStream's forked meter (its only child, reaped when the streamer ends).
The runs alternate and repeat; the report gives medians with [min–max]. Packets/s divide the pcap's packet
records by the wall time from building the source to the end of its iteration (imports excluded). The
Markdown report is printed and written to ``bench/out/bench_extract.md``.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import importlib
import json
import logging
import multiprocessing.util
import os
import platform
import pstats
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any

log = logging.getLogger("bench_extract")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # lab/ runs from the repository; it is not installed with the wheel
OUT = REPO / "bench" / "out"
DEFAULT_PCAP = OUT / "bench_extract.pcap"
MIN_PACKETS = 1_000_000
MIN_FLOWS = 20_000
# A 16 KiB download is about 34 frames at MTU 1500, so 32,000 downloads give about 1.08 M packets; the 3,200
# DNS queries and the 65,535-port scan add about 140 k packets and 68 k flows.
BULK_FLOWS = 32_000
TARGET = 0.5
CHILD_TIMEOUT_S = 900
RedisCost = dict[str, Any]


class Run(str, Enum):
    """One measured configuration; the value is the ``--child`` argument."""

    BARE = "bare"
    TAPWATCH = "tapwatch"
    NOOP = "noop"
    WINDOWS = "windows"
    NO_PLUGIN = "no-plugin"

    @property
    def heading(self) -> str:
        return {
            Run.BARE: "(1) bare NFStream (statistical_analysis, nDPI)",
            Run.TAPWATCH: "(2) tapwatch extractor, all 82 features",
            Run.NOOP: "(3) NFStream + no-op NFPlugin, tapwatch's config",
            Run.WINDOWS: "(4) tapwatch to windows (Windower + encode)",
            Run.NO_PLUGIN: "(5) NFStream, tapwatch's config, no plugin",
        }[self]


Results = dict[Run, list[dict[str, Any]]]


# -- the pcap ---------------------------------------------------------------------------------------
def build_pcap(path: Path, flows: int) -> None:
    """Generate traffic between two fresh namespaces and capture it into ``path`` (through a .tmp file)."""
    from lab.netns import netns_problem, ns_pair
    from lab.traffic import bulk, capture
    from tapwatch.capture.source import scan_pcap

    problem = netns_problem()
    if problem is not None:
        raise SystemExit(f"cannot build the benchmark pcap: network namespaces unusable: {problem}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    start = time.monotonic()
    try:
        with ns_pair() as pair, capture(pair, pair.client, tmp) as stats:
            bulk(pair, flows)
        packets = scan_pcap(str(tmp)).packets
        log.info("built %s in %.0f s: %s packets, %s dropped by the kernel",
                 path, time.monotonic() - start, stats.captured, stats.dropped)  # fmt: skip
        if packets < MIN_PACKETS:
            raise SystemExit(f"{tmp}: only {packets:,} packets, fewer than {MIN_PACKETS:,}; raise --bulk-flows")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def pcap_facts(path: Path) -> dict[str, Any]:
    from tapwatch.capture.source import scan_pcap

    scan = scan_pcap(str(path))
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 22):
            digest.update(chunk)
    return {"path": str(path), "packets": scan.packets, "bytes": scan.size, "sha256": digest.hexdigest()[:12]}


# -- measured runs (each in its own interpreter) ----------------------------------------------------
def _nfstream_counts(streamer: Any) -> dict[str, Any]:
    flows = packets = 0
    for flow in streamer:
        flows += 1
        packets += flow.bidirectional_packets
    return {"flows": flows, "packets": packets, "records": flows}


def _tapwatch_streamer(pcap: str, plugin: Any) -> Any:
    from tapwatch.capture.meter import CaptureConfig

    return CaptureConfig(sensor="bench").streamer(pcap, plugin)


def _counters(metrics: Any) -> dict[str, Any]:
    from tapwatch.features.schema import ExpiryReason

    get = metrics.registry.get_sample_value
    by_reason = {r.value: int(get("tapwatch_capture_flows_total", {"reason": r.value}) or 0) for r in ExpiryReason}
    single = int(get("tapwatch_capture_single_packet_flows_total") or 0)
    packets = int(get("tapwatch_capture_packets_total") or 0)
    return {"flows": sum(by_reason.values()), "packets": packets, "by_reason": by_reason, "single": single}


def _tapwatch_records(pcap: str) -> tuple[Iterator[Any], Any]:
    from prometheus_client import CollectorRegistry

    from tapwatch.capture.meter import CaptureConfig, PcapSource
    from tapwatch.capture.metrics import CaptureMetrics

    metrics = CaptureMetrics(CollectorRegistry())
    return iter(PcapSource([pcap], CaptureConfig(sensor="bench"), metrics)), metrics


def _entry_bytes(fields: dict[str, str | bytes]) -> int:
    return sum(len(k.encode()) + len(v if isinstance(v, bytes) else v.encode()) for k, v in fields.items())


def _windows(records: Iterator[Any]) -> dict[str, Any]:
    from tapwatch.features.card import identity_card
    from tapwatch.features.window import Windower

    windower, n, size, busy = Windower(identity_card(10)), 0, 0, 0.0
    for record in records:
        t = time.perf_counter()
        fields = windower.add(record).encode()
        busy += time.perf_counter() - t
        size += _entry_bytes(fields)
        n += 1
    return {"records": n, "entry_bytes": size / max(n, 1), "window_us": 1e6 * busy / max(n, 1)}


def run_counts(run: Run, pcap: str) -> dict[str, Any]:
    """Iterate one configuration to the end of the pcap; return what it counted."""
    from nfstream import NFPlugin, NFStreamer

    if run is Run.BARE:
        return _nfstream_counts(NFStreamer(source=pcap, statistical_analysis=True, n_meters=1))
    if run is Run.NOOP:
        return _nfstream_counts(_tapwatch_streamer(pcap, NFPlugin()))
    if run is Run.NO_PLUGIN:
        streamer = _tapwatch_streamer(pcap, NFPlugin())
        streamer.udps = None
        return _nfstream_counts(streamer)
    records, metrics = _tapwatch_records(pcap)
    if run is Run.TAPWATCH:  # counted, not kept: a sensor streams its records
        return {"records": sum(1 for _ in records), **_counters(metrics)}
    return {**_windows(records), **_counters(metrics)}


def _peak_rss_mb() -> float:
    """This process's VmHWM. Not RUSAGE_SELF: subprocess starts children with vfork + exec, and the kernel
    then carries the launching process's peak RSS into the child's ``ru_maxrss``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _loaded_code() -> str:
    """Digest of the tapwatch source files this process imported (the tree may change while the bench runs)."""
    files = sorted({str(getattr(m, "__file__", "")) for n, m in sys.modules.items() if n.startswith("tapwatch.")})
    digest = hashlib.sha256()
    for name in files:
        if name:
            digest.update(name.encode() + Path(name).read_bytes())
    return digest.hexdigest()[:12]


def child_main(run: Run, pcap: str) -> None:
    """Measure one run and print one JSON line (the parent reads the last line of stdout)."""
    # Imports happen before the clock starts; tapwatch's modules only where the run uses them.
    modules = ["nfstream"] if run is Run.BARE else ["nfstream", "tapwatch.capture.meter", "prometheus_client"]
    for name in modules + (["tapwatch.features.window", "tapwatch.features.card"] if run is Run.WINDOWS else []):
        importlib.import_module(name)
    code = _loaded_code()
    start = time.perf_counter()
    counts = run_counts(run, pcap)
    seconds = time.perf_counter() - start
    me, meter = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = {"run": run.value, "seconds": seconds, "code": code, "rss_self_mb": _peak_rss_mb(),
           "rss_meter_mb": meter.ru_maxrss / 1024, "cpu_self_s": me.ru_utime + me.ru_stime,
           "cpu_meter_s": meter.ru_utime + meter.ru_stime}  # fmt: skip
    print(json.dumps({**out, **counts}), flush=True)


def spawn(args: list[str]) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=CHILD_TIMEOUT_S, check=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def measure(runs: list[Run], pcap: str, repeat: int) -> Results:
    """Run every configuration ``repeat`` times, rotating the order each round."""
    results: Results = {run: [] for run in runs}
    for i in range(repeat):
        for run in runs[i % len(runs) :] + runs[: i % len(runs)]:
            r = spawn(["--child", run.value, "--pcap", pcap])
            log.info("round %d %-9s %6.1f s %9.0f pkt/s", i + 1, run.value, r["seconds"], r["packets"] / r["seconds"])
            results[run].append(r)
    return results


# -- window entries in Redis (optional) -------------------------------------------------------------
def redis_child(pcap: str, port: int, n: int) -> None:
    """XADD the first ``n`` window entries to a private Redis; print its memory cost per entry."""
    import redis

    from tapwatch.features.card import identity_card
    from tapwatch.features.window import Windower

    client = redis.Redis(host="127.0.0.1", port=port)
    before = int(client.info("memory")["used_memory"])
    records, _ = _tapwatch_records(pcap)
    windower, pipe, added = Windower(identity_card(10)), client.pipeline(transaction=False), 0
    for record in records:
        pipe.xadd("bench:windows", windower.add(record).encode())
        added += 1
        if added % 500 == 0:
            pipe.execute()
        if added == n:
            break  # the rest of the capture is not needed; the meter is a daemon and ends with us
    pipe.execute()
    usage = int(client.memory_usage("bench:windows", samples=0) or 0)
    after = int(client.info("memory")["used_memory"])
    print(json.dumps({"entries": added, "memory_usage": usage / added, "used_memory": (after - before) / added}))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _redis_up(proc: subprocess.Popen[bytes], port: int, timeout_s: float = 10.0) -> bool:
    import redis

    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            return bool(redis.Redis(host="127.0.0.1", port=port).ping())
        except redis.ConnectionError:
            time.sleep(0.05)
    return False


def redis_cost(pcap: str, n: int) -> RedisCost | None:
    """Start a private redis-server on a free loopback port (no persistence), measure, stop it by PID."""
    binary = shutil.which("redis-server")
    if binary is None or n <= 0:
        return None
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
                "--dir", tmp, "--daemonize", "no"]  # fmt: skip
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            if not _redis_up(proc, port):
                log.warning("redis-server did not start on port %s; no Redis measurement", port)
                return None
            return spawn(["--child-redis", str(port), "--redis-entries", str(n), "--pcap", pcap])
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# -- profile ----------------------------------------------------------------------------------------
def profile_child(pcap: str, out_dir: str) -> None:
    """Run (2) under cProfile: the reading process and, from its first flow on, the meter process."""
    from prometheus_client import CollectorRegistry

    from tapwatch.capture.meter import CaptureConfig, RecordBuilder
    from tapwatch.capture.metrics import CaptureMetrics
    from tapwatch.capture.plugin import CicPlugin
    from tapwatch.capture.source import scan_pcap

    class ProfiledCic(CicPlugin):  # type: ignore[misc]
        """Starts a profiler in the meter process at its first flow and writes it when that process exits."""

        def on_init(self, packet: Any, flow: Any) -> None:
            if getattr(self, "prof", None) is None:
                self.prof = cProfile.Profile()
                self.prof.enable()
                # multiprocessing runs its finalizers before the forked meter's os._exit
                multiprocessing.util.Finalize(None, self.dump, exitpriority=100)
            super().on_init(packet, flow)

        def dump(self) -> None:
            self.prof.disable()
            self.prof.dump_stats(os.path.join(out_dir, "profile-meter.pstats"))

    config = CaptureConfig(sensor="bench")
    builder = RecordBuilder(config, CaptureMetrics(CollectorRegistry()))
    end_ms = scan_pcap(pcap).last_ms
    prof = cProfile.Profile()
    prof.enable()
    for nflow in config.streamer(pcap, ProfiledCic(config.meter(live=False))):
        for result in nflow.udps.results:
            builder.build(result, end_ms)
    prof.disable()
    prof.dump_stats(os.path.join(out_dir, "profile-reader.pstats"))
    print(json.dumps({"ok": True}))


_TAPWATCH_FILES = (
    ("capture/plugin.py", "tapwatch plugin.py"),
    ("capture/cicflow.py", "tapwatch cicflow.py"),
    ("capture/meter.py", "tapwatch meter.py (records)"),
    ("features/schema.py", "tapwatch schema.py"),
)
_WAITS = (  # blocking calls: the meter's put on a full queue, the reader's get on an empty one
    "<method 'acquire' of '_multiprocessing.SemLock' objects>",
    "<method 'acquire' of '_thread.lock' objects>",
    "<built-in method posix.read>",
    "<built-in method select.poll>",
)


def _group(path: str, func: str) -> str:
    if "/nfstream/" in path:
        return "nfstream (Python meter, NFlow.sync, pythonize_packet)"
    for tail, name in _TAPWATCH_FILES:
        if path.endswith(tail):
            return name
    for key in ("communityid", "prometheus_client", "multiprocessing", "pickle", "cffi"):
        if key in path or key in func:
            return key
    return "C (libpcap and NFStream's engine via cffi), built-ins" if path == "~" else "other Python"


def profile_section(path: Path, title: str, top: int = 8) -> list[str]:
    """Own time by area and the top functions, as shares of the time not spent blocked on the queue."""
    raw: dict[Any, Any] = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    waits = sum(v[2] for k, v in raw.items() if k[2] in _WAITS)
    work = sum(v[2] for k, v in raw.items() if k[2] not in _WAITS) or 1.0
    groups: Counter[str] = Counter()
    for (file, _, func), (_, _, tt, _, _) in raw.items():
        if func not in _WAITS:
            groups[_group(file, func)] += tt
    lines = [f"**{title}**: {work:.1f} s working, {waits:.1f} s blocked on NFStream's queue (under cProfile)", ""]
    lines += ["| where | own s | share |", "|---|---:|---:|"]
    lines += [f"| {g} | {s:.1f} | {100 * s / work:.0f}% |" for g, s in groups.most_common() if s >= 0.005 * work]
    lines += ["", "| top functions | calls | own s | share |", "|---|---:|---:|---:|"]
    ranked = sorted((kv for kv in raw.items() if kv[0][2] not in _WAITS), key=lambda kv: -kv[1][2])[:top]
    for (file, line, func), (_, nc, tt, _, _) in ranked:
        where = f"{'/'.join(Path(file).parts[-2:])}:{line} {func}" if file != "~" else func
        lines.append(f"| `{where}` | {nc:,} | {tt:.1f} | {100 * tt / work:.0f}% |")
    return [*lines, ""]


def _tcp_packet(t_ms: int, direction: int, syn: int = 0) -> Any:
    """An NFStream-shaped packet (the namedtuple plugins get): a 1,448-byte TCP segment, ACK or SYN."""
    from nfstream.flow import nf_packet

    flags = 0x02 if syn else 0x10
    ip = bytes([0x45]) + bytes(19) + bytes(13) + bytes([flags, 0x01, 0xF6]) + bytes(16 + 1448)
    ends = (("10.211.0.1", 40000), ("10.211.0.2", 8080))
    (sip, sport), (dip, dport) = ends if direction == 0 else ends[::-1]
    return nf_packet(time=t_ms, delta_time=1, direction=direction, raw_size=1514, ip_size=1500, transport_size=1480,
                     payload_size=1448, src_ip=sip, src_mac="", src_oui="", dst_ip=dip, dst_mac="", dst_oui="",
                     src_port=sport, dst_port=dport, protocol=6, vlan_id=0, ip_version=4, ip_packet=ip, syn=syn,
                     cwr=0, ece=0, urg=0, ack=1 - syn, psh=0, rst=0, fin=0, tunnel_id=0)  # fmt: skip


def _per_call_us(fn: Any, items: list[Any], rounds: int = 3) -> float:
    """Best of ``rounds`` (as timeit reports): other jobs on a shared machine only ever add time."""
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for item in items:
            fn(item)
        best = min(best, time.perf_counter() - start)
    return 1e6 * best / len(items)


def micro_lines(n: int = 100_000) -> list[str]:
    """tapwatch's per-packet and per-flow code fed in-process without NFStream, timed without a profiler."""
    from types import SimpleNamespace

    from prometheus_client import CollectorRegistry

    from tapwatch.capture.cicflow import CicFlow
    from tapwatch.capture.meter import CaptureConfig, RecordBuilder
    from tapwatch.capture.metrics import CaptureMetrics
    from tapwatch.capture.plugin import IDLE_OR_END, CicPlugin, FlowResult, MeterConfig, decode

    packets = [_tcp_packet(1_000 + i, i % 2) for i in range(n)]
    plugin, flow = CicPlugin(MeterConfig()), SimpleNamespace(udps=SimpleNamespace(), expiration_id=0)
    plugin.on_init(_tcp_packet(999, 0, syn=1), flow)
    cic = CicFlow(6, 0, True, 0, 32, 0x02, 502)
    per_flow = list(range(n // 20))
    result = FlowResult("10.211.0.1", 40000, "10.211.0.2", 8080, 6, 0, 1, 34, 30_000, IDLE_OR_END, cic.snapshot())
    builder = RecordBuilder(CaptureConfig(sensor="bench"), CaptureMetrics(CollectorRegistry()))
    steps = [
        ("`CicPlugin.on_update` (per packet; includes the next two)", "meter",
         _per_call_us(lambda p: plugin.on_update(p, flow), packets)),
        ("`decode` (per packet)", "meter", _per_call_us(decode, packets)),
        ("`CicFlow.add` (per packet)", "meter",
         _per_call_us(lambda i: cic.add(1_000 * i, i % 2 == 0, 1448, 32, 0x10, 502), list(range(1, n + 1)))),
        ("`CicFlow.values` (per flow)", "meter", _per_call_us(lambda _: cic.values(), per_flow)),
        ("`RecordBuilder.build` (per flow: Community ID, flow id, counters)", "reader",
         _per_call_us(lambda _: builder.build(result, 2), per_flow)),
    ]  # fmt: skip
    lines = ["**tapwatch's code alone** (in-process, synthetic NFStream-shaped 1,448-byte TCP segments, no profiler, "
             "best of 3)", "", "| step | µs per call | process |", "|---|---:|---|"]  # fmt: skip
    return [*lines, *(f"| {what} | {us:.2f} | {where} |" for what, where, us in steps), ""]


# -- report -----------------------------------------------------------------------------------------
def machine_facts() -> str:
    import nfstream

    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor() or "unknown")  # fmt: skip
    return (f"{cpu}, {os.cpu_count()} cores ({len(os.sched_getaffinity(0))} usable), Linux {platform.release()}, "
            f"Python {platform.python_version()}, NFStream {nfstream.__version__}")  # fmt: skip


def _med(rs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in rs))


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}–{format(max(values), fmt)}]"


def run_row(run: Run, rs: list[dict[str, Any]], packets: int) -> str:
    secs = [r["seconds"] for r in rs]
    cells = [run.heading, _spread(secs, ".1f"), _spread([packets / s for s in secs], ",.0f"),
             _spread([r["flows"] / r["seconds"] for r in rs], ",.0f"), f"{rs[0]['flows']:,}", f"{rs[0]['records']:,}",
             f"{max(r['rss_self_mb'] for r in rs):.0f} / {max(r['rss_meter_mb'] for r in rs):.0f}",
             f"{_med(rs, 'cpu_self_s'):.1f} / {_med(rs, 'cpu_meter_s'):.1f}"]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


_STEPS = (
    (Run.BARE, None, "(1) bare NFStream (statistical_analysis, nDPI), for reference"),
    (Run.NO_PLUGIN, None, "(5) NFStream, tapwatch's config (no nDPI, no statistics), no plugin"),
    (Run.NOOP, Run.NO_PLUGIN, "(3) + any NFPlugin: NFStream's NFlow.sync and pythonize_packet per packet"),
    (Run.TAPWATCH, Run.NOOP, "(2) + tapwatch's own work: CicPlugin, CicFlow, records"),
    (Run.WINDOWS, Run.TAPWATCH, "(4) + Windower.add and WindowEntry.encode"),
)


def cost_lines(results: Results, packets: int) -> list[str]:
    """Wall and meter CPU time per packet, and the increment from one configuration to the next (medians)."""

    def us(run: Run | None, key: str) -> float | None:
        return 1e6 * _med(results[run], key) / packets if run in results else None

    lines = ["| configuration | wall µs/packet | increment | meter CPU µs/packet | increment |"]
    lines.append("|---|---:|---:|---:|---:|")
    for run, base, text in _STEPS:
        if run not in results:
            continue
        cells = [text]
        for key in ("seconds", "cpu_meter_s"):
            now, prev = us(run, key), us(base, key)
            cells += [f"{now:.2f}", f"{now - prev:+.2f}" if now is not None and prev is not None else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def code_line(results: Results, extra: dict[str, Any]) -> str:
    """The commit, and whether each configuration loaded the same tapwatch sources in every repetition."""
    text = f"commit {extra['commit']}"
    if extra["commit_after"] != extra["commit"]:
        text += f" (HEAD was {extra['commit_after']} at the end)"
    changed = [run.value for run, rs in results.items() if len({r["code"] for r in rs}) > 1]
    if changed:
        return text + f"; **the loaded tapwatch sources changed between repetitions of {', '.join(changed)}**"
    return text + "; every repetition of a run loaded the same tapwatch sources (sha256 checked)"


def headline(facts: dict[str, Any], results: Results, extra: dict[str, Any]) -> list[str]:
    nflows = results[Run.BARE][0]["flows"]
    return [
        "## tapwatch extractor benchmark", "",
        f"- Machine: {extra['machine']}",
        f"- tapwatch: {code_line(results, extra)}",
        f"- Load average (1/5/15 min): before {extra['load_before']}, after {extra['load_after']} "
        "(the machine is shared; other jobs may have run)",
        f"- Pcap: `{facts['path']}`: {facts['packets']:,} packets, {nflows:,} flows (NFStream), "
        f"{facts['bytes'] / 1e6:,.1f} MB, sha256 {facts['sha256']}…",
        f"- {extra['repeat']} alternated runs of each, every run a fresh interpreter; median [min–max]. Packets/s "
        "= pcap packets / wall s; flows/s = flows closed / wall s. Peak RSS: reading process (VmHWM) / NFStream's "
        "meter process (forked, so it includes the reader's pages at fork). CPU s: reader / meter.", "",
    ]  # fmt: skip


def render(facts: dict[str, Any], results: Results, extra: dict[str, Any]) -> str:
    packets = facts["packets"]
    bare, tap = results[Run.BARE], results[Run.TAPWATCH]
    ratio = _med(bare, "seconds") / _med(tap, "seconds")  # = (packets / tap s) / (packets / bare s)
    cpu_ratio = _med(bare, "cpu_meter_s") / _med(tap, "cpu_meter_s")
    tw = tap[0]
    reasons = ", ".join(f"{k} {v:,}" for k, v in tw["by_reason"].items() if v)
    lines = [
        *headline(facts, results, extra),
        "| run | seconds | packets/s | flows/s | flows closed | records out | peak RSS MB | CPU s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(run_row(run, rs, packets) for run, rs in results.items()), "",
        f"**Ratio tapwatch / bare NFStream packets/s: {ratio:.2f} → {'PASS' if ratio >= TARGET else 'MISS'}** "
        f"(target ≥ {TARGET:.2f}). On meter CPU time, which other jobs disturb less: {cpu_ratio:.2f}.", "",
        f"tapwatch counters: packets {tw['packets']:,}; flows closed {tw['flows']:,} ({reasons}); one-packet flows "
        f"counted, not emitted: {tw['single']:,}; records emitted {tw['records']:,}. NFStream ends flows on timeouts "
        "only, so a reused 5-tuple is one NFStream flow; tapwatch, like CICFlowMeter, closes a TCP flow after FIN or "
        "RST. tapwatch's reader maps the whole pcap once to check its structure (`scan_pcap`), so its VmHWM "
        "includes the file's pages.", "",
        *cost_lines(results, packets),
    ]  # fmt: skip
    return "\n".join(lines + entry_lines(results, extra.get("redis")) + extra.get("profile", [])) + "\n"


def entry_lines(results: Results, red: RedisCost | None) -> list[str]:
    if Run.WINDOWS not in results:
        return []
    w = results[Run.WINDOWS]
    lines = [f"Window entries (identity card, T = 10, 82 features): {_med(w, 'entry_bytes'):,.0f} bytes of encoded "
             f"fields per entry (keys + values; the float32 tensor is {10 * 82 * 4:,} of them); Windower.add + encode "
             f"take {_med(w, 'window_us'):.0f} µs per entry in the reader."]  # fmt: skip
    if red is not None:
        lines.append(f"In a private Redis stream ({red['entries']:,} entries): MEMORY USAGE {red['memory_usage']:,.0f} "
                     f"bytes per entry; used_memory grew {red['used_memory']:,.0f} bytes per entry.")  # fmt: skip
    return [*lines, ""]


# -- driver -----------------------------------------------------------------------------------------
def choose_pcap(args: argparse.Namespace) -> Path:
    if args.pcap is not None:
        return Path(args.pcap).resolve()
    if args.rebuild or not DEFAULT_PCAP.exists():
        build_pcap(DEFAULT_PCAP, args.bulk_flows)
    return DEFAULT_PCAP


def commit() -> str:
    git = ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"]
    return subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip() or "unknown"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--pcap", help="use this pcap instead of building bench/out/bench_extract.pcap")
    ap.add_argument("--repeat", type=int, default=3, help="runs of each configuration (default 3)")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the cached pcap")
    ap.add_argument("--profile", action="store_true", help="add run (5), a cProfile of run (2), micro-timings")
    ap.add_argument("--bulk-flows", type=int, default=BULK_FLOWS, help=f"HTTP flows to build (default {BULK_FLOWS})")
    ap.add_argument("--out", type=Path, default=OUT / "bench_extract.md", help="the Markdown report")
    ap.add_argument("--redis-entries", type=int, default=20_000, help="entries for the Redis measurement (0: skip)")
    ap.add_argument("--child", choices=[r.value for r in Run], help=argparse.SUPPRESS)
    ap.add_argument("--child-redis", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat must be >= 1, got {args.repeat}")
    if (args.child or args.child_redis or args.child_profile) and not args.pcap:
        ap.error("child modes need --pcap")
    return args


def profile_lines(pcap: Path) -> list[str]:
    spawn(["--child-profile", "--pcap", str(pcap)])
    lines = ["### Profile of run (2)", ""]
    lines += profile_section(OUT / "profile-meter.pstats", "Meter process (NFStream + CicPlugin)")
    lines += profile_section(OUT / "profile-reader.pstats", "Reading process (records)")
    return lines + micro_lines()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        child_main(Run(args.child), args.pcap)
    elif args.child_redis:
        redis_child(args.pcap, args.child_redis, args.redis_entries)
    elif args.child_profile:
        profile_child(args.pcap, str(OUT))
    else:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        extra: dict[str, Any] = {"load_before": _load(), "repeat": args.repeat, "machine": machine_facts()}
        extra["commit"] = commit()
        pcap = choose_pcap(args)
        OUT.mkdir(parents=True, exist_ok=True)
        facts = pcap_facts(pcap)
        if facts["packets"] < MIN_PACKETS:
            log.warning("%s holds %s packets, fewer than the benchmark's %s", pcap, facts["packets"], MIN_PACKETS)
        runs = [Run.BARE, Run.TAPWATCH, Run.NOOP, Run.WINDOWS] + ([Run.NO_PLUGIN] if args.profile else [])
        results = measure(runs, str(pcap), args.repeat)
        if results[Run.BARE][0]["flows"] < MIN_FLOWS:
            log.warning("%s holds %s NFStream flows, fewer than %s", pcap, results[Run.BARE][0]["flows"], MIN_FLOWS)
        extra["redis"] = redis_cost(str(pcap), args.redis_entries)
        extra["profile"] = profile_lines(pcap) if args.profile else []
        extra["load_after"], extra["commit_after"] = _load(), commit()
        report = render(facts, results, extra)
        print(report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Parity of tapwatch's CIC flow features with the PyPI package ``cicflowmeter``, an independent implementation.

Run it with the project's interpreter (tapwatch installed), from anywhere::

    python bench/parity_cicflowmeter.py          # writes docs/parity-cicflowmeter.md and .json

It creates ``<repo>/.parity-venv`` (gitignored) from ``bench/parity_requirements.txt`` when missing, then for
each pcap of :data:`PCAPS` (read from ``../shared/pcaps``, one pcap per invocation) runs
``cicflowmeter -f PCAP -c OUT.csv`` in that venv and ``tapwatch flows --single-packet-flows PCAP -o OUT.csv``,
matches the flows (5-tuple in either orientation + start time), measures per-feature agreement and
attributes every disagreement to a cause that is checked on the two rows (:data:`CAUSES`). The report's text
is templated here; every number in it comes from the run. The reference for "which side follows
CICFlowMeter" is the corrected CICFlowMeter Java source (``BasicFlow``, ``FlowGenerator``, ``PacketReader``).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import itertools
import json
import logging
import math
import os
import platform
import struct
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tapwatch.features.contract import FEATURE_NAMES, TIME_FEATURES, TIME_RESOLUTION_US

log = logging.getLogger("parity")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # lab/ runs from the repository; it is not installed with the wheel
from lab.pypi_cicflowmeter import (  # noqa: E402  (shared with the live check, lab.live_check)
    NO_COUNTERPART,
    PYPI_TO_CIC,
    TIME_TOL_US,
    Flow,
    Pair,
    ensure_venv,
    match,
    pypi_cmd,
    pypi_flow,
    tapwatch_flow,
)

PCAP_ROOT = REPO.parent / "shared" / "pcaps"
VENV = REPO / ".parity-venv"
REQUIREMENTS = REPO / "bench" / "parity_requirements.txt"
DOC = REPO / "docs" / "parity-cicflowmeter.md"
DATASET = REPO.parent / "shared" / "datasets" / "cic-ids2017" / "engelen_improved_sample_rnd5000"

# TCP and UDP traffic from every MANIFEST category; each pcap takes a few seconds in either tool.
PCAPS = (
    "zeek/ftp/bruteforce.pcap",
    "zeek/ssh/sshguess.pcap",
    "zeek/nmap-vsn.pcap",
    "zeek/tls/heartbleed-success.pcap",
    "zeek/dhcp/dhcp_flood.pcap",
    "suricata-verify/firewall__tcp-session-syn-flood-drop-precedence__input.pcap",
    "zeek/rpc-portmap-sadmind.pcap",
    "suricata-verify/dnp3__dnp3-flood__input.pcap",
    "zeek/http/bro.org.pcap",
    "zeek/http/methods.pcap",
    "zeek/smtp.pcap",
    "zeek/wikipedia.pcap",
    "zeek/ssh/ssh.pcap",
    "zeek/smb/smb2_100_small_files.pcap",
    "zeek/dce-rpc/mapi.pcap",
    "zeek/krb/kinit.pcap",
    "zeek/var-services-std-ports.pcap",
    "zeek/mysql/auth.pcap",
    "zeek/http/vnd.ms-cab-compressed-multi-conn.pcap",
    "zeek/snmp/snmpwalk-short.pcap",
    "zeek/dns-edns-ecs.pcap",
    "zeek/sip/wireshark.pcap",
    "zeek/quic/quic_win11_firefox_google.pcap",
    "zeek/ntp/NTP_sync.pcap",
    "zeek/rdp/rdp-to-ssl.pcap",
    "zeek/modbus/modbusSmall.pcap",
    "zeek/dnp3/dnp3.pcap",
    "suricata-verify/enip-keywords__enip_cip_example.pcap",
    "zeek/irc-dcc-send.pcapng",
    "zeek/tls/ssl.v3.pcap",
    "zeek/websocket/wstunnel-ssh.pcap",
    "suricata-verify/tls__tls-bypass-missing-event__tor_bl.pcap",
    "suricata-verify/bug-4376__syn_retransmit_with_ts.pcap",
    "zeek/tcp/ssh-dups.pcap",
    "suricata-verify/bug-4663-03__icmp_and_ssh.pcap",
    "zeek/ftp/ipv6.pcap",
    "suricata-verify/filestore-filecontainer-smb__filecontainer-smb.pcap",
)

COMPARED = tuple(n for n in FEATURE_NAMES if n in PYPI_TO_CIC.values())

# A difference of two millisecond timestamps is off by less than one tick from the µs difference; a sample
# standard deviation of such differences by less than tick * sqrt(n / (n - 1)) <= tick * sqrt(2).
TIME_STD_TOL_US = TIME_TOL_US * math.sqrt(2)
FLOW_RATES = ("Flow Bytes/s", "Flow Packets/s")
DIR_RATES = ("Fwd Packets/s", "Bwd Packets/s")
BULK_RATES = ("Fwd Bulk Rate Avg", "Bwd Bulk Rate Avg")


# -- the two tools ---------------------------------------------------------------------------------
def versions(venv: Path, commit: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, sys;"
        "print(sys.version.split()[0], *(m.version(p) for p in ('cicflowmeter', 'scapy', 'numpy')))"
    )
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    py, cic, scapy, numpy = out.stdout.split()
    from importlib.metadata import version

    return {
        "cicflowmeter": cic, "scapy": scapy, "numpy": numpy, "parity_venv_python": py,
        "tapwatch": version("tapwatch"), "nfstream": version("nfstream"), "python": platform.python_version(),
        "tapwatch_commit": commit,
    }  # fmt: skip


PACKAGE_DIRS = ("capture", "features", "inference", "alerting", "models")  # pyproject's package-dir


def tapwatch_snapshot(rev: str, dest: Path) -> str:
    """Export tapwatch at git revision ``rev`` as a package under ``dest``; return the full commit id.

    The work tree is shared with other developers' uncommitted edits; the report describes a commit.
    """
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", rev], capture_output=True, text=True, check=True)
    tree = subprocess.run(["git", "-C", str(REPO), "ls-tree", "--name-only", rev], capture_output=True, text=True)
    dirs = [d for d in PACKAGE_DIRS if d in tree.stdout.split()]
    tar = subprocess.run(["git", "-C", str(REPO), "archive", rev, *dirs], capture_output=True, check=True)
    pkg = dest / "tapwatch"
    pkg.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(tar.stdout)) as tf:
        tf.extractall(pkg, filter="data")
    (pkg / "__init__.py").write_text("")  # a regular package shadows the editable install's namespace
    return commit.stdout.strip()


def tapwatch_cmd(pcap: Path, out: Path) -> list[str]:
    cli = "import sys; from tapwatch.app.cli import main; sys.argv[0] = 'tapwatch'; main()"
    args = ["flows", "--single-packet-flows", "--sensor", "parity", str(pcap), "-o", str(out)]
    return [sys.executable, "-c", cli, *args]


@dataclass
class Run:
    """Both tools' rows for one pcap."""

    rel: str
    pypi_rows: list[dict[str, str]]
    tw_rows: list[dict[str, str]]
    pypi_s: float
    tw_s: float
    tw_rc: int


def _timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    t0 = time.monotonic()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    return time.monotonic() - t0, res.returncode, res.stderr[-500:]


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.exists() or path.stat().st_size == 0:
        return []
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


@dataclass(frozen=True)
class Tools:
    """Where the two implementations live."""

    pypi: Path
    tapwatch_path: Path
    work: Path


def run_pcap(rel: str, tools: Tools) -> Run:
    pcap = PCAP_ROOT / rel
    stem = rel.replace("/", "__")
    py_out, tw_out = tools.work / f"{stem}.pypi.csv", tools.work / f"{stem}.tapwatch.csv"
    env = dict(os.environ, TZ="UTC")  # PyPI writes its timestamp in local time
    py_s, py_rc, py_err = _timed(pypi_cmd(tools.pypi, pcap, py_out), env)
    if py_rc != 0:
        raise RuntimeError(f"cicflowmeter failed on {rel}: {py_err}")
    tw_env = dict(env, PYTHONPATH=str(tools.tapwatch_path))
    tw_s, tw_rc, tw_err = _timed(tapwatch_cmd(pcap, tw_out), tw_env)
    if tw_rc not in (0, 2):  # 2: a damaged pcap whose readable part was processed
        raise RuntimeError(f"tapwatch failed on {rel}: {tw_err}")
    log.info("%s: PyPI %.1fs, tapwatch %.1fs", rel, py_s, tw_s)
    return Run(rel, _rows(py_out), _rows(tw_out), py_s, tw_s, tw_rc)


# -- pcap facts ------------------------------------------------------------------------------------
def manifest() -> dict[str, dict[str, str]]:
    with (PCAP_ROOT / "MANIFEST.csv").open(newline="") as fh:
        return {r["file"]: r for r in csv.DictReader(fh)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _frames(data: bytes) -> Iterable[tuple[int, bytes]]:
    """(linktype, frame) of a classic pcap or pcapng file; enough to look at link-layer headers."""
    if data[:4] == b"\x0a\x0d\x0d\x0a":
        off, links = 0, []
        while off + 12 <= len(data):
            btype, blen = struct.unpack_from("<II", data, off)
            if btype == 1:
                links.append(struct.unpack_from("<H", data, off + 8)[0])
            elif btype == 6:
                iface, caplen = struct.unpack_from("<I", data, off + 8)[0], struct.unpack_from("<I", data, off + 20)[0]
                yield links[iface], data[off + 28 : off + 28 + caplen]
            off += max(blen, 12)
        return
    endian = "<" if data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    link, off = struct.unpack_from(endian + "I", data, 20)[0], 24
    while off + 16 <= len(data):
        caplen = struct.unpack_from(endian + "I", data, off + 8)[0]
        yield link, data[off + 16 : off + 16 + caplen]
        off += 16 + caplen


def link_facts(path: Path) -> dict[str, Any]:
    """Link type and how many Ethernet frames carry a VLAN tag (PyPI's BPF filter "ip and ..." skips those)."""
    links: Counter[int] = Counter()
    vlan = n = 0
    for link, frame in _frames(path.read_bytes()):
        n += 1
        links[link] += 1
        vlan += link == 1 and frame[12:14] in (b"\x81\x00", b"\x88\xa8")
    return {"linktypes": sorted(links), "frames": n, "vlan_frames": vlan}


def pypi_source_line(venv: Path, rel: str, needle: str) -> str:
    """``file:line`` of ``needle`` in the installed PyPI package, so the report cites the code it ran."""
    site = next(venv.glob("lib/python*/site-packages/cicflowmeter"), None)
    path = site / rel if site else None
    if path is None or not path.exists():
        return f"cicflowmeter/{rel} (not installed)"
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if needle in line:
            return f"cicflowmeter/{rel}:{i}"
    return f"cicflowmeter/{rel} (text not found)"


# -- flows and matching ----------------------------------------------------------------------------


def _covers(outer: Flow, inner: Flow) -> bool:
    """``inner`` starts inside ``outer``'s span (1 s slack for PyPI's whole-second timestamp)."""
    return outer.start_s - 1 <= inner.start_s <= outer.start_s + outer.v["Flow Duration"] / 1e6 + 1


def _end_s(f: Flow) -> float:
    return f.start_s + f.v["Flow Duration"] / 1e6


def concurrent(f: Flow, tws: list[Flow]) -> bool:
    """Another tapwatch flow of the same 5-tuple is open at the same time: NFStream's key is wider than CIC's."""
    return any(t is not f and t.group == f.group and t.start_s < _end_s(f) and f.start_s < _end_s(t) for t in tws)


def _previous(f: Flow, tws: list[Flow]) -> Flow | None:
    earlier = [t for t in tws if t.group == f.group and t.start_s <= f.start_s and t is not f]
    return max(earlier, key=lambda t: t.start_s, default=None)


def tapwatch_only_reason(f: Flow, tws: list[Flow], pys: list[Flow], facts: dict[str, Any]) -> str:
    if f.proto not in (6, 17):
        return "not_tcp_udp"
    if ":" in f.src[0]:
        return "ipv6"
    same = [p for p in pys if p.group == f.group]
    if facts["vlan_frames"] and (not same or concurrent(f, tws)):
        return "vlan"
    prev = _previous(f, tws)
    if prev is not None and prev.expiry in ("fin", "rst"):
        return "after_tcp_end"
    if prev is not None and prev.expiry in ("flow_timeout", "idle"):
        return "after_timeout"
    if any(_covers(p, f) for p in same):
        return "inside_pypi_flow"
    return "other"


def pypi_only_reason(f: Flow, tws: list[Flow]) -> str:
    same = [t for t in tws if t.group == f.group]
    if any(_covers(t, f) for t in same):
        return "pypi_cut"
    return "other"


def mismatch_reason(p: Pair, tws: list[Flow]) -> str:
    """Why a matched pair holds different packets (or opposite orientation)."""
    prev = _previous(p.tw, tws)
    if p.reversed:
        if concurrent(p.tw, tws):
            return "key_split"
        if prev is not None and (prev.expiry == "flow_timeout" or (prev.expiry == "idle" and p.tw.proto == 6)):
            return "continued"  # FlowGenerator: UDP continues only after a gap within the flow timeout
        return "syn_ack_first" if p.tw.proto == 6 else "other"
    if p.tw.expiry in ("fin", "rst") and p.tw.packets < p.py.packets:
        return "tw_ended_on_flags"
    if p.tw.expiry in ("flow_timeout", "idle") or (prev is not None and prev.expiry in ("flow_timeout", "idle")):
        return "tw_timeout"
    return "pypi_cut" if p.py.packets < p.tw.packets else "other"


# -- agreement -------------------------------------------------------------------------------------
def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-6)


def _in_rate_interval(value: float, numer: float, dur_us: float) -> bool:
    """``value`` is numer / duration for some duration within one clock tick of ``dur_us``."""
    lo = numer / ((dur_us + TIME_TOL_US) / 1e6)
    hi = numer / ((dur_us - TIME_TOL_US) / 1e6) if dur_us > TIME_TOL_US else math.inf
    return lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9)


def rate_agrees(f: str, tw: dict[str, float], py: dict[str, float], numer: float | None = None) -> bool:
    """Rates: equal once the duration is allowed the clock's resolution (numerator from PyPI unless given)."""
    d_py, d_tw = py["Flow Duration"], tw["Flow Duration"]
    if d_py == 0:
        return _close(tw[f], py[f])
    if d_tw == 0 and d_py < TIME_TOL_US:  # the ms clock saw no duration: CIC's duration-0 value
        return tw[f] == (-1.0 if f in FLOW_RATES else 0.0)
    if numer is None:
        numer = py[f] * d_py / 1e6
    return _in_rate_interval(tw[f], numer, d_py)


def bulk_rate_agrees(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    """Bytes per bulk over the mean bulk duration; each bulk's duration may be off by one tick."""
    side = f.split()[0]
    per_bulk = py[f"{side} Bytes/Bulk Avg"]
    if py[f] == 0 or per_bulk == 0:
        return _close(tw[f], py[f])
    mean_us = per_bulk / py[f] * 1e6
    if tw[f] == 0:
        return mean_us < TIME_TOL_US
    return _in_rate_interval(tw[f], per_bulk, mean_us)


def agrees(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    if f in FLOW_RATES or f in DIR_RATES:
        return rate_agrees(f, tw, py)
    if f in BULK_RATES:
        return bulk_rate_agrees(f, tw, py)
    if f in TIME_FEATURES:
        tol = TIME_STD_TOL_US if f.endswith("Std") else TIME_TOL_US
        return abs(tw[f] - py[f]) <= tol + 1e-6 * abs(py[f])
    return _close(tw[f], py[f])


# -- causes of systematic differences --------------------------------------------------------------
LENGTH_FEATURES = (
    "Total Length of Fwd Packet", "Total Length of Bwd Packet", "Fwd Packet Length Max", "Fwd Packet Length Min",
    "Fwd Packet Length Mean", "Bwd Packet Length Max", "Bwd Packet Length Min", "Bwd Packet Length Mean",
    "Packet Length Min", "Packet Length Max", "Packet Length Mean", "Average Packet Size",
    "Fwd Segment Size Avg", "Bwd Segment Size Avg",
)  # fmt: skip
LENGTH_SPREAD = ("Fwd Packet Length Std", "Bwd Packet Length Std", "Packet Length Std", "Packet Length Variance")
BULK = tuple(n for n in FEATURE_NAMES if "Bulk" in n)
ACTIVE_IDLE = tuple(n for n in FEATURE_NAMES if n.startswith(("Active", "Idle")))


def n_values(f: str, v: dict[str, float]) -> int:
    """How many values a statistic is taken over (packets for lengths, gaps for IATs)."""
    nf, nb = int(v["Total Fwd Packet"]), int(v["Total Bwd packets"])
    table = {"Fwd Packet Length": nf, "Bwd Packet Length": nb, "Packet Length": nf + nb,
             "Flow IAT": nf + nb - 1, "Fwd IAT": nf - 1, "Bwd IAT": nb - 1}  # fmt: skip
    return next((n for prefix, n in table.items() if f.startswith(prefix)), 0)


def _frame_bytes(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    if f in FLOW_RATES[:1]:
        payload = tw["Total Length of Fwd Packet"] + tw["Total Length of Bwd Packet"]
        return rate_agrees(f, tw, py, numer=payload)
    if f not in LENGTH_FEATURES:
        return False
    k = {"Total Length of Fwd Packet": tw["Total Fwd Packet"], "Total Length of Bwd Packet": tw["Total Bwd packets"]}
    least = 20 + (20 if tw["Protocol"] == 6 else 8)  # IPv4 + TCP or UDP headers, before any link layer
    return py[f] - tw[f] >= k.get(f, 1.0) * least - 1e-6


def _ip_header(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    count = {"Fwd Header Length": tw["Total Fwd Packet"], "Bwd Header Length": tw["Total Bwd packets"],
             "Fwd Seg Size Min": 1.0}.get(f)  # fmt: skip
    return count is not None and tw["Protocol"] == 6 and py[f] == 20 * count


def _population_std(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    n = n_values(f, tw)
    if not f.endswith(("Std", "Variance")) or n < 2:
        return False
    ratio = (n - 1) / n if f.endswith("Variance") else math.sqrt((n - 1) / n)
    if f in TIME_FEATURES:
        return abs(py[f] - tw[f] * ratio) <= TIME_STD_TOL_US
    return _close(py[f], tw[f] * ratio)


def overhead_may_vary(f: str, tw: dict[str, float]) -> bool:
    """Whether the rows allow PyPI's per-packet overhead (headers, padding) to differ between the packets."""
    sides = ("Fwd",) if f.startswith("Fwd") else ("Bwd",) if f.startswith("Bwd") else ("Fwd", "Bwd")
    short = 6 if tw["Protocol"] == 6 else 18  # a shorter payload leaves the frame under Ethernet's 60 bytes
    means = set()
    for side in sides:
        n = tw["Total Fwd Packet" if side == "Fwd" else "Total Bwd packets"]
        if n == 0:
            continue
        mean = tw[f"{side} Header Length"] / n
        fixed = mean in (8.0, 20.0) or (side == "Fwd" and mean == tw["Fwd Seg Size Min"])  # all headers equal
        if not fixed or tw[f"{side} Packet Length Min"] < short:
            return True
        means.add(mean)
    return len(means) > 1


def _frame_spread(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f in LENGTH_SPREAD and n_values(f, tw) >= 2 and overhead_may_vary(f, tw)


def _single_gap(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f.split(" ")[1] == "IAT" and not f.endswith("Std") and n_values(f, tw) == 1 and py[f] == 0


def _zero_duration_rate(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f in FLOW_RATES and py[f] == 0 and tw[f] == -1


def _subflow_totals(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    total = {
        "Subflow Fwd Packets": "Total Fwd Packet",
        "Subflow Bwd Packets": "Total Bwd packets",
        "Subflow Fwd Bytes": "Total Length of Fwd Packet",
        "Subflow Bwd Bytes": "Total Length of Bwd Packet",
    }
    return f in total and py[f] == py[total[f]]  # fmt: skip


def _cwr_copy(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f == "CWR Flag Count" and py[f] == py["Fwd URG Flags"]


def _fwd_window(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f == "FWD Init Win Bytes" and tw[f] == 0 < py[f]


def _bwd_window(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f == "Bwd Init Win Bytes" and tw["Protocol"] == 6 and tw["Total Bwd packets"] >= 2


def _act_data_first(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    # Every forward packet carries payload (min > 0), so no padded empty frame can add to PyPI's count.
    return f == "Fwd Act Data Pkts" and tw["Fwd Packet Length Min"] > 0 and py[f] == tw[f] + 1


def _padding_payload(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f == "Fwd Act Data Pkts" and py[f] > tw[f]


def _bulk(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f in BULK


def _active_idle(f: str, tw: dict[str, float], py: dict[str, float]) -> bool:
    return f in ACTIVE_IDLE


@dataclass(frozen=True)
class Cause:
    """A systematic difference, the row-level check that attributes a disagreement to it, and the verdict."""

    id: str
    title: str
    check: Callable[[str, dict[str, float], dict[str, float]], bool]
    verdict: str
    java: str
    pypi: tuple[tuple[str, str], ...]
    text: str
    checked: str = "exact"


CAUSES: tuple[Cause, ...] = (
    Cause("frame_bytes", "PyPI measures whole link-layer frames, CIC transport payload", _frame_bytes, "tapwatch",
          "PacketReader.getIpv4Info (setPayloadBytes(tcp.getPayloadLength()) / udp.getPayloadLength()); "
          "BasicFlow.firstPacket/addPacket add getPayloadBytes() to fwdPktStats, bwdPktStats, flowLengthStats",
          (("features/packet_length.py", "len(packet)"), ("features/flow_bytes.py", "sum(len(packet)")),
          "PyPI's lengths are `len(packet)` of the scapy frame: link header, IP and TCP/UDP headers and Ethernet "
          "padding included, so `Packet Length Min` is never 0. A disagreement is attributed here when PyPI's "
          "value exceeds tapwatch's by at least the IPv4 + TCP/UDP headers per packet (for `Flow Bytes/s`: when "
          "tapwatch's rate equals tapwatch's payload total over PyPI's duration).", "bound"),
    Cause("ip_header", "PyPI's header length is the IP header, CIC's the TCP header", _ip_header, "tapwatch",
          "PacketReader.getIpv4Info (setHeaderBytes(tcp.getHeaderLength())); BasicFlow.addPacket "
          "(fHeaderBytes += getHeaderBytes(); min_seg_size_forward = min(...))",
          (("features/flow_bytes.py", "ihl * 4 if TCP in packet else 8"),),
          "For TCP PyPI sums `IP.ihl * 4` (20 bytes without IP options); CIC sums the TCP data offset "
          "(20-60 bytes). They agree only when no packet carries TCP options. For UDP both count 8."),
    Cause("population_std", "PyPI's standard deviation and variance divide by n, CIC's by n - 1",
          _population_std, "tapwatch",
          "BasicFlow.dumpFlowBasedFeaturesEx: SummaryStatistics.getStandardDeviation()/getVariance() "
          "(commons-math, bias-corrected n - 1)",
          (("features/packet_length.py", "numpy.var("), ("utils.py", "numpy.sqrt(numpy.var(alist))")),
          "`numpy.var` defaults to ddof=0. Checked: PyPI's value equals tapwatch's times sqrt((n-1)/n) (variance: "
          "(n-1)/n), n the number of packets or gaps. Length spreads agree this way when the per-packet "
          "overhead of the frames is constant, since a spread does not move with a constant shift."),
    Cause("frame_spread", "Spread of frame lengths whose overhead varies per packet, divided by n",
          _frame_spread, "tapwatch", "as frame_bytes and population_std",
          (("features/packet_length.py", "numpy.var("),),
          "When the overhead PyPI adds differs between packets (TCP options on some segments, Ethernet "
          "padding of short frames), the spread of frame lengths is not the spread of payload lengths, so the "
          "n/(n-1) check above cannot be applied. Attributed only where the rows show the overhead can vary: the "
          "TCP header lengths of a direction differ (their sum is not n times one length), a payload is short "
          "enough to be padded, or the two directions' headers differ.", "condition"),
    Cause("single_gap", "PyPI zeroes IAT statistics taken over a single gap", _single_gap, "tapwatch",
          "BasicFlow.dumpFlowBasedFeaturesEx: flowIAT written whenever it has a value; Fwd/Bwd IAT written "
          "when forward.size() > 1 / backward.size() > 1",
          (("utils.py", "if len(alist) > 1:"),),
          "`get_statistics` returns zeros for a list of fewer than two values, so a two-packet flow has Flow "
          "IAT 0 and a direction with two packets has its IAT Total/Mean/Max/Min 0. CIC reports the gap."),
    Cause("zero_duration_rate", "PyPI writes 0 for flow rates of a zero-duration flow, CIC -1",
          _zero_duration_rate, "tapwatch",
          "BasicFlow.dumpFlowBasedFeaturesEx: `if(flowDuration != 0) ... else dump.append(-1)` for Flow "
          "Bytes/s and Flow Packets/s", (("features/flow_bytes.py", "rate = 0"),),
          "Single-packet flows and flows whose packets share one timestamp."),
    Cause("subflow_totals", "PyPI copies the totals into the subflow columns", _subflow_totals, "neither",
          "BasicFlow.detectUpdateSubflows / getSflow_fpackets etc.: totals divided by sfCount, the number of "
          "gaps over 1 s, and 0 when sfCount <= 0",
          (("flow.py", 'data["subflow_fwd_pkts"] = data["tot_fwd_pkts"]'),),
          "Neither side implements the Java rule: PyPI writes the totals; tapwatch writes the totals divided "
          "(integer division) by the flow's packet count, which is what the corrected CIC-IDS2017 release "
          "holds (checked on the dataset sample below), deliberately chosen so the model sees training values."),
    Cause("cwr_copy", "PyPI's CWR Flag Count is a copy of Fwd URG Flags", _cwr_copy, "tapwatch",
          "BasicFlow.checkFlags (hasFlagCWR)", (("flow.py", 'data["cwr_flag_count"] = data["fwd_urg_flags"]'),),
          "A copy-paste slip in PyPI's `get_data`."),
    Cause("fwd_window", "PyPI takes the first non-zero forward window, CIC the first packet's", _fwd_window,
          "tapwatch", "BasicFlow.firstPacket (Init_Win_bytes_forward = packet.getTCPWindow() when the first "
          "packet is forward; addPacket never changes it)",
          (("flow.py", "and self.init_window_size[direction] == 0"),),
          "Differs when the flow's first packet has window 0 (RST-ACK replies of scans, zero-window probes)."),
    Cause("bwd_window", "Backward window: the last packet's (PyPI) against another rule", _bwd_window, "neither",
          "BasicFlow.addPacket (`if (Init_Win_bytes_backward == 0) Init_Win_bytes_backward = "
          "packet.getTCPWindow()`: the first non-zero window)",
          (("flow.py", "elif direction == PacketDirection.REVERSE:"),),
          "PyPI overwrites the backward window with every backward TCP packet. tapwatch does the same on "
          "purpose, because the corrected release holds the last window (features/contract.py); so the two agree "
          "while both depart from the Java source. A disagreement is attributed here when the flow has at least "
          "two backward TCP packets (the rows carry no per-packet windows).", "attributed"),
    Cause("act_data_first", "tapwatch leaves the first packet out of Fwd Act Data Pkts", _act_data_first, "PyPI",
          "BasicFlow.firstPacket counts the first packet too (`if (packet.getPayloadBytes() >= 1) "
          "this.Act_data_pkt_forward++`)", (("features/packet_count.py", "def has_payload"),),
          "tapwatch follows the corrected release, whose rows leave the first packet out (checked on the dataset "
          "sample in the last section); PyPI, like the Java source, counts it. Checked exactly on flows whose "
          "forward packets all carry payload (`Fwd Packet Length Min` > 0): PyPI = tapwatch + 1."),
    Cause("padding_payload", "PyPI counts Ethernet padding as payload", _padding_payload, "tapwatch",
          "BasicFlow.addPacket (`if (packet.getPayloadBytes() >= 1) Act_data_pkt_forward++`)",
          (("features/packet_count.py", 'return packet["TCP"].payload'),),
          "scapy appends the Ethernet padding of a short frame (a bare ACK is padded from 54 to 60 bytes) as a "
          "`Padding` layer under TCP, so `len(packet['TCP'].payload)` is 6 for a segment without data. Attributed "
          "when PyPI counts more (the first-packet rule above may add one more). The same payload size feeds "
          "PyPI's bulk detection.", "bound"),
    Cause("bulk", "PyPI's bulks allow 1 ms gaps instead of 1 s and include padding", _bulk, "tapwatch",
          "BasicFlow.updateForwardBulk/updateBackwardBulk (`(ts - flastBulkTS) / 1000000 > 1.0` ends a bulk; "
          "4 packets with payload make one)", (("constants.py", "CLUMP_TIMEOUT = 0.001"),),
          "PyPI ports the bulk rule with `CLUMP_TIMEOUT = 0.001` seconds where CIC waits 1 s, and its payload "
          "sizes include Ethernet padding, so a PyPI bulk spans only gaps under 1 ms and may count padded empty "
          "segments.", "attributed"),
    Cause("active_idle", "PyPI's active/idle periods are not CIC's", _active_idle, "tapwatch",
          "FlowGenerator.addPacket calls BasicFlow.updateActiveIdleTime(currentTimestamp, activityTimeout) "
          "before every packet, with the 5 s activity timeout",
          (("flow.py", "self.update_active_idle(packet.time - last_timestamp)"),
           ("constants.py", "ACTIVE_TIMEOUT = 0.005")),
          "PyPI calls `update_active_idle` only after a gap over 1 ms and passes it the gap instead of the "
          "packet time, with a 5 ms activity timeout; the values have no relation to CIC's.", "attributed"),
)  # fmt: skip


def attribute(f: str, tw: dict[str, float], py: dict[str, float]) -> str:
    return next((c.id for c in CAUSES if c.check(f, tw, py)), "unexplained")


@dataclass
class FeatureStat:
    name: str
    agree_all: int = 0
    agree_clean: int = 0
    agree_clean2: int = 0
    causes: Counter[str] = field(default_factory=Counter)


def feature_stats(pairs: list[Pair]) -> list[FeatureStat]:
    stats = []
    for f in COMPARED:
        s = FeatureStat(f)
        for p in pairs:
            ok = agrees(f, p.tw.v, p.py.v)
            s.agree_all += ok
            if p.clean:
                s.agree_clean += ok
                s.agree_clean2 += ok and p.tw.packets >= 2
                if not ok:
                    s.causes[attribute(f, p.tw.v, p.py.v)] += 1
        stats.append(s)
    return stats


# -- evidence beyond the per-feature table ---------------------------------------------------------
LINK_HEADER = {1: 14, 101: 0, 228: 0, 113: 16}  # Ethernet, raw IP, raw IPv4, Linux cooked


def link_overhead(pairs: list[Pair], facts: dict[str, dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per link type: what PyPI adds per packet beyond payload, TCP/UDP header and IP header."""
    out: dict[str, Counter[str]] = defaultdict(Counter)
    for p in (p for p in pairs if p.clean):
        tw, py, n = p.tw.v, p.py.v, p.tw.packets
        frames = py["Total Length of Fwd Packet"] + py["Total Length of Bwd Packet"]
        payload = tw["Total Length of Fwd Packet"] + tw["Total Length of Bwd Packet"]
        transport = tw["Fwd Header Length"] + tw["Bwd Header Length"]
        ip = py["Fwd Header Length"] + py["Bwd Header Length"] if tw["Protocol"] == 6 else 20 * n
        link = facts[p.tw.pcap]["linktypes"][0]
        expected = LINK_HEADER.get(link, 0) * n
        extra = frames - payload - transport - ip
        kind = "equal" if extra == expected else ("more (padding)" if extra > expected else "less")
        out[f"linktype {link} ({LINK_HEADER.get(link, '?')} B header)"][kind] += 1
    return {k: dict(v) for k, v in out.items()}


def after_termination(tws: list[Flow], pairs: list[Pair]) -> dict[str, int]:
    """tapwatch flows that follow a FIN/RST-ended flow of the same 5-tuple and carry no SYN.

    FlowGenerator.addPacket keeps adding packets to a READY_FOR_TERMINATION flow until a SYN arrives, so
    under CICFlowMeter these packets belong to the previous flow; tapwatch emits at READY and starts anew.
    """
    by_group: dict[tuple[Any, ...], list[Flow]] = defaultdict(list)
    for f in tws:
        by_group[f.group].append(f)
    frags, packets, prev_ids = 0, 0, set()
    for flows in by_group.values():
        flows.sort(key=lambda f: f.start_s)
        for prev, cur in itertools.pairwise(flows):
            within = cur.start_s - prev.start_s <= 120  # past CIC's flow timeout the Java splits too
            if prev.expiry in ("fin", "rst") and cur.v["SYN Flag Count"] == 0 and within:
                frags += 1
                packets += cur.packets
                prev_ids.add(id(prev))
    merged = sum(1 for p in pairs if id(p.tw) in prev_ids and p.py.packets > p.tw.packets)
    tcp = [f for f in tws if f.proto == 6]
    return {
        "fragments": frags, "fragment_packets": packets, "fin_rst_flows": sum(f.expiry in ("fin", "rst") for f in tws),
        "pypi_kept_them": merged, "tcp_flows": len(tcp), "tcp_rst_ge2": sum(f.v["RST Flag Count"] >= 2 for f in tcp),
    }  # fmt: skip


def key_splits(tws: list[Flow]) -> dict[str, Any]:
    """tapwatch flows open at the same time as another tapwatch flow of the same 5-tuple."""
    by_pcap: dict[str, list[Flow]] = defaultdict(list)
    for f in tws:
        by_pcap[f.pcap].append(f)
    hits = [f for flows in by_pcap.values() for f in flows if concurrent(f, flows)]
    return {"flows": len(hits), "pcaps": sorted({f.pcap for f in hits})}


def dataset_checks() -> dict[str, Any]:
    """What the corrected CIC-IDS2017 release holds for behaviours the Java source alone does not settle."""
    files = sorted(DATASET.glob("*.csv.gz"))
    if not files:
        return {}
    c: Counter[str] = Counter()
    for path in files:
        with gzip.open(path, "rt", newline="") as fh:
            for r in csv.DictReader(fh):
                _dataset_row(r, c)
    return {"path": str(DATASET.relative_to(REPO.parent)), **c}


def _dataset_row(r: dict[str, str], c: Counter[str]) -> None:
    proto, nf, nb = int(float(r["Protocol"])), int(float(r["Total Fwd Packet"])), int(float(r["Total Bwd packets"]))
    n, fwd_bytes = nf + nb, float(r["Total Length of Fwd Packet"])
    c["rows"] += 1
    c["subflow_pkts_div_packets"] += n > 0 and float(r["Subflow Fwd Packets"]) == nf // n
    c["subflow_bytes_div_packets"] += n > 0 and float(r["Subflow Fwd Bytes"]) == fwd_bytes // n
    c["subflow_equals_totals"] += float(r["Subflow Fwd Packets"]) == nf
    if nf and float(r["Fwd Packet Length Min"]) > 0:
        c["act_all_payload"] += 1
        c["act_minus_one"] += float(r["Fwd Act Data Pkts"]) == nf - 1
        c["act_all"] += float(r["Fwd Act Data Pkts"]) == nf
    if proto == 6:
        c["tcp_rows"] += 1
        c["tcp_rst_ge2"] += float(r["RST Flag Count"]) >= 2
        if nb >= 2 and float(r["Bwd RST Flags"]) >= 1:
            c["bwd_rst_rows"] += 1
            c["bwd_rst_win0"] += float(r["Bwd Init Win Bytes"]) == 0
    elif proto == 17:
        c["udp_rows"] += 1
        c["udp_total_tcp_flow_time_zero"] += float(r["Total TCP Flow Time"]) == 0


# -- the run ---------------------------------------------------------------------------------------
@dataclass
class Result:
    runs: list[Run]
    facts: dict[str, dict[str, Any]]
    pairs: list[Pair]
    tw_only: Counter[str]
    py_only: Counter[str]
    mismatches: Counter[str]
    stats: list[FeatureStat]
    tws: list[Flow]
    pys: list[Flow]


def analyse(runs: list[Run], facts: dict[str, dict[str, Any]]) -> Result:
    pairs: list[Pair] = []
    tw_only: Counter[str] = Counter()
    py_only: Counter[str] = Counter()
    mismatches: Counter[str] = Counter()
    all_tw: list[Flow] = []
    all_py: list[Flow] = []
    for run in runs:
        tws = [tapwatch_flow(run.rel, r) for r in run.tw_rows]
        pys = [pypi_flow(run.rel, r) for r in run.pypi_rows]
        got, lone_tw, lone_py = match(tws, pys)
        pairs += got
        tw_only.update(tapwatch_only_reason(f, tws, pys, facts[run.rel]) for f in lone_tw)
        mismatches.update(mismatch_reason(p, tws) for p in got if not p.clean)
        py_only.update(pypi_only_reason(f, tws) for f in lone_py)
        all_tw += tws
        all_py += pys
    return Result(runs, facts, pairs, tw_only, py_only, mismatches, feature_stats(pairs), all_tw, all_py)


def run_all(tools: Tools, jobs: int) -> list[Run]:
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda rel: run_pcap(rel, tools), PCAPS))


# -- the report ------------------------------------------------------------------------------------
REASONS = {
    "not_tcp_udp": "not TCP or UDP (ICMP and others): PyPI reads TCP and UDP only",
    "ipv6": "IPv6: PyPI's BPF filter `ip and (tcp or udp)` passes IPv4 only",
    "vlan": "802.1Q VLAN-tagged frames: PyPI's BPF filter `ip and (tcp or udp)` does not match them, so PyPI "
    "never saw these packets",
    "key_split": "tapwatch holds the 5-tuple's two directions in two flows open at the same time: NFStream keys "
    "flows by VLAN id too (here one direction is VLAN-tagged, the other not), CIC by the 5-tuple "
    "(BasicPacketInfo.fwdFlowId/bwdFlowId); PyPI saw only the untagged direction",
    "continued": "tapwatch continues a flow cut by the timeout in the orientation of the connection's first flow, "
    "as FlowGenerator.addPacket's timeout branch does (new BasicFlow with flow.getSrc()/getDst()); PyPI starts "
    "its next flow from the first packet it sees",
    "after_tcp_end": "the 5-tuple's previous tapwatch flow ended on FIN/RST (CIC's READY_FOR_TERMINATION); "
    "PyPI never ends a flow on TCP flags and kept these packets in its flow",
    "after_timeout": "the 5-tuple's previous tapwatch flow ended by the 120 s flow timeout; PyPI cut elsewhere",
    "inside_pypi_flow": "lies inside a PyPI flow of the same 5-tuple that PyPI did not split",
    "pypi_cut": "PyPI cut the 5-tuple's traffic where tapwatch did not: its garbage collection emits a flow once "
    "it lasts 90 s (checked every 1000 packets or when a flow passes 120 s) and starts a new one after a 240 s gap",
    "syn_ack_first": "opposite orientation: the flow's first packet is a SYN-ACK, which FlowGenerator.addPacket "
    "(and tapwatch) turn around; PyPI always makes the first packet forward",
    "tw_ended_on_flags": "tapwatch ended the flow at FIN/RST, PyPI kept the later packets of the 5-tuple in it",
    "tw_timeout": "tapwatch ended or started the flow at a 120 s timeout (the flow timeout, or 120 s without "
    "packets, which CIC's flow timeout from the flow's start implies too); PyPI cut the 5-tuple's packets elsewhere",
    "other": "no reason found",
}
FAMILIES = (
    ("Protocol, packet counts, Down/Up", ("Protocol", "Total Fwd Packet", "Total Bwd packets", "Down/Up Ratio")),
    ("Payload lengths (totals, min/max/mean, averages)", LENGTH_FEATURES),
    ("Length spread (std, variance)", LENGTH_SPREAD),
    ("Header lengths", ("Fwd Header Length", "Bwd Header Length", "Fwd Seg Size Min")),
    ("Duration and IATs", tuple(n for n in COMPARED if n == "Flow Duration" or " IAT " in n)),
    ("Rates", FLOW_RATES + DIR_RATES),
    ("TCP flag counts", tuple(n for n in COMPARED if "Flag" in n)),
    ("Init windows, Fwd Act Data Pkts", ("FWD Init Win Bytes", "Bwd Init Win Bytes", "Fwd Act Data Pkts")),
    ("Bulk", BULK),
    ("Subflow", tuple(n for n in COMPARED if n.startswith("Subflow"))),
    ("Active / Idle", ACTIVE_IDLE),
)


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:.1f} %" if n else "–"


def _cause(cid: str) -> Cause | None:
    return next((c for c in CAUSES if c.id == cid), None)


def _counts(res: Result) -> dict[str, int]:
    clean = [p for p in res.pairs if p.clean]
    return {"pcaps": len(res.runs), "pypi_flows": len(res.pys), "tapwatch_flows": len(res.tws),
            "matched": len(res.pairs), "clean": len(clean), "clean_2plus": sum(p.tw.packets >= 2 for p in clean),
            "tapwatch_only": sum(res.tw_only.values()), "pypi_only": sum(res.py_only.values())}  # fmt: skip


def family_rows(res: Result, n: dict[str, int]) -> list[str]:
    by_name = {s.name: s for s in res.stats}
    rows = ["| family | features | agreement, comparable (min – max) | ≥ 2 packets | causes | follows CIC |",
            "|---|---|---|---|---|---|"]  # fmt: skip
    for title, names in FAMILIES:
        st = [by_name[x] for x in names if x in by_name]
        a = [s.agree_clean / n["clean"] for s in st]
        b = [s.agree_clean2 / n["clean_2plus"] for s in st]
        causes: Counter[str] = Counter()
        for s in st:
            causes.update(s.causes)
        verdicts = sorted({c.verdict for c in map(_cause, causes) if c}) or ["both agree"]
        verdicts += ["unexplained"] if causes["unexplained"] else []
        names_ = ", ".join(f"`{c}`" for c, _ in causes.most_common()) or "–"
        rows.append(f"| {title} | {len(st)} | {100 * min(a):.1f} – {100 * max(a):.1f} % | "
                    f"{100 * min(b):.1f} – {100 * max(b):.1f} % | {names_} | {', '.join(verdicts)} |")  # fmt: skip
    return rows


def summary(res: Result, n: dict[str, int], ev: dict[str, Any]) -> list[str]:
    full = sum(s.agree_clean == n["clean"] for s in res.stats)
    unexplained = sum(s.causes["unexplained"] for s in res.stats)
    used = sorted({c for s in res.stats for c in s.causes if c != "unexplained"})
    return [
        f"- {n['pcaps']} pcaps; PyPI wrote {n['pypi_flows']} flows, tapwatch {n['tapwatch_flows']} (with one-packet "
        f"flows). {n['matched']} matched; {n['clean']} of them hold the same packets in the same orientation "
        f"({n['clean_2plus']} with two or more packets) and are the base of the agreement figures.",
        f"- {len(COMPARED)} of tapwatch's 82 features have a PyPI counterpart; {full} agree on every comparable "
        f"flow. Every disagreement on comparable flows is attributed to one of {len(used)} causes checked on the "
        f"rows; {unexplained} value(s) stay unexplained.",
        _verdict_bullet(res, n),
        f"- Flow boundaries differ too: {sum(res.mismatches.values())} matched pairs are not comparable and "
        f"{n['tapwatch_only']} tapwatch flows have no PyPI counterpart (IPv6, VLAN, non-TCP/UDP, cuts); PyPI never "
        "ends a flow on FIN/RST and cuts long flows at its own points (section *Flow boundaries*).",
    ]


# Features on which both sides leave the Java rule the same way (so they agree); see the causes' texts.
SHARED_DEPARTURES = {"Bwd Init Win Bytes": "both keep the last backward window, `BasicFlow.addPacket` the first"}


def _verdict_bullet(res: Result, n: dict[str, int]) -> str:
    hit = [c for c in CAUSES if any(s.causes[c.id] for s in res.stats)]
    names = {
        v: ", ".join(f"`{c.id}`" for c in hit if c.verdict == v) or "none" for v in ("tapwatch", "PyPI", "neither")
    }
    agree = {s.name: pct(s.agree_clean, n["clean"]) for s in res.stats}
    shared = "; ".join(f"`{f}` ({agree[f]} agree: {why})" for f, why in SHARED_DEPARTURES.items())
    return (
        f"- Of the {len(hit)} causes that occur, tapwatch follows the Java source in "
        f"{sum(c.verdict == 'tapwatch' for c in hit)}; PyPI does in {names['PyPI']}, neither in {names['neither']}. "
        f"Both sides leave the Java rule alike for {shared}. Each departure of tapwatch follows the corrected "
        "CIC-IDS2017 release, which the models learn from (section *tapwatch against the Java reference*)."
    )


def method(meta: dict[str, Any]) -> list[str]:
    v = meta["versions"]
    return [
        "## How it was run", "",
        f"`{meta['command']}` on {meta['date']} ({meta['runtime_s']:.0f} s). Per pcap, one invocation each:", "",
        "```", "TZ=UTC .parity-venv/bin/cicflowmeter -f ../shared/pcaps/PCAP -c OUT.csv",
        "tapwatch flows --single-packet-flows --sensor parity ../shared/pcaps/PCAP -o OUT.csv", "```", "",
        "| component | version |", "|---|---|",
        f"| PyPI cicflowmeter (in `.parity-venv`, Python {v['parity_venv_python']}) | {v['cicflowmeter']} |",
        f"| scapy / numpy there | {v['scapy']} / {v['numpy']} |",
        f"| tapwatch (commit `{v['tapwatch_commit'][:12]}`, run from a `git archive` of it) | {v['tapwatch']} |",
        f"| NFStream / Python | {v['nfstream']} / {v['python']} |", "",
        "Why this PyPI release: see `bench/parity_requirements.txt` (0.3.0 and later need Python ≥ 3.12 and 0.5.0's "
        "`-f` mode crashes on its own argument order; 0.2.0 with scapy ≥ 2.6 writes an empty CSV).", "",
        "**One-packet flows are included on both sides** (`--single-packet-flows`): PyPI writes every flow, "
        "including single packets, so without the option each of its one-packet flows would be unmatched for a "
        "reason that has nothing to do with feature definitions. Neither choice is CICFlowMeter's exactly "
        "(`FlowGenerator.dumpLabeledFlowBasedFeatures` drops finished one-packet flows but writes open ones); the "
        "last agreement column restricts to flows of two or more packets, the population of the training data.", "",
        "**Matching.** Flows pair when they have the same protocol and the same two endpoints in either "
        "orientation and tapwatch's start (ms) lies within PyPI's start second (PyPI writes whole seconds, in "
        "local time, hence `TZ=UTC`); among candidates the pair with the fewest packet difference wins. A pair "
        "is *comparable* when both hold the same number of packets over the same time span (flow durations "
        "within one tick) in the same orientation; agreement is measured on comparable pairs (and, first "
        "column, on all pairs).", "",
        f"**Tolerances.** tapwatch's clock ticks in ms ({TIME_RESOLUTION_US} µs), PyPI's in µs. A time feature agrees "
        f"when the values differ by at most one tick ({TIME_TOL_US:.0f} µs; standard deviations "
        f"{TIME_STD_TOL_US:.0f} µs = tick × √2, the bound for a sample std of tick-truncated gaps). A rate agrees "
        "when tapwatch's value is PyPI's numerator over a duration within one tick of PyPI's duration; when "
        "tapwatch's clock saw a zero duration for a sub-ms flow, CIC's duration-0 value (-1, or 0 for Fwd/Bwd "
        "Packets/s) agrees; for a flow shorter than one tick any rate above the lower bound agrees. Bulk rates "
        "allow one tick per bulk. Everything else must agree to 1e-6 (relative).", "",
    ]  # fmt: skip


def matching(res: Result, n: dict[str, int]) -> list[str]:
    out = ["## Flow matching", "",
           "| | flows |", "|---|---|", f"| PyPI | {n['pypi_flows']} |", f"| tapwatch | {n['tapwatch_flows']} |",
           f"| matched | {n['matched']} |", f"| matched, comparable (same packets, same orientation) | {n['clean']} |",
           f"| tapwatch only | {n['tapwatch_only']} |", f"| PyPI only | {n['pypi_only']} |", ""]  # fmt: skip
    for title, counter in (("tapwatch-only flows", res.tw_only), ("PyPI-only flows", res.py_only),
                           ("Matched but not comparable", res.mismatches)):  # fmt: skip
        out += [f"**{title}**", "", "| flows | why |", "|---|---|"]
        out += [f"| {k} | {REASONS[r]} (`{r}`) |" for r, k in counter.most_common()] or ["| 0 | – |"]
        out.append("")
    return out


def feature_table(res: Result, n: dict[str, int]) -> list[str]:
    out = ["## Per-feature agreement", "",
           f"Share of matched flows whose values agree within the tolerances above: all {n['matched']} matched pairs, "
           f"the {n['clean']} comparable pairs, and the {n['clean_2plus']} comparable pairs with ≥ 2 packets. "
           "*Causes* attributes each disagreement on a comparable pair (see next section).", "",
           "| feature | all matched | comparable | comparable, ≥ 2 pkts | causes of disagreement (flows) |",
           "|---|---|---|---|---|"]  # fmt: skip
    for s in res.stats:
        causes = ", ".join(f"`{c}` {k}" for c, k in s.causes.most_common()) or "–"
        out.append(f"| {s.name} | {pct(s.agree_all, n['matched'])} | {pct(s.agree_clean, n['clean'])} | "
                   f"{pct(s.agree_clean2, n['clean_2plus'])} | {causes} |")  # fmt: skip
    return [*out, ""]


def causes_section(res: Result, ev: dict[str, Any], src: dict[str, str]) -> list[str]:
    out = ["## Systematic differences", "",
           "Each cause is checked per disagreeing value, in this order; the first that holds takes it. *exact*: "
           "the row values satisfy the cause's relation exactly (within the tolerances); *bound*: PyPI's value "
           "exceeds tapwatch's by at least what the cause adds; *condition*: the rows show the precondition of "
           "the cause, not the value; *attributed*: the rows cannot show the per-packet detail, the value is "
           "attributed from the source.", ""]  # fmt: skip
    for c in CAUSES:
        hits = {s.name: s.causes[c.id] for s in res.stats if s.causes[c.id]}
        out += [f"### `{c.id}`: {c.title}", "",
                f"- Follows CICFlowMeter: **{c.verdict}**. Java: {c.java}.",
                f"- PyPI source: {', '.join(src[f'{c.id}:{i}'] for i in range(len(c.pypi)))}.",
                f"- Check: {c.checked}. Disagreements attributed: {sum(hits.values())} "
                f"({', '.join(f'{k}: {v}' for k, v in hits.items()) or 'none in this run'}).",
                "", c.text, ""]  # fmt: skip
        if c.id == "frame_bytes":
            out += [
                "Per-packet overhead on comparable pairs, PyPI frame bytes minus tapwatch payload, TCP/UDP "
                "and IP headers, against the link header (more = Ethernet padding of short frames):",
                "",
            ]
            out += [f"- {k}: " + ", ".join(f"{kind} {v}" for kind, v in sorted(d.items()))
                    for k, d in ev["link_overhead"].items()] + [""]  # fmt: skip
    left = {s.name: s.causes["unexplained"] for s in res.stats if s.causes["unexplained"]}
    out += ["### Unexplained", "", ", ".join(f"{k}: {v}" for k, v in left.items()) or "None.", ""]
    return out


def boundaries(res: Result, src: dict[str, str]) -> list[str]:
    return [
        "## Flow boundaries", "",
        f"- **FIN/RST.** PyPI's early-collect test is `\"F\" in pkt.flags` ({src['fin']}); on an Ethernet frame "
        "scapy resolves `flags` to the IPv4 flags (DF/MF), so the test never fires and no flow ends on TCP flags. "
        "CICFlowMeter moves a flow to READY_FOR_TERMINATION on a RST or on the ACK after FINs from both sides, and "
        "`FlowGenerator.addPacket` ends it when the next packet of the 5-tuple carries SYN (or on the flow "
        f"timeout). Effect in this run: {res.mismatches['tw_ended_on_flags']} matched pairs where PyPI holds "
        f"later packets, {res.tw_only['after_tcp_end']} tapwatch-only flows after a FIN/RST end.",
        f"- **Timeouts.** PyPI emits a flow at a garbage collection once it lasts 90 s or idles 240 s ({src['gc']}), "
        "CIC at the first packet more than 120 s after the flow's start; tapwatch uses NFStream's 120 s active "
        f"timeout. Effect: {res.mismatches['pypi_cut'] + res.py_only['pypi_cut']} PyPI cuts, "
        f"{res.mismatches['tw_timeout'] + res.tw_only['after_timeout']} tapwatch timeout splits.",
        f"- **Orientation.** PyPI makes the first packet of every flow forward ({src['orientation']}); CIC "
        "reverses a flow whose first packet is a SYN-ACK, and a flow that continues a connection cut by the flow "
        "timeout keeps the connection's orientation (`FlowGenerator.addPacket`). Effect: "
        f"{res.mismatches['syn_ack_first']} pairs start with a SYN-ACK, {res.mismatches['continued']} continue a cut "
        f"connection, {res.mismatches['key_split']} are one direction of a VLAN-split connection.",
        f"- **Scope.** PyPI reads IPv4 TCP and UDP through the BPF filter `ip and (tcp or udp)` ({src['bpf']}): "
        f"{res.tw_only['ipv6']} IPv6, {res.tw_only['vlan']} VLAN-tagged and {res.tw_only['not_tcp_udp']} "
        "non-TCP/UDP tapwatch flows have no counterpart.", "",
        "## Features without a counterpart", "",
        "PyPI has no column for " + ", ".join(f"`{x}`" for x in NO_COUNTERPART) + "; they are not compared.", "",
    ]  # fmt: skip


def _termination_finding(a: dict[str, int], d: dict[str, Any], linger: bool) -> str:
    text = (
        "**Flow end after FIN/RST.** `FlowGenerator.addPacket` ends a READY_FOR_TERMINATION flow (after a RST, or "
        "the ACK that follows FINs from both sides) only when the next packet of the 5-tuple carries SYN, or at the "
        "flow timeout; the packets in between (the peer's RST, a last ACK, retransmissions) join it. Check: "
        f"{a['fin_rst_flows']} tapwatch flows ended on FIN/RST; {a['fragments']} tapwatch flows "
        f"({a['fragment_packets']} packets) start within 120 s after one of them on the same 5-tuple without a SYN, "
        f"i.e. hold packets CICFlowMeter adds to the earlier flow. {a['tcp_rst_ge2']} of tapwatch's "
        f"{a['tcp_flows']} TCP flows have `RST Flag Count` >= 2"
    )
    if d:
        text += f" (corrected release sample: {d['tcp_rst_ge2']} of {d['tcp_rows']} TCP rows)"
    if linger:
        text += (
            ". tapwatch closes a READY flow after `--termination-linger` seconds (default 2) without packets, where "
            "the Java source waits for a SYN or the flow timeout, so a trailing packet later than that would start "
            "a tapwatch flow of its own"
        )
    return text + "."


def _key_finding(k: dict[str, Any]) -> str:
    where = ", ".join(f"`{p}`" for p in k["pcaps"]) or "none"
    return (
        "**Flow key.** CICFlowMeter keys flows by the 5-tuple alone (`BasicPacketInfo.fwdFlowId`/`bwdFlowId`, used "
        "by `FlowGenerator.addPacket`); NFStream, and so tapwatch, also by VLAN id (and tunnel), so a connection "
        "whose directions carry different VLAN tags becomes two one-way flows where CIC makes one. Check: "
        f"{k['flows']} tapwatch flows are open at the same time as another tapwatch flow of the same 5-tuple "
        f"(pcaps: {where})."
    )


def _dataset_findings(d: dict[str, Any]) -> list[str]:
    return [
        "**Subflow columns.** `BasicFlow.getSflow_*` divide by the count of > 1 s gaps; tapwatch divides by the "
        "packet count (integer division), as the corrected release does: "
        f"{d['subflow_pkts_div_packets']} / {d['rows']} rows for `Subflow Fwd Packets`, "
        f"{d['subflow_bytes_div_packets']} / {d['rows']} for `Subflow Fwd Bytes` (PyPI's totals: "
        f"{d['subflow_equals_totals']} / {d['rows']}).",
        "**`Fwd Act Data Pkts`.** `BasicFlow.firstPacket` counts the first packet when it carries payload; tapwatch "
        f"leaves it out. Of the {d['act_all_payload']} release rows whose forward packets all carry payload "
        f"(`Fwd Packet Length Min` > 0), {d['act_minus_one']} hold forward packets - 1 (tapwatch's rule) and "
        f"{d['act_all']} forward packets (the Java rule).",
        "**`Bwd Init Win Bytes`.** `BasicFlow.addPacket` keeps the first non-zero backward window; tapwatch (and "
        f"PyPI) the last one. Of the {d['bwd_rst_rows']} release TCP rows with two or more backward packets and a "
        f"backward RST, {d['bwd_rst_win0']} have `Bwd Init Win Bytes` 0, which the Java rule gives only when every "
        "backward window is 0.",
        "**`Total TCP Flow Time` of UDP.** `FlowGenerator` accumulates `cumulativeConnectionDuration` for TCP and UDP "
        f"(`TCP_UDP_LIST_FILTER`); tapwatch writes 0 for UDP, as do {d['udp_total_tcp_flow_time_zero']} / "
        f"{d['udp_rows']} UDP rows of the release. Not compared here (no PyPI counterpart).",
    ]


def tapwatch_findings(ev: dict[str, Any]) -> list[str]:
    d = ev["dataset"]
    items = [_termination_finding(ev["after_termination"], d, ev["linger"]), _key_finding(ev["key_splits"])]
    items += _dataset_findings(d) if d else []
    intro = (
        "Where tapwatch departs from the Java source, with the evidence of this run and, where the Java source and "
        "the training data disagree, of the corrected CIC-IDS2017 sample"
        + (f" `{d['path']}` ({d['rows']} rows)." if d else " (not found).")
    )
    return ["## tapwatch against the Java reference", "", intro, "", *(f"{i}. {t}" for i, t in enumerate(items, 1)), ""]


def pcap_table(res: Result, meta: dict[str, Any]) -> list[str]:
    pairs = Counter(p.tw.pcap for p in res.pairs)
    out = ["## Pcaps", "", "Read from `../shared/pcaps` (MANIFEST.csv); sha256 checked against the manifest.", "",
           "| pcap | category | sha256 | link | VLAN frames | frames | PyPI flows | tapwatch flows | matched | PyPI s "
           "| tapwatch s |", "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for run in res.runs:
        m, f = meta["pcaps"][run.rel], res.facts[run.rel]
        out.append(f"| `{run.rel}` | {m['category']} | `{m['sha256'][:12]}` {'✓' if m['sha256_ok'] else '✗'} | "
                   f"{'/'.join(map(str, f['linktypes']))} | {f['vlan_frames']} | {f['frames']} | {len(run.pypi_rows)} "
                   f"| {len(run.tw_rows)} | {pairs[run.rel]} | {run.pypi_s:.1f} | {run.tw_s:.1f} |")  # fmt: skip
    return [*out, ""]


def source_refs(venv: Path) -> dict[str, str]:
    refs = {f"{c.id}:{i}": pypi_source_line(venv, rel, text) for c in CAUSES for i, (rel, text) in enumerate(c.pypi)}
    refs["fin"] = pypi_source_line(venv, "flow_session.py", '"F" in pkt.flags')
    refs["gc"] = pypi_source_line(venv, "flow_session.py", "and flow.duration < 90")
    refs["orientation"] = pypi_source_line(venv, "flow_session.py", "flow = Flow(pkt, direction)")
    refs["bpf"] = pypi_source_line(venv, "sniffer.py", 'filter="ip and (tcp or udp)"')
    return refs


def render(res: Result, meta: dict[str, Any], ev: dict[str, Any], src: dict[str, str]) -> str:
    n = _counts(res)
    lines = ["# Parity with the PyPI package `cicflowmeter`", "",
             f"Generated by `bench/parity_cicflowmeter.py` on {meta['date']}; do not edit, rerun the script. The "
             "reference for which side follows CICFlowMeter is the corrected CICFlowMeter Java source "
             "(`BasicFlow`, `FlowGenerator`, `BasicPacketInfo`, `PacketReader`); methods are cited by name.", "",
             "## Summary", "", *summary(res, n, ev), "", *family_rows(res, n), ""]  # fmt: skip
    lines += method(meta) + matching(res, n) + feature_table(res, n) + causes_section(res, ev, src)
    lines += boundaries(res, src) + tapwatch_findings(ev) + pcap_table(res, meta)
    return "\n".join(lines)


def to_json(res: Result, meta: dict[str, Any], ev: dict[str, Any], src: dict[str, str]) -> dict[str, Any]:
    feats = {
        s.name: {
            "agree_all": s.agree_all,
            "agree_comparable": s.agree_clean,
            "agree_comparable_2plus": s.agree_clean2,
            "causes": dict(s.causes),
        }
        for s in res.stats
    }
    causes = {
        c.id: {
            "title": c.title,
            "verdict": c.verdict,
            "java": c.java,
            "check": c.checked,
            "pypi_source": [src[f"{c.id}:{i}"] for i in range(len(c.pypi))],
        }
        for c in CAUSES
    }
    runs = {
        r.rel: {
            **meta["pcaps"][r.rel],
            **res.facts[r.rel],
            "pypi_flows": len(r.pypi_rows),
            "tapwatch_flows": len(r.tw_rows),
            "pypi_s": round(r.pypi_s, 2),
            "tapwatch_s": round(r.tw_s, 2),
            "tapwatch_exit": r.tw_rc,
        }
        for r in res.runs
    }
    return {"meta": {k: v for k, v in meta.items() if k != "pcaps"}, "counts": _counts(res),
            "tolerances_us": {"time": TIME_TOL_US, "time_std": TIME_STD_TOL_US},
            "unmatched": {"tapwatch_only": dict(res.tw_only), "pypi_only": dict(res.py_only),
                          "not_comparable": dict(res.mismatches)},
            "features": feats, "no_counterpart": list(NO_COUNTERPART), "causes": causes, "evidence": ev,
            "pcaps": runs}  # fmt: skip


# -- main ------------------------------------------------------------------------------------------
def pcap_meta() -> dict[str, dict[str, Any]]:
    man = manifest()
    out = {}
    for rel in PCAPS:
        digest = sha256(PCAP_ROOT / rel)
        out[rel] = {"category": man[rel]["category"], "sha256": digest, "sha256_ok": digest == man[rel]["sha256"]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DOC, help="Markdown report; the JSON goes next to it.")
    ap.add_argument("--venv", type=Path, default=VENV, help="Virtual environment for the PyPI package.")
    ap.add_argument("--jobs", type=int, default=2, help="Pcaps processed at once (the machines have 2 cores).")
    ap.add_argument("--keep", type=Path, help="Keep both tools' CSVs in this directory.")
    ap.add_argument("--tapwatch-rev", default="HEAD", help="Git revision of tapwatch to run (the work tree is shared).")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    t0 = time.monotonic()
    exe = ensure_venv(args.venv, REQUIREMENTS)
    facts = {rel: link_facts(PCAP_ROOT / rel) for rel in PCAPS}
    with tempfile.TemporaryDirectory(prefix="parity-") as tmp:
        commit = tapwatch_snapshot(args.tapwatch_rev, Path(tmp) / "src")
        meta: dict[str, Any] = {"versions": versions(args.venv, commit), "pcaps": pcap_meta(),
                                "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
                                "command": "python bench/parity_cicflowmeter.py"}  # fmt: skip
        work = args.keep or Path(tmp) / "csv"
        work.mkdir(parents=True, exist_ok=True)
        res = analyse(run_all(Tools(exe, Path(tmp) / "src", work), args.jobs), facts)
        linger = any("--termination-linger" in f.read_text() for f in (Path(tmp) / "src").rglob("*.py"))
    ev = {"link_overhead": link_overhead(res.pairs, facts), "linger": linger, "key_splits": key_splits(res.tws),
          "after_termination": after_termination(res.tws, res.pairs), "dataset": dataset_checks()}  # fmt: skip
    src = source_refs(args.venv)
    meta["runtime_s"] = time.monotonic() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(render(res, meta, ev, src))
    args.out.with_suffix(".json").write_text(json.dumps(to_json(res, meta, ev, src), indent=1, sort_keys=True) + "\n")
    log.info("wrote %s and %s in %.0f s", args.out, args.out.with_suffix(".json"), meta["runtime_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())

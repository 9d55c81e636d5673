"""The PyPI package ``cicflowmeter`` (0.2.0), an independent CICFlowMeter implementation, run beside tapwatch.

Shared by ``bench/parity_cicflowmeter.py`` (feature parity) and the live check
(:mod:`lab.live_check`): the package's private venv (:func:`ensure_venv`), its command line
(:func:`pypi_cmd`), its column names in the corrected CIC-IDS2017 spelling (:data:`PYPI_TO_CIC`), flows of
either tool reduced to what matching needs (:class:`Flow`) and the matching itself (:func:`match`: the same
5-tuple in either orientation, starts that agree within PyPI's whole-second timestamp).

For the live check, :func:`cic_frame` turns PyPI's rows into a CSV ``tapwatch score`` reads (corrected
CIC-IDS2017 header, PyPI's own timestamp) and fills the features PyPI has no column for (:data:`FILLED`), and
:func:`pypi_first_seen_ms` gives each PyPI flow the first-packet time of the tapwatch flow it matches, so that
both tools' flows are labelled by the same phase table.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from tapwatch.features.contract import FEATURE_NAMES, TIME_RESOLUTION_US
from tapwatch.features.errors import TapwatchError

log = logging.getLogger(__name__)

# PyPI cicflowmeter column -> corrected CIC-IDS2017 column (features/contract.py FEATURE_NAMES).
PYPI_TO_CIC = {
    "protocol": "Protocol", "flow_duration": "Flow Duration",
    "tot_fwd_pkts": "Total Fwd Packet", "tot_bwd_pkts": "Total Bwd packets",
    "totlen_fwd_pkts": "Total Length of Fwd Packet", "totlen_bwd_pkts": "Total Length of Bwd Packet",
    "fwd_pkt_len_max": "Fwd Packet Length Max", "fwd_pkt_len_min": "Fwd Packet Length Min",
    "fwd_pkt_len_mean": "Fwd Packet Length Mean", "fwd_pkt_len_std": "Fwd Packet Length Std",
    "bwd_pkt_len_max": "Bwd Packet Length Max", "bwd_pkt_len_min": "Bwd Packet Length Min",
    "bwd_pkt_len_mean": "Bwd Packet Length Mean", "bwd_pkt_len_std": "Bwd Packet Length Std",
    "flow_byts_s": "Flow Bytes/s", "flow_pkts_s": "Flow Packets/s",
    "flow_iat_mean": "Flow IAT Mean", "flow_iat_std": "Flow IAT Std",
    "flow_iat_max": "Flow IAT Max", "flow_iat_min": "Flow IAT Min",
    "fwd_iat_tot": "Fwd IAT Total", "fwd_iat_mean": "Fwd IAT Mean", "fwd_iat_std": "Fwd IAT Std",
    "fwd_iat_max": "Fwd IAT Max", "fwd_iat_min": "Fwd IAT Min",
    "bwd_iat_tot": "Bwd IAT Total", "bwd_iat_mean": "Bwd IAT Mean", "bwd_iat_std": "Bwd IAT Std",
    "bwd_iat_max": "Bwd IAT Max", "bwd_iat_min": "Bwd IAT Min",
    "fwd_psh_flags": "Fwd PSH Flags", "bwd_psh_flags": "Bwd PSH Flags",
    "fwd_urg_flags": "Fwd URG Flags", "bwd_urg_flags": "Bwd URG Flags",
    "fwd_header_len": "Fwd Header Length", "bwd_header_len": "Bwd Header Length",
    "fwd_pkts_s": "Fwd Packets/s", "bwd_pkts_s": "Bwd Packets/s",
    "pkt_len_min": "Packet Length Min", "pkt_len_max": "Packet Length Max",
    "pkt_len_mean": "Packet Length Mean", "pkt_len_std": "Packet Length Std",
    "pkt_len_var": "Packet Length Variance",
    "fin_flag_cnt": "FIN Flag Count", "syn_flag_cnt": "SYN Flag Count", "rst_flag_cnt": "RST Flag Count",
    "psh_flag_cnt": "PSH Flag Count", "ack_flag_cnt": "ACK Flag Count", "urg_flag_cnt": "URG Flag Count",
    "cwr_flag_count": "CWR Flag Count", "ece_flag_cnt": "ECE Flag Count",
    "down_up_ratio": "Down/Up Ratio", "pkt_size_avg": "Average Packet Size",
    "fwd_seg_size_avg": "Fwd Segment Size Avg", "bwd_seg_size_avg": "Bwd Segment Size Avg",
    "fwd_byts_b_avg": "Fwd Bytes/Bulk Avg", "fwd_pkts_b_avg": "Fwd Packet/Bulk Avg",
    "fwd_blk_rate_avg": "Fwd Bulk Rate Avg", "bwd_byts_b_avg": "Bwd Bytes/Bulk Avg",
    "bwd_pkts_b_avg": "Bwd Packet/Bulk Avg", "bwd_blk_rate_avg": "Bwd Bulk Rate Avg",
    "subflow_fwd_pkts": "Subflow Fwd Packets", "subflow_fwd_byts": "Subflow Fwd Bytes",
    "subflow_bwd_pkts": "Subflow Bwd Packets", "subflow_bwd_byts": "Subflow Bwd Bytes",
    "init_fwd_win_byts": "FWD Init Win Bytes", "init_bwd_win_byts": "Bwd Init Win Bytes",
    "fwd_act_data_pkts": "Fwd Act Data Pkts", "fwd_seg_size_min": "Fwd Seg Size Min",
    "active_mean": "Active Mean", "active_std": "Active Std", "active_max": "Active Max", "active_min": "Active Min",
    "idle_mean": "Idle Mean", "idle_std": "Idle Std", "idle_max": "Idle Max", "idle_min": "Idle Min",
}  # fmt: skip
NO_COUNTERPART = tuple(n for n in FEATURE_NAMES if n not in PYPI_TO_CIC.values())

TIME_TOL_US = float(TIME_RESOLUTION_US)
START_SLACK_S = 0.002  # PyPI's timestamp is whole seconds, tapwatch's whole ms; both truncate


class PypiError(TapwatchError):
    """The PyPI ``cicflowmeter`` could not be installed or run."""


# -- the tool --------------------------------------------------------------------------------------
def ensure_venv(venv: Path, requirements: Path) -> Path:
    """Create the PyPI tool's venv with the ordinary ``venv`` + ``pip``; return its ``cicflowmeter``.

    ``pip install -r`` runs every time: it is a no-op when the pins are met and repairs a venv that drifted.
    """
    if not (venv / "bin" / "python").exists():
        log.info("creating %s", venv)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(requirements)]
    subprocess.run(pip, check=True)
    return venv / "bin" / "cicflowmeter"


def pypi_cmd(exe: Path, pcap: Path, out: Path) -> list[str]:
    return [str(exe), "-f", str(pcap), "-c", str(out)]


# -- flows and matching ---------------------------------------------------------------------------------
@dataclass
class Flow:
    """One row of either tool, reduced to what the comparison needs."""

    pcap: str
    proto: int
    src: tuple[str, int]
    dst: tuple[str, int]
    start_s: float
    packets: int
    v: dict[str, float]
    expiry: str = ""

    @property
    def group(self) -> tuple[Any, ...]:
        return (self.pcap, self.proto, *sorted([self.src, self.dst]))


def pypi_flow(rel: str, row: dict[str, str]) -> Flow:
    v = {cic: float(row[col]) for col, cic in PYPI_TO_CIC.items()}
    start = datetime.strptime(row["timestamp"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC).timestamp()
    src, dst = (row["src_ip"], int(row["src_port"])), (row["dst_ip"], int(row["dst_port"]))
    return Flow(rel, int(row["protocol"]), src, dst, start, int(v["Total Fwd Packet"] + v["Total Bwd packets"]), v)


def tapwatch_flow(rel: str, row: dict[str, str]) -> Flow:
    v = {n: float(row[n]) for n in FEATURE_NAMES}
    src, dst = (row["Src IP"], int(row["Src Port"])), (row["Dst IP"], int(row["Dst Port"]))
    return Flow(rel, int(row["Protocol"]), src, dst, int(row["first_seen_ms"]) / 1000, int(row["packets"]), v,
                row["expiry_reason"])  # fmt: skip


@dataclass
class Pair:
    tw: Flow
    py: Flow

    @property
    def reversed(self) -> bool:
        return self.tw.src != self.py.src

    @property
    def clean(self) -> bool:
        """Same packets (count and time span) in the same orientation: every difference is one of definition."""
        span = abs(self.tw.v["Flow Duration"] - self.py.v["Flow Duration"]) <= TIME_TOL_US
        return not self.reversed and self.tw.packets == self.py.packets and span


def _start_ok(tw: Flow, py: Flow) -> bool:
    d = tw.start_s - py.start_s
    return -START_SLACK_S <= d < 1 + START_SLACK_S


def match(tws: list[Flow], pys: list[Flow]) -> tuple[list[Pair], list[Flow], list[Flow]]:
    """Pair flows of the same 5-tuple (either orientation) whose starts agree; fewest packet differences first."""
    groups: dict[tuple[Any, ...], tuple[list[Flow], list[Flow]]] = defaultdict(lambda: ([], []))
    for f in tws:
        groups[f.group][0].append(f)
    for f in pys:
        groups[f.group][1].append(f)
    pairs: list[Pair] = []
    for ts, ps in groups.values():
        cands = sorted(
            (abs(t.packets - p.packets), abs(t.start_s - p.start_s), i, j)
            for i, t in enumerate(ts)
            for j, p in enumerate(ps)
            if _start_ok(t, p)
        )
        used_t: set[int] = set()
        used_p: set[int] = set()
        for _, _, i, j in cands:
            if i not in used_t and j not in used_p:
                used_t.add(i)
                used_p.add(j)
                pairs.append(Pair(ts[i], ps[j]))
    paired_t, paired_p = {id(p.tw) for p in pairs}, {id(p.py) for p in pairs}
    return pairs, [f for f in tws if id(f) not in paired_t], [f for f in pys if id(f) not in paired_p]


# -- the live check's use --------------------------------------------------------------------------
VENV = Path(".parity-venv")
"""The venv ``bench/parity_cicflowmeter.py`` builds (gitignored), relative to the repository root."""
REQUIREMENTS = Path("bench/parity_requirements.txt")
FILLED: dict[str, float] = {n: -1.0 if n in ("ICMP Code", "ICMP Type") else 0.0 for n in NO_COUNTERPART}
"""The features PyPI has no column for, and the value written for them. CIC-IDS2017 writes ``ICMP Code`` and
``ICMP Type`` -1 for TCP and UDP flows (every PyPI flow is one), so -1; ``Fwd RST Flags``, ``Bwd RST Flags``
(PyPI counts RSTs of both directions together) and ``Total TCP Flow Time``: 0."""
KEY_COLUMNS = ("Src IP", "Src Port", "Dst IP", "Dst Port", "Timestamp")
_PYPI_KEYS = ("src_ip", "src_port", "dst_ip", "dst_port", "timestamp")
_TIMEOUT_S = 900.0


def full_snaplen_problem(pcap: Path) -> str | None:
    """Why PyPI cannot read ``pcap`` correctly (frames cut short: it takes lengths from the captured bytes)."""
    with pcap.open("rb") as fh:
        head = fh.read(24)
    if len(head) < 24 or head[:4] not in (b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                                          b"\xa1\xb2\x3c\x4d"):  # fmt: skip
        return "not a classic pcap file"
    snaplen = int.from_bytes(head[16:20], "little" if head[0] in (0xD4, 0x4D) else "big")
    return None if snaplen >= 65535 else f"the capture keeps only {snaplen} bytes of each frame (use snaplen 0)"


@dataclass
class PypiRun:
    """``cicflowmeter -f PCAP -c OUT`` running in the background (in UTC: it writes local time).

    :meth:`start` returns at once, so that tapwatch's own extraction and scoring run meanwhile; :meth:`wait`
    returns its wall seconds or raises :class:`PypiError`.
    """

    exe: Path
    out: Path
    proc: subprocess.Popen[str]
    started: float

    @classmethod
    def start(cls, exe: Path, pcap: Path, out: Path) -> PypiRun:
        env = dict(os.environ, TZ="UTC")
        try:
            proc = subprocess.Popen(pypi_cmd(exe, pcap, out), env=env, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, text=True)  # fmt: skip
        except OSError as err:
            raise PypiError(f"cicflowmeter did not start: {err}") from err
        return cls(exe, out, proc, time.monotonic())

    def wait(self) -> float:
        try:
            _, err = self.proc.communicate(timeout=_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            self.proc.kill()
            self.proc.communicate()
            raise PypiError(f"cicflowmeter took over {_TIMEOUT_S:.0f} s") from exc
        if self.proc.returncode != 0 or not self.out.is_file():
            raise PypiError(f"cicflowmeter exited with {self.proc.returncode}: {err.strip()[-300:]}")
        return time.monotonic() - self.started

    def stop(self) -> None:
        """End the process (this run's own, by its handle) when the check fails before waiting for it."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.communicate()


def read_pypi(path: Path) -> pd.DataFrame:
    """PyPI's CSV as text; every column the mapping needs must be there."""
    rows = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in (*_PYPI_KEYS, *PYPI_TO_CIC) if c not in rows.columns]
    if missing:
        raise PypiError(f"{path}: cicflowmeter's CSV lacks columns {missing}")
    return rows


def cic_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """PyPI's rows with the corrected CIC-IDS2017 header ``tapwatch score`` reads, :data:`FILLED` added.

    The values are PyPI's (µs times, which ``tapwatch score`` quantises to 1 ms as for any CICFlowMeter CSV);
    ``Timestamp`` is PyPI's own (whole seconds, UTC), so windows order a host's flows as PyPI dates them.

    Example
    -------
    >>> row = {c: "1" for c in PYPI_TO_CIC} | {"src_ip": "10.0.0.1", "src_port": "5", "dst_ip": "10.0.0.2",
    ...        "dst_port": "80", "timestamp": "2026-01-01 10:00:00"}
    >>> f = cic_frame(pd.DataFrame([row]))
    >>> f.loc[0, "Src IP"], f.loc[0, "Flow Duration"], float(f.loc[0, "ICMP Type"]), len(f.columns)
    ('10.0.0.1', '1', -1.0, 87)
    """
    out = pd.DataFrame({cic: rows[col] for col, cic in zip(_PYPI_KEYS, KEY_COLUMNS, strict=True)})
    for col, cic in PYPI_TO_CIC.items():
        out[cic] = rows[col]
    for name, value in FILLED.items():
        out[name] = value
    return out[[*KEY_COLUMNS, *FEATURE_NAMES]]


def pypi_first_seen_ms(rows: pd.DataFrame, tapwatch_rows: pd.DataFrame) -> pd.Series:
    """Each PyPI flow's first-packet time (epoch ms) from the tapwatch flow it matches (:func:`match`); -1: none.

    PyPI dates a flow to the whole second; the phase table needs the first packet's time. The tapwatch flow of
    the same 5-tuple (either orientation) that starts within that second holds the same first packet.
    """
    text = tapwatch_rows.astype(str)
    tws = [tapwatch_flow("live", r) for r in text.to_dict("records")]
    pys = [pypi_flow("live", r) for r in rows.to_dict("records")]
    first = {id(f): int(ms) for f, ms in zip(tws, text["first_seen_ms"], strict=True)}
    pairs, _, _ = match(tws, pys)
    got = {id(p.py): first[id(p.tw)] for p in pairs}
    return pd.Series([got.get(id(f), -1) for f in pys], index=rows.index, dtype="int64")


def installed_versions(venv: Path, packages: tuple[str, ...] = ("cicflowmeter", "scapy", "numpy")) -> dict[str, str]:
    """The versions of ``packages`` in ``venv``, from their ``dist-info`` folder names."""
    out = {}
    for name in packages:
        info = next(iter(sorted(venv.glob(f"lib/python*/site-packages/{name}-*.dist-info"))), None)
        out[name] = info.name.removesuffix(".dist-info").split("-", 1)[1] if info else "not installed"
    return out

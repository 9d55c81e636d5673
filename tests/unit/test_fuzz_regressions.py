"""What the fuzz run (issue 17, bench/fuzz_captures.py, docs/fuzz.md) found, kept as regression tests.

Times no output can hold: libpcap reads a pcap's 32-bit seconds as signed, so 0x80000000 and up are times before
1970, which NFStream keeps as unsigned milliseconds near 2^64; a pcapng's 64-bit times, or a coarse ``if_tsresol``,
reach past the year 9999. ``tapwatch flows`` died on them with exit 1 (``ValueError: year 584555951 is out of
range``, writing the CSV's Timestamp). Now the structure walk names the first such packet, flows holding an
impossible time are left out, and the command exits 2 with one line; the flows before it are written. Each mutant
is built from capture/samples/sample.pcap.

A pcapng cut to its first 1-3 bytes (``\\n\\r\\r``) was described as blank text, and a pcap cut inside its magic as
an unknown format: both are now named as truncated.
"""

from __future__ import annotations

import csv
from datetime import datetime
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from bench.fuzz_mutants import EPB, IDB, Pcap, Pcapng
from tapwatch.capture.meter import CaptureConfig, RecordBuilder
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.plugin import IDLE_OR_END, FlowResult
from tapwatch.capture.source import MAX_CAPTURE_MS, scan_pcap
from tests.support.cli import one_error_line, run
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
BAD = 40
"""The record (or packet block) that gets the impossible time: flows of the 40 packets before it are written."""


def _pcap_with_second(tmp_path: Path, sec: int) -> Path:
    p = Pcap.parse(SAMPLE.read_bytes())
    p.records[BAD][0] = sec
    f = tmp_path / "when.pcap"
    f.write_bytes(p.bytes())
    return f


def _rows_and_line(f: Path, tmp_path: Path) -> tuple[list[dict[str, str]], str]:
    out = tmp_path / "o.csv"
    line = one_error_line(run("flows", str(f), "-o", str(out)))
    return list(csv.DictReader(out.open())), line


@pytest.mark.parametrize("sec", [0x80000000, 0xFFFFFF00, 0xFFFFFFFF])
def test_a_pcap_time_before_1970_is_named_and_the_flows_before_it_are_written(tmp_path: Path, sec: int) -> None:
    f = _pcap_with_second(tmp_path, sec)
    rows, line = _rows_and_line(f, tmp_path)
    assert f"when.pcap: corrupt: invalid timestamp {sec - (1 << 32)} s (before 1970) at byte" in line
    assert f"read {BAD} packets" in line and line.endswith("flows of the readable part were written")
    for r in rows:  # every written time is a real one
        assert 0 <= int(r["first_seen_ms"]) <= int(r["last_seen_ms"]) <= MAX_CAPTURE_MS
        datetime.strptime(r["Timestamp"], "%Y-%m-%d %H:%M:%S.%f")


def test_a_late_but_possible_pcap_time_is_read(tmp_path: Path) -> None:
    f = _pcap_with_second(tmp_path, 0x7FFFFFFF)  # 2038-01-19: the last second libpcap reads as positive
    assert scan_pcap(str(f)).problem is None
    proc = run("flows", str(f), "-o", str(tmp_path / "o.csv"))
    assert proc.returncode == 0, proc.stderr


def _pcapng(tmp_path: Path, damage: str) -> Path:
    ng = Pcapng.from_pcap(Pcap.parse(SAMPLE.read_bytes()), "<")
    if damage == "far-future":  # µs since 1970 with the high word all ones: the year 586524
        i = ng.where(EPB)[BAD]
        body = bytearray(ng.blocks[i][1])
        body[4:8] = b"\xff\xff\xff\xff"
        ng.blocks[i][1] = bytes(body)
    else:  # if_tsresol 10^0: the file's µs counts read as seconds
        i = ng.where(IDB)[0]
        ng.blocks[i][1] = ng.blocks[i][1][:8] + bytes([9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0])
    f = tmp_path / "when.pcapng"
    f.write_bytes(ng.bytes())
    return f


@pytest.mark.parametrize("damage", ["far-future", "tsresol-seconds"])
def test_a_pcapng_time_after_the_year_9999_is_named(tmp_path: Path, damage: str) -> None:
    rows, line = _rows_and_line(_pcapng(tmp_path, damage), tmp_path)
    assert "when.pcapng: corrupt: invalid timestamp " in line and "s (after the year 9999) at byte" in line
    assert f"read {BAD if damage == 'far-future' else 0} packets" in line
    assert all(int(r["last_seen_ms"]) <= MAX_CAPTURE_MS for r in rows)
    assert (len(rows) > 0) == (damage == "far-future")


def test_detect_refuses_the_same_file_on_one_line(tmp_path: Path) -> None:
    f = _pcap_with_second(tmp_path, 0x80000000)
    line = one_error_line(run("detect", str(f), "-o", str(tmp_path / "a.jsonl")))
    assert "when.pcap: corrupt: invalid timestamp -2147483648 s (before 1970)" in line
    assert line.endswith("its readable part was processed")


def test_the_record_builder_leaves_out_a_flow_with_an_impossible_time() -> None:
    """The guard behind the walk: NFStream's wrapped time never reaches an output, and it is counted."""
    builder = RecordBuilder(CaptureConfig(sensor="t"), CaptureMetrics(CollectorRegistry()))
    wrapped = (1 << 64) - 1000
    flow = FlowResult("10.0.0.1", 1, "10.0.0.2", 2, 6, 1_000, wrapped, 3, 180, IDLE_OR_END, ())
    assert builder.build(flow, capture_end_ms=wrapped) is None
    assert builder.out_of_time == 1


@pytest.mark.parametrize(
    ("head", "words"),
    [(b"\n\r\r", "3 bytes, shorter than the 28-byte pcapng section header block"),
     (b"\n", "1 bytes, shorter than the 28-byte pcapng section header block"),
     (b"\xd4\xc3", "2 bytes, shorter than the 24-byte pcap header")],
)  # fmt: skip
def test_a_capture_cut_inside_its_magic_is_named_as_truncated(tmp_path: Path, head: bytes, words: str) -> None:
    f = tmp_path / "cut.pcapng"
    f.write_bytes(head)
    line = one_error_line(run("flows", str(f), "-o", str(tmp_path / "o.csv")))
    assert line == f"tapwatch: error: {f}: truncated: {words}; 0 packets read"

"""Cut captures of ../shared (pcap and pcapng) and a bad BPF filter on a real one get exit code 2 and one line
naming the file and the problem; no traceback."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from tests.support.cli import one_error_line, run, sample_pcap


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_pcap_reports_how_much_was_read(shared: Path, tmp_path: Path, cut: float) -> None:
    data = sample_pcap(shared).read_bytes()
    f = tmp_path / "cut.pcap"
    f.write_bytes(data[: int(len(data) * cut)])
    out = tmp_path / "o.csv"
    line = one_error_line(run("flows", str(f), "-o", str(out)))
    assert "cut.pcap: truncated: the file ends inside record" in line and "packets (" in line
    read = int(line.split("read ")[1].split(" packets")[0])
    assert 0 < read < 431  # sshguess.pcap holds 431 packets
    rows = list(csv.DictReader(out.open()))
    assert rows, "flows of the readable part are written"
    assert sum(int(r["packets"]) for r in rows) <= read


def test_truncated_pcapng(shared: Path, tmp_path: Path) -> None:
    data = (shared / "pcaps" / "zeek" / "http" / "cooper-grill-dvwa.pcapng").read_bytes()
    f = tmp_path / "cut.pcapng"
    f.write_bytes(data[: len(data) // 2])
    assert "cut.pcapng: truncated" in one_error_line(run("flows", str(f), "-o", str(tmp_path / "o.csv")))


def test_bad_bpf_filter(shared: Path) -> None:
    line = one_error_line(run("flows", str(sample_pcap(shared)), "--bpf", "tcp and and port"))
    assert line.startswith("tapwatch: error: --bpf: 'tcp and and port' is not a valid BPF filter: ")  # issue 10

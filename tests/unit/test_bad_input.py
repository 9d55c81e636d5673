"""Bad input gets exit code 2 and one line naming the file or interface and the problem; no traceback.

Cut captures of ../shared: tests/corpus/test_bad_input_corpus.py; files and interfaces the user may not read:
tests/netns/test_bad_input_root.py (they need root to drop privileges)."""

from __future__ import annotations

from pathlib import Path

from tests.support.cli import one_error_line, run


def test_missing_file(tmp_path: Path) -> None:
    line = one_error_line(run("flows", str(tmp_path / "nope.pcap"), "-o", str(tmp_path / "o.csv")))
    assert "nope.pcap: no such file" in line


def test_empty_file(tmp_path: Path) -> None:
    f = tmp_path / "empty.pcap"
    f.write_bytes(b"")
    assert "empty.pcap: empty file" in one_error_line(run("flows", str(f)))


def test_not_a_pcap(tmp_path: Path) -> None:
    f = tmp_path / "notes.pcap"
    f.write_text("flow,label\n1,BENIGN\n")
    assert "notes.pcap: not a pcap or pcapng file" in one_error_line(run("flows", str(f)))


def test_unknown_interface() -> None:
    line = one_error_line(run("capture", "-i", "nosuchif0", "--metrics-port", "0"))
    assert "nosuchif0: no such network interface" in line


def test_usage_errors_exit_2() -> None:
    proc = run("capture")
    assert proc.returncode == 2 and "exactly one of --interface or --pcap" in proc.stderr
    assert run("flows").returncode == 2
    assert run("no-such-command").returncode == 2

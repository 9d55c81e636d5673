"""Bad input gets exit code 2 and one line naming the file or interface and the problem; no traceback."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tapwatch.app.cli import main
from tests.conftest import need

TAPWATCH = [sys.executable, "-m", "tapwatch.app"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*TAPWATCH, *args], capture_output=True, text=True, timeout=120)


def run_as_nobody(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a forked child that dropped to uid/gid 65534 (no capabilities left)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, run the command, report stderr and the exit code
        code = 1
        try:
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            err = io.StringIO()
            with contextlib.redirect_stderr(err):
                try:
                    main(list(args), standalone_mode=True)
                except SystemExit as exit_:
                    code = int(exit_.code or 0)
            os.write(write_fd, err.getvalue().encode())
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        stderr = fh.read()
    _, status = os.waitpid(pid, 0)
    return subprocess.CompletedProcess(list(args), os.waitstatus_to_exitcode(status), "", stderr)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in lines if ln.startswith("tapwatch: error:")]
    assert len(errors) == 1, lines
    return errors[0]


def sample_pcap(shared: Path) -> Path:
    return shared / "pcaps" / "zeek" / "ssh" / "sshguess.pcap"


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


def test_unknown_interface() -> None:
    line = one_error_line(run("capture", "-i", "nosuchif0", "--metrics-port", "0"))
    assert "nosuchif0: no such network interface" in line


def test_no_permission_to_read_the_file(shared: Path, tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root to drop privileges to uid 65534")
    f = tmp_path / "private.pcap"
    shutil.copy(sample_pcap(shared), f)
    f.chmod(0o600)
    tmp_path.chmod(0o755)
    assert "private.pcap: permission denied" in one_error_line(run_as_nobody("flows", str(f), "-o", "/dev/null"))


def test_no_permission_to_capture() -> None:
    need(os.geteuid() == 0, "needs root to drop privileges to uid 65534")
    line = one_error_line(run_as_nobody("capture", "-i", "lo", "--metrics-port", "0"))
    assert "lo: permission denied: live capture needs CAP_NET_RAW" in line


def test_bad_bpf_filter(shared: Path) -> None:
    line = one_error_line(run("flows", str(sample_pcap(shared)), "--bpf", "tcp and and port"))
    assert "sshguess.pcap" in line


def test_usage_errors_exit_2() -> None:
    proc = run("capture")
    assert proc.returncode == 2 and "exactly one of --interface or --pcap" in proc.stderr
    assert run("flows").returncode == 2
    assert run("no-such-command").returncode == 2

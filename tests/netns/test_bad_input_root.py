"""A file or an interface the user may not read gets exit code 2 and one line saying so; no traceback. The
command runs in a child that dropped to uid 65534, so these tests need root."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
from pathlib import Path

from tapwatch.app.cli import main
from tests.support.cli import one_error_line, sample_pcap
from tests.support.env import need


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

"""A file or an interface the user may not read gets exit code 2 and one line saying so; no traceback. The
command runs in a child that dropped to uid 65534, so these tests need root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tapwatch.app.cli import main
from tests.support.cli import one_error_line, run_as_nobody, sample_pcap
from tests.support.env import need


def test_no_permission_to_read_the_file(shared: Path, tmp_path: Path) -> None:
    need(os.geteuid() == 0, "needs root to drop privileges to uid 65534")
    f = tmp_path / "private.pcap"
    shutil.copy(sample_pcap(shared), f)
    f.chmod(0o600)
    tmp_path.chmod(0o755)
    assert "private.pcap: permission denied" in one_error_line(run_as_nobody(main, "flows", str(f), "-o", "/dev/null"))


def test_no_permission_to_capture() -> None:
    need(os.geteuid() == 0, "needs root to drop privileges to uid 65534")
    line = one_error_line(run_as_nobody(main, "capture", "-i", "lo", "--metrics-port", "0"))
    assert "lo: permission denied: live capture needs CAP_NET_RAW" in line

"""The overload proof's short form (issue 17): ``bench/overload.py`` for 15 s at six times the worker's capacity.

The script starts real ``tapwatch worker`` and ``tapwatch alerter`` processes on a private Redis and feeds them
through the sensor's publisher; it exits 1 unless every check holds (accounting, readiness, recovery, memory). The
full run (180 s) is docs/overload.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.env import REPO, need


def test_ten_times_the_capacity_is_counted_reported_and_recovered_from(tmp_path: Path) -> None:
    need(shutil.which("redis-server") is not None, "no redis-server on PATH (the overload proof runs Debian's)")
    out = tmp_path / "overload.md"
    # six times the capacity here (a Python producer on 2 shared cores reaches about 8x); the full run is at 10x
    args = [
        "--seconds",
        "15",
        "--factor",
        "6",
        "--maxlen",
        "5000",
        "--verdicts-maxlen",
        "5000",
        "--ready-max-lag",
        "1000",
        "--pcaps",
        "5",
        "--out",
        str(out),
    ]
    res = subprocess.run([sys.executable, str(REPO / "bench" / "overload.py"), *args], capture_output=True,
                         text=True, timeout=600, cwd=REPO)  # fmt: skip
    assert out.exists(), res.stderr[-3000:]
    report = out.read_text()
    held = [line for line in report.splitlines() if line.endswith("| yes |") or line.endswith("| **NO** |")]
    assert len(held) == 9 and all(line.endswith("| yes |") for line in held), report
    assert res.returncode == 0, res.stderr[-3000:]
    assert "trimmed by the stream bound" in report and "recovery after the load stopped" in report

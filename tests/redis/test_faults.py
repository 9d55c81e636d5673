"""The kills-and-restarts proof's short form (issue 17): ``bench/faults.py`` for 20 s at half the pipeline's rate.

The script runs a sensor, two ``tapwatch worker``, a ``tapwatch alerter`` and ``tapwatch console serve --redis`` as
processes on a private Redis, kills each (and restarts Redis) once during the load, and exits 1 unless every check
holds: a verdict or a dead letter for every window, no alert line twice, one open and one close line per episode,
the console's copy complete, counters that agree with the streams. The full run is docs/faults.md.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from tests.support.env import REPO, need


def test_kills_and_restarts_at_load_lose_no_window_no_line_and_no_episode(tmp_path: Path) -> None:
    need(shutil.which("redis-server") is not None, "no redis-server on PATH (the proof runs Debian's)")
    out = tmp_path / "faults.md"
    res = subprocess.run([sys.executable, str(REPO / "bench" / "faults.py"), "--seconds", "20", "--pcaps", "5",
                          "--out", str(out)], capture_output=True, text=True, timeout=900, cwd=REPO)  # fmt: skip
    assert out.exists(), res.stderr[-3000:]
    report = out.read_text()
    held = [line for line in report.splitlines() if line.endswith("| yes |") or line.endswith("| **NO** |")]
    assert len(held) == 10 and all(line.endswith("| yes |") for line in held), report
    assert res.returncode == 0, res.stderr[-3000:]
    kills = [line for line in report.splitlines() if "SIGKILL, started again" in line or "SIGTERM, started" in line]
    assert len(kills) == 5, report

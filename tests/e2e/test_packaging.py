"""The wheel a user installs with ``pip install .``: built without a setuptools warning, holding every room of the
floor plan with its shipped files, and nothing that is not meant to ship (tests, the lab, test kits)."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from tests.support.env import REPO


def test_pip_builds_the_wheel_without_a_warning_and_with_the_right_files(tmp_path: Path) -> None:
    # The build backend runs in pip's isolated build environment, as in `pip install .`.
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-cache-dir", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    said = proc.stdout + proc.stderr
    assert "Warning" not in said and "deprecated" not in said, said
    (wheel,) = tmp_path.glob("tapwatch-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for room in ("features", "bus", "capture", "inference", "alerting", "models", "app", "console"):
        assert f"tapwatch/{room}/__init__.py" in names, room
    for shipped in ("tapwatch/capture/samples/sample.pcap", "tapwatch/models/hybrid-cic.onnx",
                    "tapwatch/models/hybrid-cic.card.json", "tapwatch/models/hybrid-lab.onnx",
                    "tapwatch/models/hybrid-lab.card.json", "tapwatch/models/hybrid-lab.profile.json",
                    "tapwatch/models/training/train.py", "tapwatch/console/templates/episode.html",
                    "tapwatch/console/static/console.css", "tapwatch/console/migrations/env.py",
                    "tapwatch/console/migrations/script.py.mako",
                    "tapwatch/console/migrations/versions/0001_initial.py"):  # fmt: skip
        assert shipped in names, shipped
    assert not [n for n in names if n.startswith(("tests/", "lab/", "tapwatch/tests", "tapwatch/lab"))]
    assert not [n for n in names if n.endswith("testing.py")], "test kits stay in tests/support"


def test_the_readme_main_command_output_is_ignored_by_git() -> None:
    """The README's main command writes alerts.jsonl in the repository root; git must not offer to commit it."""
    assert "-o alerts.jsonl" in (REPO / "README.md").read_text()
    proc = subprocess.run(["git", "check-ignore", "-q", "alerts.jsonl"], cwd=REPO, timeout=30)
    assert proc.returncode == 0, "alerts.jsonl is not ignored (.gitignore)"

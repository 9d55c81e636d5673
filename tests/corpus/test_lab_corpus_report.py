"""The corpus report (python -m lab.corpus_report) on the committed sample corpus, beside the CIC-IDS2017 subset
of ../shared: its tables come from the manifest and the dataset, its medians from both datasets."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.env import CIC_SUBSET, REPO, SHARED, need


def test_the_report_counts_the_sample_and_compares_it_with_cic(tmp_path: Path) -> None:
    need(CIC_SUBSET.is_dir(), f"no CIC-IDS2017 subset at {CIC_SUBSET}")
    sample = REPO / "lab" / "samples" / "ci-corpus"
    out = tmp_path / "corpus.md"
    argv = [sys.executable, "-m", "lab.corpus_report", "--corpus", str(sample), "--shared", str(SHARED), "--out",
            str(out)]  # fmt: skip
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    manifest = json.loads((sample / "manifest.json").read_text())
    benign = sum(u["flows"].get("benign", 0) for u in manifest["units"])
    assert f"total benign flows: {benign}\n" in text
    for unit in manifest["units"]:
        dos = unit["flows"]["dos"]
        assert f"| dos | {unit['link_profile']} | 1 | {dos} |" in text
    assert "| scan | CIC | 10000 | 0% |" in text and "| scan | lab | 400 |" in text
    data = json.loads(out.with_suffix(".json").read_text())
    assert data["counts"]["benign_flows"] == benign and data["dataset_sha256"] == manifest["dataset_sha256"]

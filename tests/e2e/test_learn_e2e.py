"""``tapwatch learn`` as a user runs it, on the committed sample corpus: the poisoning check, the profile's card, and
``detect`` serving the profile (novelty on every verdict) or refusing one learned for another model."""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.env import REPO, need

SAMPLE = REPO / "lab" / "samples" / "ci-corpus" / "flows.csv.gz"
PCAP = REPO / "capture" / "samples" / "sample.pcap"
HAVE_TF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "keras", "tf2onnx"))


def tapwatch(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tapwatch.app", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample corpus's flows as a site would have them: no ``family`` column, attacks and all."""
    out = tmp_path_factory.mktemp("learn") / "site-flows.csv"
    with gzip.open(SAMPLE, "rt", newline="") as src, out.open("w", newline="") as dst:
        reader = csv.DictReader(src)
        keep = [c for c in reader.fieldnames or [] if c not in ("family", "cic_class", "episode_id")]
        writer = csv.DictWriter(dst, keep, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(reader)
    return out


@pytest.fixture(scope="module")
def learned(unlabelled: Path) -> tuple[Path, dict[str, object], str]:
    need(HAVE_TF, "the train extra (tensorflow, keras, tf2onnx) is not installed")
    profile = unlabelled.with_name("site.profile.json")
    done = tapwatch("learn", "--flows", unlabelled, "--epochs", "1", "-o", profile, cwd=unlabelled.parent)
    assert done.returncode == 0, done.stderr
    return profile, json.loads(profile.read_text()), done.stderr


def test_learn_leaves_out_the_attacks_it_finds_and_says_so(learned: tuple[Path, dict[str, object], str]) -> None:
    _, data, stderr = learned
    card = data["card"]
    assert isinstance(card, dict)
    poisoning = card["poisoning"]
    families = {e["family"] for e in poisoning["episodes"]}
    # the sample corpus holds a flood, scans and web attacks among 3,032 benign flows: detection finds them first
    assert poisoning["checked"] and {"dos", "scan"} <= families and poisoning["flows_left_out"] > 1000
    assert card["flows"] + poisoning["flows_left_out"] == 9962  # every row of the file, kept or left out
    assert "episodes left out" in stderr and f"{len(poisoning['episodes'])} episodes left out" in stderr
    assert card["model"]["name"] == "hybrid-lab" and len(card["model"]["onnx_sha256"]) == 64
    assert card["data"][0]["kind"] == "flows" and len(card["data"][0]["sha256"]) == 64
    novelty = data["novelty"]
    assert isinstance(novelty, dict) and novelty["threshold"] > 0 and novelty["window_length"] == 10
    assert set(data["thresholds"]) == {"scan", "dos", "bruteforce", "webattack", "botnet"}  # type: ignore[arg-type]


def test_detect_serves_the_profile_and_every_verdict_carries_its_novelty(
    learned: tuple[Path, dict[str, object], str], tmp_path: Path
) -> None:
    profile, _, _ = learned
    verdicts = tmp_path / "verdicts.jsonl"
    done = tapwatch("detect", PCAP, "--profile", profile, "--no-explain", "-o", tmp_path / "a.jsonl", "--verdicts",
                    verdicts, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [json.loads(x) for x in verdicts.read_text().splitlines()]
    assert len(rows) == 212 and all(r["novelty"] >= 0 for r in rows)
    assert len({r["novelty"] for r in rows}) > 10  # a score per window, not a constant
    # the profile's rule is the supervised one by default: the sample's scan is still one episode, named
    lines = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert lines and {x["ml"]["family"] for x in lines} == {"scan"} and len({x["episode"]["id"] for x in lines}) == 1


def test_trusting_the_input_skips_the_check(unlabelled: Path) -> None:
    need(HAVE_TF, "the train extra (tensorflow, keras, tf2onnx) is not installed")
    out = unlabelled.with_name("trusted.profile.json")
    done = tapwatch("learn", "--flows", unlabelled, "--no-novelty", "--trust-input", "-o", out, cwd=unlabelled.parent)
    assert done.returncode == 0, done.stderr
    card = json.loads(out.read_text())["card"]
    assert card["poisoning"] == {"checked": False, "flows_left_out": 0, "episodes": []} and card["flows"] == 9962


def test_a_profile_for_another_model_is_refused_in_one_line_and_nothing_is_written(
    learned: tuple[Path, dict[str, object], str], tmp_path: Path
) -> None:
    profile, _, _ = learned
    out = tmp_path / "alerts.jsonl"
    out.write_text("earlier result\n")
    done = tapwatch("detect", PCAP, "--model", REPO / "models" / "hybrid-cic.onnx", "--profile", profile, "-o", out,
                    cwd=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.strip() == (f"tapwatch: error: profile: {profile}: learned for model hybrid-lab 2.0.0, not "
                                   "hybrid-cic 1.0.0")  # fmt: skip
    assert out.read_text() == "earlier result\n"


def test_learn_without_input_or_with_a_missing_file_says_what_to_do(tmp_path: Path) -> None:
    done = tapwatch("learn", "-o", tmp_path / "p.json", cwd=tmp_path)
    assert done.returncode == 2 and "give pcaps, --flows CSVs or --interface with --minutes" in done.stderr
    done = tapwatch("learn", "--flows", tmp_path / "absent.csv", "-o", tmp_path / "p.json", cwd=tmp_path)
    assert done.returncode == 2 and "absent.csv: no such flows CSV" in done.stderr
    assert not (tmp_path / "p.json").exists()

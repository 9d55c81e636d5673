"""What a person sees for input tapwatch cannot use: one line naming the option or the file, in words."""

from __future__ import annotations

import bz2
import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tapwatch.app.cli import main
from tapwatch.capture.bpf import check_bpf
from tapwatch.features.errors import BadInputError
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"


def error_line(*args: str) -> str:
    """Run ``tapwatch ARGS`` in this process; it must exit 2 with exactly one ``tapwatch: error:`` line."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    errors = [ln for ln in result.output.splitlines() if ln.startswith("tapwatch: error:")]
    assert len(errors) == 1, result.output
    return errors[0]


def test_a_bad_bpf_filter_names_the_option_and_the_filter(tmp_path: Path) -> None:
    out = tmp_path / "flows.csv"
    line = error_line("flows", str(SAMPLE), "--bpf", "this is not bpf", "-o", str(out))
    assert line == (
        "tapwatch: error: --bpf: 'this is not bpf' is not a valid BPF filter: "
        "can't parse filter expression: syntax error"
    )
    assert "sample.pcap" not in line
    assert "illegal port number 99999" in error_line("flows", str(SAMPLE), "--bpf", "tcp port 99999")


def test_a_valid_bpf_filter_passes_the_check() -> None:
    check_bpf("tcp or udp")
    check_bpf(None)
    with pytest.raises(BadInputError, match="--bpf"):
        check_bpf("ether proto nonsense")


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"hello, I am a text file\n", "it looks like text ('hello, I am a text file')"),
        (gzip.compress(SAMPLE.read_bytes()[:4096]), "it is gzip-compressed; decompress it first (gunzip)"),
        (bz2.compress(b"x" * 100), "it is bzip2-compressed; decompress it first (bunzip2)"),
        (b"PK\x03\x04" + bytes(40), "it is a zip archive; extract the capture first (unzip)"),
        (bytes(64), "it starts with zero bytes (a blank or damaged file)"),
        (bytes([0x01, 0x02, 0xFE, 0xFF]) + bytes(range(128, 160)), "unknown format (first bytes 0102feff)"),
    ],
)
def test_a_file_that_is_no_capture_is_described_in_words(tmp_path: Path, content: bytes, words: str) -> None:
    f = tmp_path / "input.pcap"
    f.write_bytes(content)
    assert error_line("flows", str(f)) == f"tapwatch: error: {f}: not a pcap or pcapng file: {words}"


def test_a_compressed_capture_names_the_tool_that_opens_it(tmp_path: Path) -> None:
    gz = tmp_path / "sample.pcap.gz"
    with SAMPLE.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert error_line("detect", str(gz)).endswith("gzip-compressed; decompress it first (gunzip)")


def test_the_alerter_names_the_options_a_person_types() -> None:
    """Settings are checked as fields; the message names the option and its environment variable (issue 10)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}

    def alerter(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "tapwatch.app", "alerter", *args, "--metrics-port", "0"],
                              capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        return proc.stderr.strip().splitlines()[-1]

    assert alerter() == (
        "tapwatch: error: --redis (or TAPWATCH_REDIS_URL): the alerter reads verdicts from Redis: give its URL "
        "(without Redis: detect or run)"
    )
    assert alerter("--redis", "redis://127.0.0.1:1/0", "--webhook", "ftp://x") == (
        "tapwatch: error: --webhook (or TAPWATCH_WEBHOOK_URL): expected an http:// or https:// URL, not 'ftp://x'"
    )


def service_error(*args: str) -> str:
    """The last stderr line of ``tapwatch ARGS`` run as a process (services install signal handlers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAPWATCH_")}
    proc = subprocess.run([sys.executable, "-m", "tapwatch.app", *args, "--metrics-port", "0"],
                          capture_output=True, text=True, timeout=120, env=env)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    return proc.stderr.strip().splitlines()[-1]


def test_a_missing_model_or_card_is_named_once_as_what_is_missing(tmp_path: Path) -> None:
    redis = ("--redis", "redis://127.0.0.1:1/0")  # never reached: the model is checked first
    assert service_error("worker", *redis, "--model", "models/hybrid.onnx") == (
        "tapwatch: error: models/hybrid.onnx: model refused: no such model file"
    )
    line = service_error("alerter", *redis, "--card", "models/cards/hybrid.json")
    assert line == "tapwatch: error: --card (or TAPWATCH_CARD): models/cards/hybrid.json: no such model card"
    lonely = tmp_path / "lonely.onnx"
    shutil.copy(REPO / "models" / "hybrid-cic.onnx", lonely)
    assert error_line("detect", str(SAMPLE), "--model", str(lonely)) == (
        f"tapwatch: error: {lonely}: model refused: {tmp_path / 'lonely.card.json'}: no such model card"
    )

"""What becomes of an output file and of the packets a capture holds, as a person sees it (issue 10)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tapwatch.app.cli import main
from tests.support.env import REPO

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
EARLIER = "an earlier result\n"


def tapwatch(*args: str) -> Result:
    return CliRunner().invoke(main, list(args))


def errors(result: Result) -> list[str]:
    assert "Traceback" not in result.output
    return [ln for ln in result.output.splitlines() if ln.startswith("tapwatch: error:")]


def bad_inputs(tmp_path: Path) -> dict[str, Path]:
    empty, text, folder = tmp_path / "empty.pcap", tmp_path / "notes.pcap", tmp_path / "a-folder"
    empty.write_bytes(b"")
    text.write_text("not a capture\n")
    folder.mkdir()
    return {"missing": tmp_path / "missing.pcap", "empty": empty, "text": text, "directory": folder}


@pytest.mark.parametrize("command", ["detect", "flows"])
def test_input_refused_before_reading_leaves_the_earlier_output_untouched(tmp_path: Path, command: str) -> None:
    out = tmp_path / "out" / "result"
    out.parent.mkdir()
    out.write_text(EARLIER)
    for kind, bad in bad_inputs(tmp_path).items():
        result = tapwatch(command, str(bad), "-o", str(out))
        assert result.exit_code == 2 and len(errors(result)) == 1, (kind, result.output)
        assert out.read_text() == EARLIER, f"{command} on a {kind} input changed the earlier result"
        assert sorted(p.name for p in out.parent.iterdir()) == ["result"], "a partial or temporary file was left"


def truncated_sample(tmp_path: Path) -> Path:
    cut = tmp_path / "cut.pcap"
    data = SAMPLE.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    return cut


@pytest.mark.parametrize("command", ["detect", "flows"])
def test_a_partly_readable_input_replaces_the_output_with_its_readable_part(tmp_path: Path, command: str) -> None:
    out = tmp_path / "result"
    out.write_text(EARLIER)
    # The readable two thirds of the sample are benign: episodes write nothing there (as they should), the
    # per-window alerts of the shipped model a line or more, which shows what replaced the earlier result.
    per_window = ["--alert-mode", "flows"] if command == "detect" else []
    result = tapwatch(command, str(truncated_sample(tmp_path)), "-o", str(out), *per_window)
    assert result.exit_code == 2
    (line,) = errors(result)
    assert "truncated" in line and "readable part" in line
    written = out.read_text()
    assert written != EARLIER and written.count("\n") >= 1
    assert written.startswith('{"timestamp"' if command == "detect" else "Flow ID,")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_finished_run_replaces_the_output(tmp_path: Path) -> None:
    out = tmp_path / "alerts.jsonl"
    out.write_text(EARLIER)
    assert tapwatch("detect", str(SAMPLE), "-o", str(out)).exit_code == 0
    assert EARLIER not in out.read_text() and out.read_text().startswith('{"timestamp"')


def pcap(path: Path, linktype: int, frames: list[bytes]) -> Path:
    """A little-endian pcap of ``frames`` with the given link type."""
    body = b"".join(struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f for i, f in enumerate(frames))
    path.write_bytes(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype) + body)
    return path


@pytest.mark.parametrize(("linktype", "name"), [(105, "IEEE 802.11 Wi-Fi"), (127, "IEEE 802.11 with radiotap header")])
def test_a_link_type_tapwatch_cannot_decode_is_refused_with_its_name(tmp_path: Path, linktype: int, name: str) -> None:
    wifi = pcap(tmp_path / "wifi.pcap", linktype, [bytes(80)] * 3)
    result = tapwatch("flows", str(wifi), "-o", str(tmp_path / "flows.csv"))
    assert result.exit_code == 2
    assert errors(result) == [
        f"tapwatch: error: {wifi}: link type {linktype} ({name}) cannot be decoded; tapwatch reads Ethernet, "
        "Linux cooked capture, raw IP, BSD loopback and PPP captures"
    ]
    assert not (tmp_path / "flows.csv").exists()


def test_with_several_files_the_readable_ones_are_read_and_the_others_named(tmp_path: Path) -> None:
    wifi = pcap(tmp_path / "wifi.pcap", 105, [bytes(80)])
    out = tmp_path / "flows.csv"
    result = tapwatch("flows", str(SAMPLE), str(wifi), "-o", str(out))
    assert result.exit_code == 2
    (line,) = errors(result)
    assert line.startswith(f"tapwatch: error: {wifi}: link type 105") and line.endswith("; the file was not read")
    alone = tmp_path / "alone.csv"
    assert tapwatch("flows", str(SAMPLE), "-o", str(alone)).exit_code == 0
    assert out.read_text() == alone.read_text()  # every flow of the readable file, as if read alone


def test_the_summary_counts_packets_read_apart_from_packets_in_flows() -> None:
    """tcpdump counts every packet record, tapwatch's flows only IP packets: the summary shows both."""
    scapy = pytest.importorskip("scapy.all")
    records = scapy.rdpcap(str(SAMPLE))
    ip = sum(1 for p in records if p.haslayer(scapy.IP) or p.haslayer(scapy.IPv6))
    assert len(records) > ip  # the sample holds ARP: the two figures differ
    result = tapwatch("detect", str(SAMPLE), "--no-explain")
    line = next(ln for ln in result.output.splitlines() if ln.strip().startswith("packets"))
    assert line.strip() == (
        f"packets   {len(records)} read: {ip} in flows (IP), {len(records) - ip} in none "
        "(not IP, IP fragments, or outside --bpf)"
    )


def test_a_device_or_a_symlink_as_output_is_written_through_not_replaced(tmp_path: Path) -> None:
    before = Path("/dev/null").stat()
    assert tapwatch("flows", str(SAMPLE), "-o", "/dev/null").exit_code == 0
    after = Path("/dev/null").stat()
    assert (after.st_mode, after.st_rdev, after.st_ino) == (before.st_mode, before.st_rdev, before.st_ino)
    real, link = tmp_path / "real.csv", tmp_path / "link.csv"
    real.write_text(EARLIER)
    real.chmod(0o640)
    link.symlink_to(real)
    assert tapwatch("flows", str(SAMPLE), "-o", str(link)).exit_code == 0
    assert link.is_symlink() and real.read_text().startswith("Flow ID,")
    assert real.stat().st_mode & 0o777 == 0o640


def test_score_keeps_an_earlier_result_when_the_csv_is_refused_and_writes_through_a_device(tmp_path: Path) -> None:
    out, bad, flows = tmp_path / "scored.csv", tmp_path / "notes.csv", tmp_path / "flows.csv"
    out.write_text(EARLIER)
    bad.write_text("hello,world\nthis is,not flows\n")
    result = tapwatch("score", str(bad), "-o", str(out))
    assert result.exit_code == 2 and out.read_text() == EARLIER
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.csv", "scored.csv"]
    assert tapwatch("flows", str(SAMPLE), "-o", str(flows)).exit_code == 0
    before = Path("/dev/null").stat()
    assert tapwatch("score", str(flows), "-o", "/dev/null").exit_code == 0
    assert Path("/dev/null").stat().st_ino == before.st_ino and Path("/dev/null").is_char_device()


@pytest.mark.parametrize("command", ["detect", "flows"])
def test_an_output_in_a_missing_folder_or_on_a_directory_is_refused_before_reading(
    tmp_path: Path, command: str
) -> None:
    missing = tmp_path / "no-such-folder" / "out"
    result = tapwatch(command, str(SAMPLE), "-o", str(missing))
    assert result.exit_code == 2 and errors(result) == [
        f"tapwatch: error: {missing}: the folder {missing.parent} does not exist"
    ]
    assert not missing.parent.exists()
    result = tapwatch(command, str(SAMPLE), "-o", str(tmp_path))  # flows: click's own check of -o says it first
    assert result.exit_code == 2 and "is a directory" in result.output and "Traceback" not in result.output

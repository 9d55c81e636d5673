"""Every capture of ../shared/pcaps (228 files, some deliberately malformed) runs through ``tapwatch flows``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from click.testing import CliRunner

from tapwatch.app.cli import main
from tapwatch.capture.flowcsv import HEADER


@pytest.mark.slow
def test_whole_corpus_runs_through_flows_without_a_crash(shared: Path, tmp_path: Path) -> None:
    manifest = list(csv.DictReader((shared / "pcaps" / "MANIFEST.csv").open()))
    assert len(manifest) == 228
    runner = CliRunner()
    outcomes: dict[str, list[str]] = {"ok": [], "bad_input": []}
    total_flows = 0
    for i, row in enumerate(manifest):
        out = tmp_path / f"{i}.csv"
        result = runner.invoke(main, ["flows", str(shared / "pcaps" / row["file"]), "-o", str(out)])
        assert result.exception is None or isinstance(result.exception, SystemExit), (row["file"], result.output)
        assert "internal error" not in result.output and "Traceback" not in result.output, row["file"]
        assert result.exit_code in (0, 2), (row["file"], result.output)
        if result.exit_code == 2:
            assert "tapwatch: error:" in result.output, row["file"]
            outcomes["bad_input"].append(row["file"])
        else:
            outcomes["ok"].append(row["file"])
        with out.open() as fh:
            rows = list(csv.reader(fh))
        assert tuple(rows[0]) == HEADER
        total_flows += len(rows) - 1
    assert len(outcomes["ok"]) >= 200, outcomes["bad_input"]
    assert total_flows > 1000

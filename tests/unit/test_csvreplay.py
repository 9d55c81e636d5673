"""Reading ``tapwatch flows`` CSVs back into flow records (plain and gzip), with the lab's extra columns, and
the aggregates of the committed sample corpus."""

from __future__ import annotations

import gzip
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tapwatch.capture.aggregates import AggregatorConfig, aggregates_of
from tapwatch.capture.csvreplay import records_from_flows_csv
from tapwatch.capture.flowcsv import write_csv
from tapwatch.features.aggregates import View
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import BadInputError
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord, make_flow_id
from tests.support.env import REPO

CORPUS = REPO / "lab" / "samples" / "ci-corpus"


def record(i: int) -> FlowRecord:
    values = tuple(float(i * 100 + k) + (0.25 if k % 3 else 0) for k in range(len(FEATURE_NAMES)))
    values = (6.0, *values[1:])  # Protocol: the CSV writes it once, from the flow's metadata
    meta = FlowMeta(flow_id=i, community_id=f"1:c{i}", src_ip="10.0.0.1", src_port=40000 + i, dst_ip="fd00::2",
                    dst_port=443, protocol=6, first_seen_ms=1_000 * i, last_seen_ms=1_000 * i + 7, packets=3 + i,
                    bytes=200 + i, expiry=ExpiryReason.TCP_FIN, expired_at_ms=0, sensor="s1")  # fmt: skip
    return FlowRecord(meta, values)


def flows_csv(records: list[FlowRecord], extra: dict[str, list[str]] | None = None) -> str:
    out = io.StringIO()
    write_csv(records, out)
    lines = out.getvalue().splitlines()
    if extra:
        lines[0] += "," + ",".join(extra)
        for i in range(1, len(lines)):
            lines[i] += "," + ",".join(col[i - 1] for col in extra.values())
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("gz", [False, True])
def test_a_flows_csv_reads_back_as_its_records_with_the_extra_columns(tmp_path: Path, gz: bool) -> None:
    records = [record(i) for i in range(3)]
    text = flows_csv(records, {"episode_id": ["e1", "", "e3"], "family": ["scan", "benign", "dos"]})
    path = tmp_path / ("flows.csv.gz" if gz else "flows.csv")
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    back = list(records_from_flows_csv(path))
    assert [extra for _, extra in back] == [{"episode_id": e, "family": f}
                                           for e, f in [("e1", "scan"), ("", "benign"), ("e3", "dos")]]  # fmt: skip
    for seq, (orig, (rec, _)) in enumerate(zip(records, back, strict=True), start=1):
        assert rec.values == orig.values
        want = orig.meta.__dict__ | {"flow_id": make_flow_id("s1", orig.meta.community_id, orig.meta.first_seen_ms,
                                                             seq), "expired_at_ms": orig.meta.last_seen_ms}  # fmt: skip
        assert {k: getattr(rec.meta, k) for k in want if not k.startswith("_")} == {
            k: v for k, v in want.items() if not k.startswith("_")}  # fmt: skip


def test_a_numeric_flow_id_is_kept_and_empty_values_read_as_zero(tmp_path: Path) -> None:
    lines = flows_csv([record(5)]).splitlines()
    header, row = lines[0].split(","), lines[1].split(",")
    row[header.index("Flow ID")] = "123456789"
    for name in ("Flow Duration", "bytes", "community_id", "expiry_reason"):
        row[header.index(name)] = ""
    (tmp_path / "f.csv").write_text(lines[0] + "\n" + ",".join(row) + "\n")
    ((rec, extra),) = records_from_flows_csv(tmp_path / "f.csv")
    assert (rec.meta.flow_id, rec.meta.bytes, rec.feature("Flow Duration"), extra) == (123456789, 0, 0.0, {})
    assert rec.meta.expiry is ExpiryReason.END_OF_CAPTURE
    assert rec.meta.community_id.startswith("1:") and rec.meta.community_id != "1:c5"  # computed from the 5-tuple


def test_a_file_that_is_not_a_flows_csv_is_refused_naming_what_is_wrong(tmp_path: Path) -> None:
    text = flows_csv([record(1), record(2)])
    (tmp_path / "cut.csv").write_text(text.replace("Src IP", "Source IP"))
    with pytest.raises(BadInputError, match="no column Src IP"):
        list(records_from_flows_csv(tmp_path / "cut.csv"))
    lines = text.splitlines()
    (tmp_path / "bad.csv").write_text("\n".join([lines[0], lines[1], lines[2].replace(",443,", ",https,", 1)]))
    with pytest.raises(BadInputError, match="line 3"):
        list(records_from_flows_csv(tmp_path / "bad.csv"))
    (tmp_path / "short.csv").write_text(lines[0] + "\n1,2,3\n")
    with pytest.raises(BadInputError, match="line 2"):
        list(records_from_flows_csv(tmp_path / "short.csv"))
    (tmp_path / "broken.csv.gz").write_bytes(gzip.compress(text.encode())[:200])
    with pytest.raises(BadInputError, match=r"broken\.csv\.gz"):
        list(records_from_flows_csv(tmp_path / "broken.csv.gz"))


@pytest.fixture(scope="module")
def corpus() -> tuple[dict[str, Any], list[FlowRecord], Counter[str]]:
    manifest = json.loads((CORPUS / "manifest.json").read_text())
    families: Counter[str] = Counter()
    records: list[FlowRecord] = []
    for rec, extra in records_from_flows_csv(CORPUS / manifest["dataset"]):
        records.append(rec)
        families[extra["family"]] += 1
    return manifest, records, families


def test_the_sample_corpus_replays_every_row_with_its_family(
    corpus: tuple[Any, list[FlowRecord], Counter[str]],
) -> None:
    manifest, records, families = corpus
    assert len(records) == manifest["flows"] == families.total() > 5_000
    assert families["benign"] > 0 and len(families) > 2
    assert len({r.meta.flow_id for r in records}) == len(records)


def test_the_aggregates_of_the_sample_corpus_add_up_to_its_flows(corpus: tuple[Any, list[FlowRecord], Any]) -> None:
    _, records, _ = corpus
    aggs = list(aggregates_of(records, AggregatorConfig()))
    for view in View:
        assert sum(a.flows for a in aggs if a.view is view) == len(records)
    assert {a.sensor for a in aggs} == {records[0].meta.sensor}

"""The traffic generator, checked through ``tapwatch flows``: labelled phases become the expected flows.

Traffic is made by real tools (busybox httpd, dnsmasq, curl, dig, nmap) between two fresh network
namespaces and captured with tcpdump on the client-side veth; nothing leaves the namespaces.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.netns import NsPair, ns_pair
from lab.traffic import (
    LABEL_COLUMNS,
    SAMPLE_LABELS,
    BulkPlan,
    Label,
    Phase,
    TrafficPlan,
    bulk,
    capture,
    generate,
    labels_path,
    write_labels,
)
from tests.support.env import need_netns

pytestmark = pytest.mark.timeout(180)

PLAN = TrafficPlan(file_sizes=(1_000, 6_000), downloads=2, dns_rounds=2, scan_ports="1-150")
SCANNED = range(1, 151)
HTTP_HEADER_MAX = 400  # busybox httpd's response header is about 150 bytes


@pytest.fixture
def pair() -> Iterator[NsPair]:
    need_netns()
    with ns_pair() as p:
        yield p


def _flows(pcap: Path, out: Path) -> list[dict[str, str]]:
    """Run the ``tapwatch flows`` command on ``pcap`` and read its CSV."""
    tapwatch = Path(sys.executable).with_name("tapwatch")
    subprocess.run([str(tapwatch), "flows", str(pcap), "-o", str(out)], check=True, timeout=120)
    with out.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _ms(t: float) -> int:
    return int(t * 1000)  # flows carry whole epoch milliseconds (NFStream's clock), truncated


def _by_label(rows: list[dict[str, str]], phases: list[Phase]) -> dict[Label, list[dict[str, str]]]:
    """Assign each flow to the phase in which it started; it must also have ended in that phase.

    Phases are back to back, and each ends ``_SETTLE_S`` after its last tool exited, so a flow starting in
    [start, end) of a phase belongs to it.
    """
    out: dict[Label, list[dict[str, str]]] = {p.label: [] for p in phases}
    for row in rows:
        first, last = int(row["first_seen_ms"]), int(row["last_seen_ms"])
        owners = [p for p in phases if _ms(p.start) <= first < _ms(p.end)]
        assert len(owners) == 1, f"flow {row['Flow ID']} at {first} ms in phases {owners}"
        phase = owners[0]
        assert (row["Src IP"], row["Dst IP"]) == (phase.src_ip, phase.dst_ip), row["Flow ID"]
        assert last <= _ms(phase.end), f"flow {row['Flow ID']} outlasted its phase {phase.label.value}"
        out[phase.label].append(row)
    return out


def test_generate_makes_labelled_flows(pair: NsPair, tmp_path: Path) -> None:
    pcap = tmp_path / "gen.pcap"
    seen: list[Phase] = []
    with capture(pair, pair.client, pcap) as stats:
        phases = generate(pair, scale=1, on_phase=seen.append, plan=PLAN)
    assert seen == phases and tuple(p.label for p in phases) == SAMPLE_LABELS
    assert stats.captured > 0 and stats.dropped == 0
    write_labels(phases, labels_path(pcap))
    with labels_path(pcap).open(newline="") as fh:
        labels = list(csv.reader(fh))
    assert tuple(labels[0]) == LABEL_COLUMNS and [r[4] for r in labels[1:]] == [x.value for x in SAMPLE_LABELS]

    by_label = _by_label(_flows(pcap, tmp_path / "gen.csv"), phases)
    http, dns, scan = by_label[Label.BENIGN_HTTP], by_label[Label.BENIGN_DNS], by_label[Label.NMAP_SYN_SCAN]

    # nmap: one flow per scanned port; a closed port gives SYN then RST/ACK, closed with reason rst.
    assert sorted(int(r["Dst Port"]) for r in scan) == list(SCANNED)
    closed = [r for r in scan if r["Dst Port"] != str(PLAN.dns_port)]  # dnsmasq also listens on tcp/53
    assert {(r["Protocol"], r["packets"], r["Total Fwd Packet"], r["expiry_reason"]) for r in closed} == {
        ("6", "2", "1", "rst")
    }
    assert all(r["SYN Flag Count"] == "1" and r["RST Flag Count"] == "1" for r in closed)
    # HTTP: one TCP connection per download to the server's port, closed with FIN, carrying the file.
    assert len(http) == PLAN.downloads * len(PLAN.file_sizes)
    assert {(r["Protocol"], r["Dst Port"], r["expiry_reason"]) for r in http} == {("6", "8080", "fin")}
    bodies = sorted(int(float(r["Total Length of Bwd Packet"])) for r in http)
    expected = sorted(PLAN.file_sizes * PLAN.downloads)
    assert all(0 < got - size < HTTP_HEADER_MAX for got, size in zip(bodies, expected, strict=True))
    # DNS: one query/answer pair per name and round, each from its own port.
    assert len(dns) == PLAN.dns_rounds * len(PLAN.dns_names)
    assert {(r["Protocol"], r["Dst Port"], r["packets"]) for r in dns} == {("17", "53", "2")}
    assert len({r["Src Port"] for r in dns}) == len(dns)


def test_bulk_is_bounded_and_labelled(pair: NsPair, tmp_path: Path) -> None:
    pcap = tmp_path / "bulk.pcap"
    plan = BulkPlan(file_size=4_096, parallel=8, dns_per_http=5, scan_ports="1-40", timeout_s=60)
    with pytest.raises(ValueError, match="flows must be"):
        bulk(pair, 0)
    with capture(pair, pair.client, pcap, snaplen=96):
        phases = bulk(pair, 60, bplan=plan)
    by_label = _by_label(_flows(pcap, tmp_path / "bulk.csv"), phases)
    assert len(by_label[Label.BENIGN_HTTP]) == 60
    assert len(by_label[Label.BENIGN_DNS]) == 12
    assert len(by_label[Label.NMAP_SYN_SCAN]) == 40


def test_command_line_writes_pcap_and_labels(tmp_path: Path) -> None:
    need_netns()
    pcap = tmp_path / "cli.pcap"
    argv = [sys.executable, "-m", "lab.traffic", "--pcap", str(pcap), "--scan-ports", "1-20"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    with labels_path(pcap).open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["label"] for r in rows] == [x.value for x in SAMPLE_LABELS]
    assert all(float(r["start"]) < float(r["end"]) for r in rows)
    assert pcap.stat().st_size > 10_000

"""How flows end: TCP FIN/RST (corrected CICFlowMeter rules), flow timeout, idle, ICMP change, end of capture."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry
from scapy.all import ICMP, IP, TCP, UDP, Ether, wrpcap  # type: ignore[import-untyped]

from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.features.schema import FlowRecord

T0 = 1_700_000_000.0
A, B, C = "10.9.0.1", "10.9.0.2", "10.9.0.3"


def pkt(t: float, src: str, dst: str, l4: object) -> Ether:
    p = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02") / IP(src=src, dst=dst) / l4
    p.time = T0 + t
    return p


def tcp(t: float, fwd: bool, flags: str, sport: int = 40000, dport: int = 80, load: bytes = b"") -> Ether:
    src, dst = (A, B) if fwd else (B, A)
    s, d = (sport, dport) if fwd else (dport, sport)
    return pkt(t, src, dst, TCP(sport=s, dport=d, flags=flags, window=512) / load)


def extract(tmp_path: Path, packets: list[Ether], **cfg: object) -> tuple[list[FlowRecord], CaptureMetrics]:
    f = tmp_path / "t.pcap"
    wrpcap(str(f), packets)
    metrics = CaptureMetrics(CollectorRegistry())
    return list(PcapSource([str(f)], CaptureConfig(sensor="t", **cfg), metrics)), metrics  # type: ignore[arg-type]


def test_fin_close_ends_the_flow_and_a_new_syn_starts_another(tmp_path: Path) -> None:
    session = [tcp(0, True, "S"), tcp(0.01, False, "SA"), tcp(0.02, True, "A"), tcp(0.03, True, "PA", load=b"x" * 10),
               tcp(0.04, True, "FA"), tcp(0.05, False, "FA"), tcp(0.06, True, "A")]  # fmt: skip
    again = [tcp(1 + p.time - T0, p[TCP].sport == 40000, str(p[TCP].flags)) for p in session]
    recs, _ = extract(tmp_path, session + again)
    assert [r.meta.expiry.value for r in recs] == ["fin", "fin"]
    assert [r.meta.packets for r in recs] == [7, 7]
    assert recs[0].feature("FIN Flag Count") == 2


def test_rst_ends_the_flow(tmp_path: Path) -> None:
    recs, _ = extract(
        tmp_path, [tcp(0, True, "S"), tcp(0.001, False, "RA"), tcp(5, True, "S"), tcp(5.001, False, "RA")]
    )
    assert [(r.meta.expiry.value, r.meta.packets) for r in recs] == [("rst", 2), ("rst", 2)]


def test_flow_timeout_splits_a_connection_and_carries_its_time(tmp_path: Path) -> None:
    # a connection active every 10 s: the packet at 120 s is 120 s after the first one and starts a new flow
    packets = [tcp(0, True, "S"), tcp(0.01, False, "SA")] + [tcp(t, True, "A", load=b"a") for t in range(10, 111, 10)]
    packets += [tcp(120, False, "PA", load=b"late"), tcp(125, True, "A")]
    recs, _ = extract(tmp_path, packets)
    first, second = recs
    assert first.meta.expiry.value == "flow_timeout" and first.meta.packets == 13
    assert first.feature("Flow Duration") == first.feature("Total TCP Flow Time") == 110_000_000
    # the continuation keeps the connection's orientation (A is still the source) and its elapsed time
    assert (second.meta.src_ip, second.meta.src_port) == (A, 40000)
    assert second.feature("Total Fwd Packet") == 1 and second.feature("Total Bwd packets") == 1
    assert second.feature("Flow Duration") == 5_000_000
    assert second.feature("Total TCP Flow Time") == 125_000_000
    assert second.meta.expiry.value == "end_of_capture"


def test_a_connection_silent_past_the_idle_timeout_continues_in_a_new_flow(tmp_path: Path) -> None:
    packets = [tcp(0, True, "S"), tcp(0.01, False, "SA"), tcp(1, True, "A", load=b"a"),
               tcp(130, False, "PA", load=b"late"), tcp(131, True, "A")]  # fmt: skip
    first, second = extract(tmp_path, packets)[0]
    assert first.meta.expiry.value == "idle" and first.meta.packets == 3
    assert (second.meta.src_ip, second.meta.src_port) == (A, 40000)
    assert second.feature("Total TCP Flow Time") == 131_000_000


def test_idle_flow_closes_on_the_capture_clock(tmp_path: Path) -> None:
    dns = [pkt(0, A, B, UDP(sport=5353, dport=53) / b"q"), pkt(0.002, B, A, UDP(sport=53, dport=5353) / b"resp")]
    later = [pkt(200, A, C, UDP(sport=6000, dport=53) / b"q"), pkt(200.001, C, A, UDP(sport=53, dport=6000) / b"r")]
    recs, metrics = extract(tmp_path, dns + later, idle_timeout_s=30)
    assert [(r.meta.dst_ip, r.meta.expiry.value) for r in recs] == [(B, "idle"), (C, "end_of_capture")]
    assert metrics.registry.get_sample_value("tapwatch_capture_flows_total", {"reason": "idle"}) == 1


def test_icmp_type_and_code_change_starts_a_new_flow(tmp_path: Path) -> None:
    echo = [pkt(0, A, B, ICMP(type=8, code=0)), pkt(0.001, B, A, ICMP(type=0, code=0))]
    unreach = [pkt(1, A, B, ICMP(type=3, code=1)), pkt(1.001, A, B, ICMP(type=3, code=1))]
    recs, _ = extract(tmp_path, echo + unreach)
    assert [(r.meta.expiry.value, r.feature("ICMP Type"), r.feature("ICMP Code")) for r in recs] == [
        ("icmp_change", 8, 0),
        ("end_of_capture", 3, 1),
    ]
    assert recs[0].feature("Protocol") == 1 and recs[0].feature("Total TCP Flow Time") == 0


def test_one_packet_flows_are_counted_not_emitted_unless_asked(tmp_path: Path) -> None:
    probes = [tcp(i * 0.01, True, "S", dport=1000 + i) for i in range(5)]
    recs, metrics = extract(tmp_path, probes)
    assert recs == []
    assert metrics.registry.get_sample_value("tapwatch_capture_single_packet_flows_total") == 5
    assert metrics.registry.get_sample_value("tapwatch_capture_packets_total") == 5
    recs, _ = extract(tmp_path, probes, emit_single_packet_flows=True)
    assert sorted(r.meta.dst_port for r in recs) == [1000, 1001, 1002, 1003, 1004]

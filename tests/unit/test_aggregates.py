"""The destination/volume view: scans of one probe per port, spoofed floods, reflection and beacons in the
per-source and per-victim buckets; late flows, flush and bucket edges; the sensor publishing them beside its
windows (capture/samples/sample.pcap and a hand-built pcap of probes)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from scapy.utils import wrpcap

from tapwatch.bus.streams import WINDOWS_STREAM, MemoryBus
from tapwatch.capture.aggregates import Aggregator, AggregatorConfig, aggregates_of
from tapwatch.capture.meter import CaptureConfig, PcapSource
from tapwatch.capture.metrics import CaptureMetrics
from tapwatch.capture.service import CaptureSettings, build_pipeline
from tapwatch.features.aggregates import AGGREGATES_STREAM, AggregateRecord, View
from tapwatch.features.card import identity_card
from tapwatch.features.contract import FEATURE_NAMES
from tapwatch.features.errors import ConfigError, SchemaError
from tapwatch.features.schema import ExpiryReason, FlowMeta, FlowRecord, WindowEntry
from tests.support.env import REPO
from tests.support.pcapkit import CLIENT, SERVER, T0_MS, Conversation

SAMPLE = REPO / "capture" / "samples" / "sample.pcap"
INDEX = {name: i for i, name in enumerate(FEATURE_NAMES)}
VICTIM = "192.0.2.10"
_seq = iter(range(1, 10**9))


def flow(src: str, dst: str, dport: int, last_ms: int, *, first_ms: int | None = None, sport: int = 40000,
         proto: int = 6, packets: int = 1, nbytes: int = 60, **features: float) -> FlowRecord:  # fmt: skip
    """A flow record built by hand; ``features`` by contract name with spaces as underscores."""
    first = last_ms if first_ms is None else first_ms
    values = [0.0] * len(FEATURE_NAMES)
    for name, value in features.items():
        values[INDEX[name.replace("_", " ")]] = value
    meta = FlowMeta(next(_seq), "1:x", src, sport, dst, dport, proto, first, last_ms, packets, nbytes,
                    ExpiryReason.IDLE, last_ms, "t")  # fmt: skip
    return FlowRecord(meta, tuple(values))


def run(records: list[FlowRecord], config: AggregatorConfig | None = None, **kw: object) -> list[AggregateRecord]:
    agg = Aggregator(config or AggregatorConfig(), "t", **kw)  # type: ignore[arg-type]
    out = [r for rec in records for r in agg.add(rec)]
    return out + agg.flush()


def of(records: list[AggregateRecord], view: View, key: str) -> list[AggregateRecord]:
    return [r for r in records if r.view is view and r.key == key]


def test_a_scan_of_one_probe_per_port_is_one_source_bucket() -> None:
    probes = [flow("10.0.0.66", VICTIM, port, 1_000 + 10 * port) for port in range(1, 501)]
    out = run(probes)
    (src,) = of(out, View.SOURCE, "10.0.0.66")
    assert (src.flows, src.distinct_ports, src.distinct_peers, src.capped) == (500, 500, 1, False)
    assert (src.unanswered, src.no_payload, src.rejected, src.tcp) == (500, 500, 0, 500)
    assert (src.start_ms, src.bucket_ms, src.first_ms, src.last_ms) == (0, 10_000, 1_010, 6_000)
    (victim,) = of(out, View.VICTIM, VICTIM)
    assert (victim.distinct_ports, victim.distinct_peers, victim.top_peer, victim.top_peer_flows) == (
        500, 1, "10.0.0.66", 500)  # fmt: skip


def test_a_spoofed_flood_is_bounded_in_the_source_view_and_one_key_in_the_victim_view() -> None:
    evicted: list[int] = []
    agg = Aggregator(AggregatorConfig(max_keys=1000), "t", on_evict=evicted.append)
    out: list[AggregateRecord] = []
    most = 0
    for i in range(20_000):
        out += agg.add(flow(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", VICTIM, 80, 1_000 + i // 4, sport=i))
        most = max(most, len(agg) - 1)  # the victim view holds one key
    out += agg.flush()
    assert most <= 1000 and len(agg) == 0
    assert sum(evicted) == agg.evicted == 19_000 and set(evicted) == {1}
    (victim,) = of(out, View.VICTIM, VICTIM)
    assert victim.flows == victim.unanswered == 20_000
    assert victim.distinct_peers == min(20_000, AggregatorConfig().max_distinct) and victim.capped
    assert (victim.top_port, victim.top_port_flows, victim.distinct_ports) == (80, 20_000, 1)
    assert victim.pair_port == 80 and victim.sample is not None and victim.sample.dst_ip == VICTIM
    assert len([r for r in out if r.view is View.SOURCE]) == 1000  # the rest were dropped, not emitted


def test_reflection_shows_as_the_victims_top_source_port() -> None:
    replies = [flow(f"198.51.100.{i % 250}" if i < 250 else f"203.0.113.{i}", VICTIM, 30_000 + i, 2_000 + i,
                    sport=53, proto=17, nbytes=1200, Total_Fwd_Packet=1, Total_Length_of_Fwd_Packet=1158)
               for i in range(300)]  # fmt: skip
    (victim,) = of(run(replies), View.VICTIM, VICTIM)
    assert (victim.top_src_port, victim.top_src_port_flows) == (53, 300)
    assert (victim.distinct_peers, victim.udp, victim.no_payload, victim.bytes) == (300, 300, 0, 360_000)


def test_rejected_counts_and_the_sample_is_the_newest_flow_of_the_busiest_pair() -> None:
    rejected = [flow("10.0.0.5", VICTIM, 22, 100 + i, packets=2, Total_Bwd_packets=1, Bwd_RST_Flags=1)
                for i in range(5)]  # fmt: skip
    other = [flow("10.0.0.5", "192.0.2.99", 443, 50, packets=10, Total_Bwd_packets=5, Total_Length_of_Bwd_Packet=9)]
    (src,) = of(run(rejected + other), View.SOURCE, "10.0.0.5")
    assert (src.rejected, src.unanswered, src.no_payload, src.flows) == (5, 0, 5, 6)
    assert (src.pair_peer, src.pair_port, src.pair_flows, src.pair_bytes) == (VICTIM, 22, 5, 300)
    assert src.sample == rejected[-1].meta
    assert AggregateRecord.decode(src.encode()) == src


def beacon_of(starts: list[int], peer: str = "192.0.2.80") -> AggregateRecord:
    records = [flow("10.0.0.7", peer, 443, t + 40, first_ms=t, packets=6) for t in starts]
    return of(run(records), View.SOURCE, "10.0.0.7")[-1]  # the last bucket holds the newest start


def test_a_beacon_is_regular_and_random_starts_are_not() -> None:
    rng = random.Random(7)
    (beacon,) = beacon_of([100_000 + 5_000 * i + rng.randint(-50, 50) for i in range(10)]).beacons
    assert (beacon.peer, beacon.port, beacon.count) == ("192.0.2.80", 443, 10)
    assert beacon.cv < 0.05 and abs(beacon.interval_ms - 5_000) <= 100
    assert beacon.sample is not None and beacon.sample.dst_ip == "192.0.2.80"  # a flow of the pair itself
    noise = beacon_of(sorted(100_000 + rng.randint(0, 45_000) for _ in range(10))).beacons
    assert all(b.cv > 0.3 for b in noise)
    assert beacon_of([100_000 + 5_000 * i for i in range(5)]).beacons == ()  # fewer than beacon_min


def test_a_burst_is_no_beacon_and_a_pause_starts_a_new_run() -> None:
    burst = beacon_of([100_000 + 150 * i for i in range(12)])  # a page and its resources, 150 ms apart
    assert burst.beacons == ()
    # two episodes of a bot, ten minutes apart: the second is judged on its own starts only
    first = [100_000 + 5_000 * i for i in range(8)]
    second = [800_000 + 5_000 * i for i in range(8)]
    (b,) = beacon_of(first + second).beacons
    assert (b.count, b.interval_ms, b.cv) == (8, 5_000.0, 0.0)


def test_every_regular_pair_of_a_bucket_is_reported_most_regular_first() -> None:
    records = [flow("10.0.0.7", "192.0.2.80", 443, t + 40, first_ms=t) for t in range(100_000, 160_001, 5_000)]
    records += [flow("10.0.0.7", "192.0.2.81", 8443, t + 40, first_ms=t)
                for t in (100_500, 106_900, 110_200, 117_300, 120_100, 127_700, 130_600, 136_000, 141_000, 147_800,
                          150_500, 157_000)]  # fmt: skip
    records.sort(key=lambda r: r.meta.last_seen_ms)
    (last,) = [r for r in of(run(records), View.SOURCE, "10.0.0.7") if r.start_ms == 150_000]
    assert [b.peer for b in last.beacons] == ["192.0.2.80", "192.0.2.81"]
    assert last.beacons[0].cv < last.beacons[1].cv
    assert AggregateRecord.decode(last.encode()) == last


@pytest.mark.parametrize(
    ("beacons", "reason", "message"),
    [
        ('"x"', "dtype", "beacons is not a JSON list"),
        ('[{"peer": "192.0.2.1"}]', "missing_field", "'port'"),
        ("[7]", "dtype", "a beacon is not a JSON object"),
    ],
)
def test_a_malformed_beacon_list_is_a_schema_error_naming_it(beacons: str, reason: str, message: str) -> None:
    fields = AggregateRecord(sensor="s", view=View.SOURCE, key="10.0.0.1", start_ms=0, bucket_ms=10_000).encode()
    fields["counts"] = fields["counts"][:-1] + f',"beacons":{beacons}}}'
    with pytest.raises(SchemaError) as err:
        AggregateRecord.decode(fields)
    assert (err.value.reason, message in str(err.value)) == (reason, True)


def test_a_late_flow_is_counted_not_dropped() -> None:
    agg = Aggregator(AggregatorConfig(), "t")
    assert agg.add(flow("10.0.0.1", VICTIM, 80, 1_000)) == []
    assert agg.add(flow("10.0.0.1", VICTIM, 80, 55_000)) != []  # finishes the bucket at 0
    late = agg.add(flow("10.0.0.1", VICTIM, 81, 2_000)) + agg.add(flow("10.0.0.2", "192.0.2.3", 9, 1_500))
    assert late == []
    out = agg.flush()
    (src1,) = of(out, View.SOURCE, "10.0.0.1")  # into its open bucket
    assert (src1.start_ms, src1.flows, src1.distinct_ports, src1.first_ms) == (50_000, 2, 2, 2_000)
    (src2,) = of(out, View.SOURCE, "10.0.0.2")  # no open bucket: the watermark's
    assert (src2.start_ms, src2.flows) == (50_000, 1)


def test_buckets_split_at_bucket_s_and_finish_after_the_lateness() -> None:
    agg = Aggregator(AggregatorConfig(bucket_s=10, lateness_s=2), "t")
    assert agg.add(flow("10.0.0.1", VICTIM, 80, 9_999)) == []
    assert agg.add(flow("10.0.0.1", VICTIM, 80, 10_000)) == []
    assert agg.add(flow("10.0.0.9", VICTIM, 80, 11_999)) == []
    done = agg.add(flow("10.0.0.9", VICTIM, 80, 12_000))
    assert [(r.view, r.key, r.start_ms, r.flows) for r in done] == [
        (View.SOURCE, "10.0.0.1", 0, 1), (View.VICTIM, VICTIM, 0, 1)]  # fmt: skip
    rest = agg.flush()
    assert {(r.key, r.start_ms, r.flows) for r in rest} == {("10.0.0.1", 10_000, 1), ("10.0.0.9", 10_000, 2),
                                                             (VICTIM, 10_000, 3)}  # fmt: skip
    assert agg.flush() == [] and len(agg) == 0


def test_flush_emits_every_open_bucket_and_the_flows_add_up() -> None:
    rng = random.Random(3)
    records = [flow(f"10.0.0.{rng.randint(1, 40)}", f"192.0.2.{rng.randint(1, 9)}", rng.randint(1, 99),
                    rng.randint(0, 60_000)) for _ in range(2_000)]  # fmt: skip
    agg = Aggregator(AggregatorConfig(bucket_s=5, max_distinct=16), "t")
    out = [r for rec in records for r in agg.add(rec)]
    held = len(agg)
    flushed = agg.flush()
    assert held > 0 and len({(r.view, r.key) for r in flushed}) == held
    every = out + flushed
    for view in View:
        assert sum(r.flows for r in every if r.view is view) == len(records)
    assert all(r.distinct_ports <= 16 and r.distinct_peers <= 16 for r in every)
    assert any(r.capped for r in every)
    assert [a.counts() for a in aggregates_of(records, agg.config, "t")] == [a.counts() for a in every]


@pytest.mark.parametrize(("field", "value"), [("bucket_s", 0), ("max_keys", 0), ("beacon_min", 40), ("lateness_s", -1)])
def test_bad_config_names_the_setting(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        AggregatorConfig(**{field: value})  # type: ignore[arg-type]


# -- the sensor ------------------------------------------------------------------------------------------------


def sensor_run(pcap: Path, single_packet_flows: bool = False) -> tuple[list[FlowRecord], list[AggregateRecord],
                                                                       list[WindowEntry], CaptureMetrics]:  # fmt: skip
    bus = MemoryBus()
    metrics = CaptureMetrics(CollectorRegistry())
    pipe = build_pipeline(CaptureSettings(), bus, identity_card(10), metrics)
    config = pipe.source_config(CaptureConfig(sensor="t", emit_single_packet_flows=single_packet_flows))
    records: list[FlowRecord] = []

    def tee() -> Iterator[FlowRecord]:
        for r in PcapSource([str(pcap)], config, metrics):
            records.append(r)
            yield r

    pipe.feed(tee())
    counts = pipe.close()
    assert counts.produced == counts.sent
    read = {}
    for stream in (AGGREGATES_STREAM, WINDOWS_STREAM):
        bus.ensure_group(stream, "check")
        read[stream] = [f for _, f in bus.read_group(stream, "check", "c", count=100_000, block_ms=0)]
    aggs = [AggregateRecord.decode(f) for f in read[AGGREGATES_STREAM]]
    return records, aggs, [WindowEntry.decode(f) for f in read[WINDOWS_STREAM]], metrics


def total(metrics: CaptureMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def check_counts(records: list[FlowRecord], aggs: list[AggregateRecord], metrics: CaptureMetrics) -> None:
    flows = sum(total(metrics, "tapwatch_capture_flows_total", reason=r.value) for r in ExpiryReason)
    assert flows == len(records) > 0
    for view in View:
        assert sum(a.flows for a in aggs if a.view is view) == len(records)
        assert total(metrics, "tapwatch_capture_aggregates_total", view=view.value) == sum(a.view is view for a in aggs)
    assert {a.sensor for a in aggs} == {"t"}
    assert total(metrics, "tapwatch_capture_aggregate_keys") == 0  # all flushed


def test_the_sensor_publishes_aggregates_of_every_flow_of_the_sample_pcap() -> None:
    records, aggs, windows, metrics = sensor_run(SAMPLE)
    check_counts(records, aggs, metrics)
    assert [w.flow.flow_id for w in windows] == [r.meta.flow_id for r in records if r.meta.packets >= 2]
    assert total(metrics, "tapwatch_features_windows_total") == len(windows)


def probes_pcap(tmp_path: Path) -> Path:
    """40 SYNs to 40 ports nobody answers, one port that resets, and one short session."""
    convs = []
    for i in range(1, 41):
        c = Conversation(client=("10.9.0.66", 41000), server=("10.9.0.2", 1000 + i))
        c.tcp(i, CLIENT, "S")
        convs.append(c)
    reset = Conversation(client=("10.9.0.66", 41001), server=("10.9.0.2", 23))
    reset.tcp(50, CLIENT, "S")
    reset.tcp(51, SERVER, "RA")
    web = Conversation(client=("10.9.0.5", 42000), server=("10.9.0.2", 80))
    for ms, side, flags in ((60, CLIENT, "S"), (61, SERVER, "SA"), (62, CLIENT, "A"), (63, CLIENT, "FA"),
                            (64, SERVER, "FA"), (65, CLIENT, "A")):  # fmt: skip
        web.tcp(ms, side, flags)
    path = tmp_path / "probes.pcap"
    wrpcap(str(path), [p for c in [*convs, reset, web] for p in c.packets], linktype=1)
    return path


@pytest.mark.parametrize("single_packet_flows", [False, True])
def test_one_packet_flows_reach_the_aggregates_and_windows_only_when_asked(
    tmp_path: Path, single_packet_flows: bool
) -> None:
    pcap = probes_pcap(tmp_path)
    records, aggs, windows, metrics = sensor_run(pcap, single_packet_flows)
    check_counts(records, aggs, metrics)
    assert len(records) == 42 and total(metrics, "tapwatch_capture_single_packet_flows_total") == 40
    (scanner,) = [a for a in aggs if a.view is View.SOURCE and a.key == "10.9.0.66"]
    assert (scanner.flows, scanner.distinct_ports, scanner.unanswered, scanner.rejected) == (41, 41, 40, 1)
    assert scanner.no_payload == 41 and scanner.start_ms == T0_MS // 10_000 * 10_000
    expected = 42 if single_packet_flows else 2
    assert len(windows) == expected and Counter(w.flow.packets >= 2 for w in windows)[True] == 2
    # a flow of 2+ packets keeps its id whether or not one-packet flows are emitted (flows, detect, capture agree)
    plain = PcapSource([str(pcap)], CaptureConfig(sensor="t"), CaptureMetrics(CollectorRegistry()))
    assert [r.meta.flow_id for r in plain] == [r.meta.flow_id for r in records if r.meta.packets >= 2]


def test_aggregates_can_be_turned_off_and_are_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    bus, metrics = MemoryBus(), CaptureMetrics(CollectorRegistry())
    pipe = build_pipeline(CaptureSettings(aggregates=False), bus, identity_card(10), metrics)
    assert pipe.aggregator is None and pipe.source_config(CaptureConfig(sensor="t")).emit_single_packet_flows is False
    pipe.feed([flow("10.0.0.1", VICTIM, 80, 1_000, packets=2), flow("10.0.0.1", VICTIM, 81, 1_000)])
    assert pipe.close().sent == 1 and bus.length(AGGREGATES_STREAM) == 0
    monkeypatch.setenv("TAPWATCH_AGGREGATE_BUCKET_S", "30")
    monkeypatch.setenv("TAPWATCH_AGGREGATES_STREAM", "site:aggregates")
    pipe = build_pipeline(CaptureSettings(), bus, identity_card(10), metrics)
    assert pipe.aggregator is not None and pipe.aggregator.bucket_ms == 30_000
    assert pipe.source_config(CaptureConfig(sensor="s9")).emit_single_packet_flows and pipe.aggregator.sensor == "s9"
    pipe.feed([flow("10.0.0.1", VICTIM, 80, 1_000)])
    pipe.close()
    assert bus.length("site:aggregates") == 2 and bus.length(WINDOWS_STREAM) == 1  # a one-packet flow: no window
    monkeypatch.setenv("TAPWATCH_AGGREGATE_BUCKET_S", "0.5")
    with pytest.raises(ValueError, match="aggregate_bucket_s"):
        CaptureSettings()


def test_a_ping_flood_of_one_flow_counts_its_packets_apart_and_the_dos_rule_names_it() -> None:
    """A ping flood is one ICMP flow of thousands of packets: in its victim's bucket it is one flow among the
    server's other clients, so its share of flows says nothing; its ICMP packets do."""
    from tapwatch.alerting.volume import VolumeRules
    from tapwatch.features.baseline import SiteBaseline

    ping = flow("10.0.0.66", VICTIM, 0, 5_000, first_ms=1_000, proto=1, packets=15_000, nbytes=1_500_000)
    dns = [flow(f"10.0.1.{i}", VICTIM, 53, 1_000 + i, sport=50_000 + i, proto=17, packets=2) for i in range(1, 40)]
    (victim,) = of(run([ping, *dns]), View.VICTIM, VICTIM)
    assert (victim.flows, victim.icmp, victim.icmp_packets, victim.packets) == (40, 1, 15_000, 15_078)
    (ev,) = VolumeRules(SiteBaseline()).judge(victim)
    assert (ev.family.value, ev.detail, ev.facts[0].value) == ("dos", "ICMP flood", 15_000)
    assert AggregateRecord.decode(victim.encode()) == victim  # the new count crosses the bus

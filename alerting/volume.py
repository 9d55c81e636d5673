"""The volume view's rules: aggregate buckets past thresholds learned from benign traffic become evidence.

Rules, not a trained classifier: each threshold is a high quantile of the same count over *benign* buckets (a
false-alert budget), never fitted to attacks, so a site can learn its own from its own benign traffic and
nothing about the lab's attacks is built in. Zeek's scan detector and Suricata's ``threshold``/``rate_filter``
are the models; ``docs/alerts.md`` lists each rule.

Source view (who does it):

* **scan**: ``distinct_ports >= scan_ports`` (vertical) or ``distinct_peers >= scan_hosts`` (horizontal), with at
  least half the flows unanswered or reset;
* **repeated service use** (password guessing; on a web port a web attack): one (peer, port) pair gets
  ``pair_flows`` flows or more in a bucket, fewer than a flood's. The count alone is ambiguous (a test harness, a
  batch job, a chatty client), so this evidence is not ``alone``: it opens an episode only beside the window view's
  evidence of the same family (:mod:`tapwatch.alerting.episodes`);
* **beacon**: a pair whose connections came at least ``beacon_min`` times in a run at a regular interval
  (coefficient of variation at most ``beacon_cv``) of a second or more (the sensor's ``beacons``, most regular
  first; the first one that is not a service the site polls on a timer).

Victim view (whom it hits): **dos** when ``flows >= dos_flows`` or ``packets >= dos_packets`` and the traffic
goes to one service (at least half the flows to its busiest port) or is ICMP, or when its ICMP packets alone reach
``dos_packets`` (a ping flood is one flow, one among many in its victim's bucket); named a SYN, UDP, ICMP or
connection flood, *distributed* past ``dos_sources`` distinct sources, *reflection* when UDP answers from a
well-known service port arrive unasked.

>>> from tapwatch.features.aggregates import AggregateRecord, View
>>> rules = VolumeRules(SiteBaseline())
>>> agg = AggregateRecord(sensor="s", view=View.SOURCE, key="10.0.0.9", start_ms=0, bucket_ms=10_000, flows=900,
...                       unanswered=880, distinct_ports=900, distinct_peers=1, top_peer="10.0.0.2", last_ms=9_000)
>>> [(e.family.value, e.detail) for e in rules.judge(agg)]
[('scan', 'vertical port scan')]
"""

from __future__ import annotations

import ipaddress

from tapwatch.alerting.evidence import Evidence, Fact, ViewKind
from tapwatch.features.aggregates import AggregateRecord, View
from tapwatch.features.baseline import FAIL_RATIO, SERVICE_SHARE, SiteBaseline
from tapwatch.features.families import Family
from tapwatch.features.schema import ExpiryReason, FlowMeta

WEB_PORTS = frozenset({80, 443, 8000, 8008, 8080, 8443, 8888})
REFLECT_PORTS = frozenset({19, 53, 111, 123, 137, 161, 389, 1900, 3702, 5353, 11211})


class VolumeRules:
    """Judge aggregate buckets (see the module docstring)."""

    def __init__(self, baseline: SiteBaseline) -> None:
        self.baseline = baseline
        self._periodic = frozenset(baseline.periodic)

    def judge(self, agg: AggregateRecord) -> list[Evidence]:
        if agg.flows <= 0:
            return []
        source = agg.view is View.SOURCE
        found = [self._scan(agg), self._pair(agg), self._beacon(agg)] if source else [self._dos(agg)]
        return [e for e in found if e is not None]

    def _fact(self, agg: AggregateRecord, name: str, value: float, thr: str, text: str,
              port: int | None = None) -> Fact:  # fmt: skip
        limit = self.baseline.threshold(thr, port)
        median = self.baseline.median(agg.view, name if port is None else thr, port)
        return Fact(name, float(value), median, round(value / limit, 3) if limit else 0.0, text)

    def _scan(self, agg: AggregateRecord) -> Evidence | None:
        fail = (agg.unanswered + agg.rejected) / agg.flows
        ports, hosts = self.baseline.threshold("scan_ports"), self.baseline.threshold("scan_hosts")
        if fail < FAIL_RATIO or (agg.distinct_ports < ports and agg.distinct_peers < hosts):
            return None
        vertical = agg.distinct_ports / ports >= agg.distinct_peers / hosts
        spread = (
            self._fact(agg, "distinct_ports", agg.distinct_ports, "scan_ports",
                       "{value} destination ports" + (f" of {agg.top_peer}" if agg.distinct_peers == 1 else "")
                       + " in {seconds} s (benign hosts here: {median})")
            if vertical else
            self._fact(agg, "distinct_peers", agg.distinct_peers, "scan_hosts",
                       "{value} hosts" + f" on port {agg.top_port}" + " in {seconds} s (benign hosts here: {median})")
        )  # fmt: skip
        facts = (
            spread,
            Fact("unanswered_or_reset", round(fail, 3), None, round(fail, 3), "{percent} unanswered or reset"),
        )
        score = min(1.0, max(agg.distinct_ports / ports, agg.distinct_peers / hosts) / 2)
        detail = "vertical port scan" if vertical else "horizontal scan"
        return self._evidence(agg, Family.SCAN, detail, score, facts)

    def _pair(self, agg: AggregateRecord) -> Evidence | None:
        limit = self.baseline.threshold("pair_flows", agg.pair_port)
        if agg.pair_flows < limit or agg.pair_flows >= self.baseline.threshold("dos_flows", agg.pair_port):
            return None
        web = agg.pair_port in WEB_PORTS
        family = Family.WEBATTACK if web else Family.BRUTEFORCE
        detail = "repeated web requests" if web else "repeated logins to one service"
        facts = (
            self._fact(agg, "pair_flows", agg.pair_flows, "pair_flows",
                       "{value} connections to " + f"{agg.pair_peer} port {agg.pair_port}"
                       + " in {seconds} s (benign hosts here: {median})", agg.pair_port),
            Fact("bytes_per_connection", round(agg.pair_bytes / max(1, agg.pair_flows), 1), None, 0.0,
                 "{value} bytes per connection"),
        )  # fmt: skip
        return self._evidence(agg, family, detail, min(1.0, agg.pair_flows / limit / 2), facts, alone=False)

    def _beacon(self, agg: AggregateRecord) -> Evidence | None:
        count, cv = self.baseline.threshold("beacon_min"), self.baseline.threshold("beacon_cv")
        for b in agg.beacons:  # most regular first
            if b.count < count or b.cv > cv:
                continue
            if f"{b.peer}:{b.port}" in self._periodic or not _beacon_peer(b.peer, b.port):
                continue  # a service the site's benign clients poll on a timer, or ICMP / link-local housekeeping
            facts = (
                Fact("beacon_count", b.count, None, 1.0, "{value} connections to " + f"{b.peer} port {b.port}"),
                Fact("beacon_interval_s", round(b.interval_ms / 1000, 2), None, 1.0, "every {value} s"),
                self._fact(agg, "beacon_cv", round(b.cv, 3), "beacon_cv",
                           "with {value} relative jitter (people are irregular; the most regular benign pair here: "
                           "{median})"),
            )  # fmt: skip
            return self._evidence(agg, Family.BOTNET, "periodic beacon", 0.9, facts,
                                  pair=(b.peer, b.port, b.count, b.sample))  # fmt: skip
        return None

    def _dos(self, agg: AggregateRecord) -> Evidence | None:
        port = agg.top_port
        flows_thr, pkts_thr = self.baseline.threshold("dos_flows", port), self.baseline.threshold("dos_packets", port)
        ping_flood = agg.icmp_packets >= self.baseline.threshold("dos_packets", 0)
        if agg.flows < flows_thr and agg.packets < pkts_thr and not ping_flood:
            return None
        one_service = agg.top_port_flows / agg.flows >= SERVICE_SHARE or agg.icmp / agg.flows >= SERVICE_SHARE
        if not (one_service or ping_flood):
            return None  # many ports of one host: a scan's victim, judged in the source view
        if ping_flood and (not one_service or agg.icmp_packets / agg.packets >= SERVICE_SHARE):
            return self._ping_flood(agg)  # its packets, not its one flow, are the flood
        facts = (
            self._fact(agg, "flows", agg.flows, "dos_flows",
                       "{value} connections to " + f"{agg.key} port {agg.top_port}" + " in {seconds} s "
                       "(benign hosts here receive {median})", port),
            self._fact(agg, "packets", agg.packets, "dos_packets", "{value} packets (benign: {median})", port),
            self._fact(agg, "distinct_peers", agg.distinct_peers, "dos_sources",
                       "from {value} sources (benign: {median})"),
        )  # fmt: skip
        score = min(1.0, max(agg.flows / flows_thr, agg.packets / pkts_thr) / 2)
        return self._evidence(agg, Family.DOS, self._flood_kind(agg), score, facts)

    def _ping_flood(self, agg: AggregateRecord) -> Evidence:
        """ICMP packets past the packet threshold in a bucket whose flows are mostly other traffic: a ping flood is
        one flow (one echo identifier) of thousands of packets, and expires among its victim's other flows."""
        limit = self.baseline.threshold("dos_packets", 0)
        facts = (
            self._fact(agg, "icmp_packets", agg.icmp_packets, "dos_packets",
                       "{value} ICMP packets to " + f"{agg.key}" + " in {seconds} s (benign: {median})", 0),
            self._fact(agg, "distinct_peers", agg.distinct_peers, "dos_sources",
                       "from {value} sources (benign: {median})"),
        )  # fmt: skip
        many = agg.distinct_peers >= self.baseline.threshold("dos_sources")
        kind = "distributed ICMP flood" if many else "ICMP flood"
        return self._evidence(agg, Family.DOS, kind, min(1.0, agg.icmp_packets / limit / 2), facts)

    def _flood_kind(self, agg: AggregateRecord) -> str:
        n = agg.flows
        if agg.udp / n >= SERVICE_SHARE and agg.top_src_port in REFLECT_PORTS and agg.unanswered / n >= FAIL_RATIO:
            kind = f"reflection from port {agg.top_src_port}"
        elif agg.icmp / n >= SERVICE_SHARE:
            kind = "ICMP flood"
        elif agg.udp / n >= SERVICE_SHARE:
            kind = "UDP flood"
        elif agg.tcp / n >= SERVICE_SHARE and agg.no_payload / n >= 0.8:
            kind = "SYN flood"
        else:
            kind = "connection flood"
        many = agg.distinct_peers >= self.baseline.threshold("dos_sources")
        return f"distributed {kind}" if many and not kind.startswith("reflection") else kind

    def _evidence(self, agg: AggregateRecord, family: Family, detail: str, score: float, facts: tuple[Fact, ...],
                  pair: tuple[str, int, int, FlowMeta | None] | None = None,
                  alone: bool = True) -> Evidence:  # fmt: skip
        """Evidence about the bucket's host; ``pair`` (peer, port, flows, its newest flow) narrows a source's
        evidence to one pair (a beacon is about its C2, not the host's busiest peer) and dates it by that flow: a
        pcap's finished connections can reach a bucket minutes after their last packet."""
        source_view = agg.view is View.SOURCE
        flow = agg.sample or _stand_in(agg)
        at_ms = agg.last_ms or agg.start_ms + agg.bucket_ms
        if pair is None:
            targets = ((agg.top_peer,) if agg.top_peer else ()) if source_view else (agg.key,)
            ports, flows = (agg.pair_port if source_view else agg.top_port,), agg.flows
            n_targets, n_ports = (agg.distinct_peers if source_view else 1), agg.distinct_ports
        else:
            peer, port, flows, sample = pair
            flow, targets, ports, n_targets, n_ports = sample or flow, (peer,), (port,), 1, 1
            at_ms = sample.last_seen_ms if sample is not None else at_ms
        return Evidence(
            family=family, view=ViewKind.VOLUME, entity=agg.key, at_ms=at_ms,
            score=round(max(0.5, score), 6), flow=flow, detail=detail, flows=flows,
            sources=(agg.key,) if source_view else ((agg.top_peer,) if agg.top_peer else ()),
            targets=targets, ports=ports, n_sources=1 if source_view else agg.distinct_peers, n_targets=n_targets,
            n_ports=n_ports, facts=facts, model="volume-rules", model_version="1", alone=alone,
        )  # fmt: skip


def _beacon_peer(peer: str, port: int) -> bool:
    """False for what talks on a timer by design: ICMP (port 0: neighbour discovery, router solicitations) and
    link-local or multicast peers."""
    try:
        addr = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return port != 0 and not (addr.is_link_local or addr.is_multicast)


def _stand_in(agg: AggregateRecord) -> FlowMeta:
    """A flow for an aggregate without a sample (none is missing in practice: the sensor always sets one)."""
    src, dst = (agg.key, agg.top_peer or agg.key) if agg.view is View.SOURCE else (agg.top_peer or agg.key, agg.key)
    return FlowMeta(0, "", src, 0, dst, agg.top_port, 6, agg.first_ms, agg.last_ms, agg.packets, agg.bytes,
                    ExpiryReason.END_OF_CAPTURE, 0, agg.sensor)  # fmt: skip

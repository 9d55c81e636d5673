"""The closing summary of the embedded modes, read from the metrics registry the stages counted into.

Reading the registry (rather than keeping separate tallies) makes the summary and ``/metrics`` the same
numbers. Every window the sensor built is accounted for: it got a verdict, was dead-lettered by the worker, or
was dropped before the bus; :attr:`Summary.balanced` says whether the three add up.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from tapwatch.features.card import ModelCard


def _by(registry: CollectorRegistry, name: str, label: str | None = None) -> dict[str, int]:
    """Sum of the samples called ``name``, per value of ``label`` (all under ``""`` without one)."""
    out: dict[str, int] = defaultdict(int)
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name:
                out[sample.labels.get(label, "") if label else ""] += int(sample.value)
    return dict(out)


def _total(registry: CollectorRegistry, name: str) -> int:
    return sum(_by(registry, name).values())


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in sorted(counts.items()) if v}


@dataclass(frozen=True)
class Summary:
    """What one embedded run did.

    Parameters
    ----------
    model
        ``name version`` of the serving model.
    seconds
        Wall time from the start of the stages to the end of the drain.
    packets, flows, single_packet_flows, windows
        The sensor's counts: packets in closed flows (IP packets), flows closed, one-packet flows (not scored,
        as in CICFlowMeter), windows built.
    read_packets
        Packets read, IP or not: the files' packet records, or what the live meter took (0: not counted).
    verdicts, alerts
        Per class.
    dropped
        Windows that got no verdict, by ``stage:reason`` (``bus:trimmed``, ``worker:shape`` …).
    lost_alerts
        Verdicts over the threshold that gave no alert for another reason than suppression, by ``stage:reason``.
    suppressed, explained
        Alerts suppressed by the threshold file, and alerts that carry an explanation.
    """

    model: str
    seconds: float
    packets: int
    flows: int
    single_packet_flows: int
    windows: int
    read_packets: int = 0
    verdicts: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)
    lost_alerts: dict[str, int] = field(default_factory=dict)
    suppressed: int = 0
    explained: int = 0

    @classmethod
    def from_registry(cls, registry: CollectorRegistry, card: ModelCard, seconds: float) -> Summary:
        def count(name: str, label: str) -> dict[str, int]:
            return _nonzero(_by(registry, name, label))

        dropped = {f"bus:{k}": v for k, v in count("tapwatch_bus_dropped_windows_total", "reason").items()}
        dropped |= {
            f"worker:{k}": v for k, v in count("tapwatch_inference_dead_lettered_windows_total", "reason").items()
        }
        lost = {f"alerter:{k}": v for k, v in count("tapwatch_alerting_dead_lettered_total", "reason").items()}
        trimmed = _total(registry, "tapwatch_inference_trimmed_verdicts_total")
        if trimmed:
            lost["worker:trimmed_verdicts"] = trimmed
        alerts = count("tapwatch_alerting_alerts_total", "class")
        skipped = _total(registry, "tapwatch_alerting_explanations_skipped_total")
        return cls(
            model=f"{card.name} {card.version}", seconds=seconds,
            packets=_total(registry, "tapwatch_capture_packets_total"),
            read_packets=_total(registry, "tapwatch_capture_read_packets_total"),
            flows=_total(registry, "tapwatch_capture_flows_total"),
            single_packet_flows=_total(registry, "tapwatch_capture_single_packet_flows_total"),
            windows=_total(registry, "tapwatch_features_windows_total"),
            verdicts=count("tapwatch_inference_verdicts_total", "class"), alerts=alerts, dropped=dropped,
            lost_alerts=lost, suppressed=_total(registry, "tapwatch_alerting_suppressed_total"),
            explained=sum(alerts.values()) - skipped,
        )  # fmt: skip

    @property
    def n_verdicts(self) -> int:
        return sum(self.verdicts.values())

    @property
    def n_alerts(self) -> int:
        return sum(self.alerts.values())

    @property
    def n_dropped(self) -> int:
        return sum(self.dropped.values())

    @property
    def balanced(self) -> bool:
        """Every window built got a verdict or is counted as dropped."""
        return self.windows == self.n_verdicts + self.n_dropped

    def _packets_line(self) -> str:
        """Packets read and where they went: IP packets make flows; ARP and other non-IP frames, IP fragments and
        packets outside ``--bpf`` make none (tcpdump counts them all, so the two figures are told apart)."""
        if not self.read_packets:
            return f"  packets   {self.packets} in flows (IP)"
        outside = max(0, self.read_packets - self.packets)
        return (f"  packets   {self.read_packets} read: {self.packets} in flows (IP), {outside} in none "
                "(not IP, IP fragments, or outside --bpf)")  # fmt: skip

    def lines(self, command: str) -> list[str]:
        """The summary as the commands print it (standard error)."""

        def per(counts: dict[str, int]) -> str:
            return ", ".join(f"{k} {v}" for k, v in counts.items()) or "none"

        rate = self.windows / self.seconds if self.seconds > 0 else 0.0
        out = [
            f"tapwatch {command}: model {self.model}, {self.seconds:.2f} s ({rate:.0f} windows/s)",
            self._packets_line(),
            f"  flows     {self.flows} ({self.single_packet_flows} with one packet, not scored)",
            f"  windows   {self.windows}",
            f"  verdicts  {self.n_verdicts}: {per(self.verdicts)}",
            f"  alerts    {self.n_alerts}: {per(self.alerts)} "
            f"({self.explained} explained, {self.suppressed} suppressed)",
            f"  dropped   {self.n_dropped}" + (f": {per(self.dropped)}" if self.dropped else ""),
        ]
        if self.lost_alerts:
            out.append(f"  alerts lost after their verdict: {per(self.lost_alerts)}")
        if not self.balanced:
            out.append(f"  warning: {self.windows} windows != {self.n_verdicts} verdicts + {self.n_dropped} dropped")
        return out

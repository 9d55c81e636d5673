"""Prometheus metrics of the alerter, on an injected registry.

Only ``tapwatch_alerting_*`` names are registered here, so the embedded mode can put the sensor's, the
worker's and the alerter's metrics on one registry (``tapwatch_build_info`` belongs to whoever owns ``main``).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from tapwatch.alerting.alert import ExplanationStatus
from tapwatch.alerting.suppress import SuppressReason
from tapwatch.features.families import ATTACK_FAMILIES

SINK_KINDS = ("stdout", "file", "redis", "syslog_udp", "syslog_tcp", "webhook")
"""The ``sink`` label's closed set: every kind of sink (:mod:`tapwatch.alerting.sinks`) counts under its own."""

EXPLANATION_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Seconds; LIME over a small model takes milliseconds, over the shipped model tens of milliseconds."""


class AlerterMetrics:
    """The alerter's counters, gauges and the explanation latency histogram.

    Parameters
    ----------
    registry
        Where to register; the CLI passes the global registry, tests and the embedded mode their own.

    Example
    -------
    >>> m = AlerterMetrics(CollectorRegistry())
    >>> m.alerts.labels(**{"class": "PortScan", "severity": "3"}).inc()
    >>> m.registry.get_sample_value("tapwatch_alerting_alerts_total", {"class": "PortScan", "severity": "3"})
    1.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._decisions(registry)
        self._delivery(registry)
        self._service(registry)
        self._episodes(registry)

    # fmt: off
    def _decisions(self, r: CollectorRegistry) -> None:
        self.verdicts = Counter("tapwatch_alerting_verdicts", "Verdicts read, by outcome (below, over the threshold).",
                                ["outcome"], registry=r)
        self.alerts = Counter("tapwatch_alerting_alerts", "Alerts emitted, by class and severity.",
                              ["class", "severity"], registry=r)
        self.suppressed = Counter("tapwatch_alerting_suppressed", "Alerts not emitted, by reason.", ["reason"],
                                  registry=r)
        self.duplicates = Counter("tapwatch_alerting_duplicates",
                                  "Re-delivered verdicts of a window that already had an alert (acked, no alert).",
                                  registry=r)
        self.dead = Counter("tapwatch_alerting_dead_lettered", "Entries sent to tapwatch:dead (malformed, too large, "
                            "truncated, wrong type or version), by reason and stream.", ["reason", "stream"],
                            registry=r)
        self.threshold_evictions = Counter("tapwatch_alerting_threshold_evictions",
                                           "Threshold tracking entries evicted by the LRU cap.", registry=r)
        for outcome in ("below", "over"):
            self.verdicts.labels(outcome=outcome)
        for reason in SuppressReason:
            self.suppressed.labels(reason=reason.value)

    def _delivery(self, r: CollectorRegistry) -> None:
        self.sink_failures = Counter("tapwatch_alerting_sink_failures", "Alerts a sink failed to take, by sink.",
                                     ["sink"], registry=r)
        self.sink_up = Gauge("tapwatch_alerting_sink_up", "1 while the sink's last write succeeded.", ["sink"],
                             registry=r)
        self.explain_latency = Histogram("tapwatch_alerting_explanation_latency_seconds",
                                         "Time to compute one LIME explanation.", buckets=EXPLANATION_BUCKETS,
                                         registry=r)
        self.explain_skipped = Counter("tapwatch_alerting_explanations_skipped",
                                       "Alerts sent without an explanation, by reason.", ["reason"], registry=r)
        for status in ExplanationStatus:
            if status is not ExplanationStatus.OK:
                self.explain_skipped.labels(reason=status.value)
        for kind in SINK_KINDS:
            self.sink_failures.labels(sink=kind)

    def _service(self, r: CollectorRegistry) -> None:
        self.group_recreated = Counter("tapwatch_alerting_group_recreated",
                                       "Times the verdicts stream or the alerters group had to be recreated.",
                                       registry=r)
        self.reloads = Counter("tapwatch_alerting_model_reloads", "Model card reloads, by result (ok, failed).",
                               ["result"], registry=r)
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        self.profile_reloads = Counter("tapwatch_alerting_profile_reloads", "Site profile reloads, by result (ok, "
                                       "failed: refused, the old one kept).", ["result"], registry=r)  # fmt: skip
        for result in ("ok", "failed"):
            self.profile_reloads.labels(result=result)
        self.bus_up = Gauge("tapwatch_alerting_bus_connected", "1 while the bus is reachable.", registry=r)
        self.bus_up.set(1)  # as the alerter's readiness starts; the loop reports each change after that
        self.stream_length = Gauge("tapwatch_alerting_verdicts_stream_length", "Entries on tapwatch:verdicts.",
                                   registry=r)

    def _episodes(self, r: CollectorRegistry) -> None:
        self.episode_lines = Counter("tapwatch_alerting_episode_lines", "Episode alert lines written, by family and "
                                     "state (open, update, close).", ["family", "state"], registry=r)
        self.evidence = Counter("tapwatch_alerting_evidence", "Evidence handed to the episode tracker, by view and "
                                "family.", ["view", "family"], registry=r)
        self.aggregates = Counter("tapwatch_alerting_aggregates", "Aggregate buckets read, by view.", ["view"],
                                  registry=r)
        self.episodes_suppressed = Counter("tapwatch_alerting_episodes_suppressed", "Episodes opened but not "
                                           "written (allow-list, threshold.config), by reason.", ["reason"], registry=r)
        self.open_episodes = Gauge("tapwatch_alerting_open_episodes", "Episodes open or pending in the store.",
                                   registry=r)
        self.lines_recovered = Counter("tapwatch_alerting_episode_lines_recovered", "Episode lines found unwritten "
                                       "in the outbox (their alerter died after making them) and written.",
                                       registry=r)  # fmt: skip
        for fam in ATTACK_FAMILIES:
            for state in ("open", "update", "close"):
                self.episode_lines.labels(family=fam.value, state=state)
            for view in ("window", "volume"):
                self.evidence.labels(view=view, family=fam.value)
        for view in ("source", "victim"):
            self.aggregates.labels(view=view)
    # fmt: on

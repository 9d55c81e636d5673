"""Every ``tapwatch_*`` series a tapwatch process exposes on ``/metrics``, its name written out in full.

The metrics modules (:mod:`tapwatch.capture.metrics`, :mod:`tapwatch.inference.metrics`,
:mod:`tapwatch.alerting.metrics`, :mod:`tapwatch.console.stream`) register metric *families*; prometheus_client
adds the ``_total`` of a counter, the ``_info`` of an info and the ``_bucket``/``_sum``/``_count`` of a histogram
when it exposes them. A Prometheus rule or a Grafana panel (deploy/prometheus, deploy/grafana) uses the exposed
name, so this catalogue is where a reader who meets such a name finds what it means and which process serves
it. tests/deploy/test_metric_names.py keeps it equal to what the metrics modules register, and checks that every
name a rule or a panel uses is here and is served by a running process. The ``_created`` series that
prometheus_client adds beside each counter and histogram are left out: nothing should read them.

``tapwatch run`` (all stages in one process) serves the capture, worker and alerter series on one port.

Example
-------
>>> CATALOGUE["tapwatch_alerting_alerts_total"].process
'alerter'
>>> CATALOGUE["tapwatch_inference_latency_seconds_bucket"].kind
'histogram'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

COUNTER, GAUGE, HISTOGRAM, INFO = "counter", "gauge", "histogram", "info"
CAPTURE, WORKER, ALERTER, CONSOLE = "capture", "worker", "alerter", "console"


@dataclass(frozen=True)
class Series:
    """One exposed series name: its Prometheus type, the process that serves it, and what it means.

    Parameters
    ----------
    name
        The name as scraped, suffix included (``_total``, ``_info``, ``_bucket``...).
    kind
        The family's type: counter, gauge, histogram or info.
    process
        The tapwatch command serving it (capture, worker, alerter, console); ``tapwatch_build_info`` is served by
        capture, the worker and the alerter alike and names capture here.
    meaning
        One line: what a sample counts, and its labels.

    Example
    -------
    >>> Series("tapwatch_bus_connected", GAUGE, CAPTURE, "1 while the bus is reachable.").kind
    'gauge'
    """

    name: str
    kind: str
    process: str
    meaning: str


SERIES: tuple[Series, ...] = (
    # -- capture (tapwatch capture, port 9640): capture/metrics.py ---------------------------------------------------
    Series("tapwatch_capture_packets_total", COUNTER, CAPTURE, "Packets in closed flows (IPv4 and IPv6)."),
    Series("tapwatch_capture_read_packets_total", COUNTER, CAPTURE,
           "Packets read, IP or not (pcap records, or what the live meter took after --bpf)."),
    Series("tapwatch_capture_kernel_drops_total", COUNTER, CAPTURE,
           "Packets the kernel dropped before the live meter read them: capture loss."),
    Series("tapwatch_capture_bytes_total", COUNTER, CAPTURE, "Link-layer bytes in closed flows."),
    Series("tapwatch_capture_flows_total", COUNTER, CAPTURE, "Flows closed, by expiry reason (label reason)."),
    Series("tapwatch_capture_single_packet_flows_total", COUNTER, CAPTURE, "One-packet flows closed."),
    Series("tapwatch_capture_aggregates_total", COUNTER, CAPTURE,
           "Aggregate records (finished buckets) published, by view (source, victim)."),
    Series("tapwatch_capture_aggregate_evicted_keys_total", COUNTER, CAPTURE,
           "Hosts whose open aggregate buckets the key cap dropped (a spoofed-source flood)."),
    Series("tapwatch_capture_aggregate_keys", GAUGE, CAPTURE, "Hosts holding open aggregate buckets."),
    Series("tapwatch_features_windows_total", COUNTER, CAPTURE, "Windows produced by the sensor."),
    Series("tapwatch_features_evicted_keys_total", COUNTER, CAPTURE, "Window keys evicted by the live-key cap."),
    Series("tapwatch_features_live_keys", GAUGE, CAPTURE, "Window keys held."),
    Series("tapwatch_bus_sent_windows_total", COUNTER, CAPTURE, "Windows written to tapwatch:windows."),
    Series("tapwatch_bus_dropped_windows_total", COUNTER, CAPTURE,
           "Windows dropped before reaching the bus, by reason (buffer_full, trimmed, unreachable)."),
    Series("tapwatch_bus_dropped_aggregates_total", COUNTER, CAPTURE,
           "Aggregate records dropped before reaching the bus, by reason."),
    Series("tapwatch_bus_buffered_windows", GAUGE, CAPTURE, "Windows waiting for the bus (Redis unreachable)."),
    Series("tapwatch_bus_connected", GAUGE, CAPTURE, "1 while the sensor reaches the bus."),
    Series("tapwatch_build_info", INFO, CAPTURE, "The tapwatch version (label version); also on worker and alerter."),
    # -- worker (tapwatch worker, port 9641): inference/metrics.py ----------------------------------------------------
    Series("tapwatch_inference_batches_total", COUNTER, WORKER, "Batches run through the model."),
    Series("tapwatch_inference_batch_size_windows_bucket", HISTOGRAM, WORKER, "Windows per model batch (buckets)."),
    Series("tapwatch_inference_batch_size_windows_sum", HISTOGRAM, WORKER, "Windows in all model batches."),
    Series("tapwatch_inference_batch_size_windows_count", HISTOGRAM, WORKER, "Model batches observed."),
    Series("tapwatch_inference_latency_seconds_bucket", HISTOGRAM, WORKER, "ONNX Runtime time per batch (buckets)."),
    Series("tapwatch_inference_latency_seconds_sum", HISTOGRAM, WORKER, "ONNX Runtime time of all batches."),
    Series("tapwatch_inference_latency_seconds_count", HISTOGRAM, WORKER, "Batches timed."),
    Series("tapwatch_inference_expiry_to_verdict_seconds_bucket", HISTOGRAM, WORKER,
           "Time from the sensor closing a window's newest flow to its verdict (buckets)."),
    Series("tapwatch_inference_expiry_to_verdict_seconds_sum", HISTOGRAM, WORKER,
           "Flow-close-to-verdict time of all verdicts."),
    Series("tapwatch_inference_expiry_to_verdict_seconds_count", HISTOGRAM, WORKER, "Verdicts timed."),
    Series("tapwatch_inference_windows_total", COUNTER, WORKER, "Stream entries taken (read or claimed)."),
    Series("tapwatch_inference_claimed_windows_total", COUNTER, WORKER,
           "Entries claimed from stalled consumers (XAUTOCLAIM)."),
    Series("tapwatch_inference_verdicts_total", COUNTER, WORKER, "Verdicts written, by predicted class (label class)."),
    Series("tapwatch_inference_over_threshold_verdicts_total", COUNTER, WORKER,
           "Verdicts scoring at or over the card's threshold."),
    Series("tapwatch_inference_dead_lettered_windows_total", COUNTER, WORKER,
           "Entries sent to tapwatch:dead, by reason (too_large, missing_field, version, dtype, shape, flow_meta...)."),
    Series("tapwatch_inference_trimmed_verdicts_total", COUNTER, WORKER,
           "Verdicts removed by the verdict stream's length bound."),
    Series("tapwatch_inference_group_recreations_total", COUNTER, WORKER,
           "Consumer groups found missing and recreated (Redis lost its data)."),
    Series("tapwatch_inference_model_reloads_total", COUNTER, WORKER, "Model reload attempts, by result (ok, failed)."),
    Series("tapwatch_inference_profile_reloads_total", COUNTER, WORKER,
           "Site profile reload attempts, by result (ok, failed)."),
    Series("tapwatch_inference_bus_connected", GAUGE, WORKER, "1 while the worker reaches the bus."),
    Series("tapwatch_inference_pending_windows", GAUGE, WORKER,
           "Entries of group workers delivered and not yet acknowledged (XPENDING)."),
    Series("tapwatch_inference_lag_windows", GAUGE, WORKER,
           "Entries of tapwatch:windows not yet delivered to group workers (Redis >= 7; NaN when unknown)."),
    Series("tapwatch_inference_novelty_scored_windows_total", COUNTER, WORKER,
           "Windows scored by the site profile's novelty model."),
    Series("tapwatch_inference_novel_windows_total", COUNTER, WORKER, "Windows at or over the novelty threshold."),
    Series("tapwatch_inference_novel_share", GAUGE, WORKER,
           "Drift: recent share of novel windows (about 0.001 expected; NaN without a novelty model)."),
    Series("tapwatch_inference_feature_shift", GAUGE, WORKER,
           "Drift: per feature (label feature), recent mean shift in benign standard deviations."),
    Series("tapwatch_model_info", INFO, WORKER, "The model serving verdicts (labels name, version)."),
    Series("tapwatch_profile_info", INFO, WORKER, "The site profile in use (labels path, model, flows, created)."),
    # -- alerter (tapwatch alerter, port 9642): alerting/metrics.py ---------------------------------------------------
    Series("tapwatch_alerting_verdicts_total", COUNTER, ALERTER, "Verdicts read, by outcome (below, over)."),
    Series("tapwatch_alerting_alerts_total", COUNTER, ALERTER,
           "Per-window alerts emitted (--alert-mode flows), by class and severity."),
    Series("tapwatch_alerting_suppressed_total", COUNTER, ALERTER,
           "Alerts not emitted, by reason (suppress, threshold, whitelist)."),
    Series("tapwatch_alerting_duplicates_total", COUNTER, ALERTER, "Re-delivered verdicts that already had an alert."),
    Series("tapwatch_alerting_dead_lettered_total", COUNTER, ALERTER,
           "Verdict and aggregate entries sent to tapwatch:dead (malformed, too_large, truncated, dtype, version, "
           "value, non_finite...), by reason and stream."),
    Series("tapwatch_alerting_threshold_evictions_total", COUNTER, ALERTER,
           "Threshold tracking entries evicted by the LRU cap."),
    Series("tapwatch_alerting_sink_failures_total", COUNTER, ALERTER, "Alerts a sink failed to take, by sink."),
    Series("tapwatch_alerting_sink_up", GAUGE, ALERTER, "1 while the sink's last write succeeded (label sink)."),
    Series("tapwatch_alerting_explanation_latency_seconds_bucket", HISTOGRAM, ALERTER,
           "Time to compute one LIME explanation (buckets)."),
    Series("tapwatch_alerting_explanation_latency_seconds_sum", HISTOGRAM, ALERTER, "Time of all explanations."),
    Series("tapwatch_alerting_explanation_latency_seconds_count", HISTOGRAM, ALERTER, "Explanations computed."),
    Series("tapwatch_alerting_explanations_skipped_total", COUNTER, ALERTER,
           "Alerts sent without an explanation, by reason (skipped_budget, skipped_queue_full, skipped_deadline...)."),
    Series("tapwatch_alerting_group_recreated_total", COUNTER, ALERTER,
           "Times the verdicts stream or the alerters group had to be recreated."),
    Series("tapwatch_alerting_model_reloads_total", COUNTER, ALERTER, "Model card reloads, by result (ok, failed)."),
    Series("tapwatch_alerting_profile_reloads_total", COUNTER, ALERTER, "Site profile reloads, by result."),
    Series("tapwatch_alerting_bus_connected", GAUGE, ALERTER, "1 while the alerter reaches the bus."),
    Series("tapwatch_alerting_verdicts_stream_length", GAUGE, ALERTER, "Entries on tapwatch:verdicts."),
    Series("tapwatch_alerting_episode_lines_total", COUNTER, ALERTER,
           "Episode alert lines written (--alert-mode episodes), by family and state (open, update, close)."),
    Series("tapwatch_alerting_evidence_total", COUNTER, ALERTER,
           "Evidence handed to the episode tracker, by view (window, volume) and family."),
    Series("tapwatch_alerting_aggregates_total", COUNTER, ALERTER, "Aggregate buckets read, by view."),
    Series("tapwatch_alerting_episodes_suppressed_total", COUNTER, ALERTER,
           "Episodes opened but not written (allow-list, threshold.config), by reason."),
    Series("tapwatch_alerting_open_episodes", GAUGE, ALERTER, "Episodes open or pending in the store."),
    Series("tapwatch_alerting_episode_lines_recovered_total", COUNTER, ALERTER,
           "Episode lines found unwritten in the outbox (their alerter died after making them) and written."),
    # -- console (tapwatch console serve, port 9643): console/stream.py -----------------------------------------------
    Series("tapwatch_console_alert_lines_total", COUNTER, CONSOLE,
           "Alert lines read from tapwatch:alerts, by outcome (stored, refused)."),
    Series("tapwatch_console_dead_lettered_total", COUNTER, CONSOLE,
           "Entries of tapwatch:alerts sent to tapwatch:dead (too_large, truncated, dtype, version, json, not_episode"
           "...), by reason and stream."),
)  # fmt: skip

CATALOGUE: dict[str, Series] = {s.name: s for s in SERIES}
"""The series by name."""

_NAME = re.compile(r"(?<![\w:])tapwatch_[a-z0-9_]+(?![\w:])")
"""A tapwatch series name in PromQL; a recording rule's ``level:metric:operation`` name is not one."""


def series_in(expr: str) -> set[str]:
    """The ``tapwatch_*`` series names a PromQL expression reads (recording rules' names left out).

    Example
    -------
    >>> sorted(series_in('rate(tapwatch_capture_packets_total[5m]) / job:tapwatch_inference_windows:rate5m'))
    ['tapwatch_capture_packets_total']
    """
    return set(_NAME.findall(expr))

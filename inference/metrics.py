"""Prometheus metrics of the inference worker, on an injected registry.

Names follow ``tapwatch_<stage>_<name>_<unit>``; every label comes from a closed set: the dead-letter
reasons of :class:`~tapwatch.inference.batch.DeadReason`, the class names of the loaded model cards, and
``ok``/``failed`` for reloads.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info

from tapwatch.inference.batch import DeadReason

# Powers of two up to the largest batch the settings allow (4096).
BATCH_BUCKETS = tuple(float(2**i) for i in range(13))
# ONNX Runtime time per batch: sub-millisecond for small models, seconds for the full Hybrid at batch 256.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
# From the sensor closing a flow to its verdict; the design's alert budget is 100 ms at p99.
EXPIRY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class InferenceMetrics:
    """The worker's counters, histograms and gauges.

    Parameters
    ----------
    registry
        Where to register; the CLI passes the global registry, tests and the embedded mode a fresh or
        shared one (``tapwatch_build_info`` is not registered here, so capture and inference metrics can
        share one registry).

    Example
    -------
    >>> m = InferenceMetrics(CollectorRegistry())
    >>> m.dead.labels(reason="version").inc()
    >>> m.registry.get_sample_value("tapwatch_inference_dead_lettered_windows_total", {"reason": "version"})
    1.0
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._work(registry)
        self._outcomes(registry)
        self._state(registry)
        self._profile(registry)

    def _work(self, registry: CollectorRegistry) -> None:
        self.batches = Counter("tapwatch_inference_batches", "Batches run through the model.", registry=registry)
        self.batch_size = Histogram(
            "tapwatch_inference_batch_size_windows",
            "Windows per model batch.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.latency = Histogram(
            "tapwatch_inference_latency_seconds", "ONNX Runtime time per batch.", buckets=LATENCY_BUCKETS,
            registry=registry,
        )  # fmt: skip
        self.expiry_to_verdict = Histogram(
            "tapwatch_inference_expiry_to_verdict_seconds",
            "Wall-clock time from the sensor closing a window's newest flow to its verdict.",
            buckets=EXPIRY_BUCKETS,
            registry=registry,
        )
        self.windows = Counter(
            "tapwatch_inference_windows", "Stream entries taken (read or claimed).", registry=registry
        )
        self.claimed = Counter(
            "tapwatch_inference_claimed_windows",
            "Entries claimed from stalled consumers (XAUTOCLAIM).",
            registry=registry,
        )

    def _outcomes(self, registry: CollectorRegistry) -> None:
        self.verdicts = Counter(
            "tapwatch_inference_verdicts", "Verdicts written, by predicted class.", ["class"], registry=registry
        )
        self.over_threshold = Counter(
            "tapwatch_inference_over_threshold_verdicts",
            "Verdicts with score >= the card's threshold (they carry the window tensor).",
            registry=registry,
        )
        self.dead = Counter(
            "tapwatch_inference_dead_lettered_windows",
            "Entries sent to the dead-letter stream, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in DeadReason:
            self.dead.labels(reason=reason.value)
        self.trimmed_verdicts = Counter(
            "tapwatch_inference_trimmed_verdicts",
            "Verdicts removed by the verdict stream's length bound (XTRIM ~).",
            registry=registry,
        )

    def _state(self, registry: CollectorRegistry) -> None:
        self.group_recreations = Counter(
            "tapwatch_inference_group_recreations",
            "Consumer groups found missing (Redis lost its data, or the group was destroyed) and recreated.",
            registry=registry,
        )
        self.reloads = Counter(
            "tapwatch_inference_model_reloads", "Model reload attempts, by result.", ["result"], registry=registry
        )
        for result in ("ok", "failed"):
            self.reloads.labels(result=result)
        self.bus_connected = Gauge(
            "tapwatch_inference_bus_connected", "1 while the bus is reachable.", registry=registry
        )
        self.pending = Gauge(
            "tapwatch_inference_pending_windows",
            "Entries delivered to the group's consumers and not yet acknowledged (Redis bus only).",
            registry=registry,
        )
        self.lag = Gauge(
            "tapwatch_inference_lag_windows",
            "Entries not yet delivered to the group (Redis >= 7.0 reports it; NaN when unknown).",
            registry=registry,
        )
        self.model_info = Info("tapwatch_model", "The model serving verdicts.", registry=registry)
        self.bus_connected.set(1)
        self.pending.set(float("nan"))
        self.lag.set(float("nan"))

    def _profile(self, registry: CollectorRegistry) -> None:
        self.novelty_scored = Counter(
            "tapwatch_inference_novelty_scored_windows", "Windows scored by the site profile's novelty model.",
            registry=registry,
        )  # fmt: skip
        self.novel = Counter(
            "tapwatch_inference_novel_windows",
            "Windows at or over the site profile's novelty threshold (unlike the site's benign windows).",
            registry=registry,
        )
        self.novel_share = Gauge(
            "tapwatch_inference_novel_share",
            "Drift: share of recent windows at or over the novelty threshold (weighted mean over about 20 batches; "
            "NaN without a novelty model). The profile expects about 0.001.",
            registry=registry,
        )
        self.feature_shift = Gauge(
            "tapwatch_inference_feature_shift",
            "Drift: per feature, |recent mean - the profile's benign mean| of the windows' newest rows, in benign "
            "standard deviations.",
            ["feature"],
            registry=registry,
        )
        self.profile_reloads = Counter(
            "tapwatch_inference_profile_reloads", "Site profile reload attempts, by result.", ["result"],
            registry=registry,
        )  # fmt: skip
        for result in ("ok", "failed"):
            self.profile_reloads.labels(result=result)
        self.profile_info = Info("tapwatch_profile", "The site profile in use.", registry=registry)
        self.novel_share.set(float("nan"))

    def profile_loaded(self, path: str, model: str, flows: int, created: str) -> None:
        self.profile_info.info({"path": path, "model": model, "flows": str(flows), "created": created})

    def model_loaded(self, name: str, version: str, class_names: list[str]) -> None:
        """Publish the serving model and pre-create its class labels so that scrapes show zeros."""
        self.model_info.info({"name": name, "version": version})
        for cls in class_names:
            self.verdicts.labels(**{"class": cls})

"""Wiring of the alerter from :class:`~tapwatch.alerting.settings.AlerterSettings`: sinks, suppression, the
explainer, metrics and health. ``tapwatch alerter`` calls :func:`run_alerter`; the embedded mode calls
:func:`build_alerter` with its in-memory bus and runs the alerter's loop in a thread of its own.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Info

from tapwatch.alerting.alerter import Alerter, AlertPolicy
from tapwatch.alerting.allowlist import AllowList
from tapwatch.alerting.budget import BudgetConfig, ExplainQueue
from tapwatch.alerting.episode_alerter import EpisodeAlerter, EpisodePolicy, ProfileSwap
from tapwatch.alerting.episodes import EpisodeConfig, EpisodeTracker
from tapwatch.alerting.errors import ExplainerUnavailable
from tapwatch.alerting.evidence import ProfileGate
from tapwatch.alerting.explain import ExplainConfig, LimeExplainer, ScoreFn, load_onnx_explainer
from tapwatch.alerting.metrics import AlerterMetrics
from tapwatch.alerting.narrate import Explain
from tapwatch.alerting.netsinks import FACILITIES, SyslogSink, Transport, WebhookSink, parse_hostport
from tapwatch.alerting.reload import CardReloader
from tapwatch.alerting.settings import AlerterSettings, AlertMode
from tapwatch.alerting.sinks import FileSink, RedisStreamSink, Sink, SinkSet, StdoutSink
from tapwatch.alerting.suppress import Suppressor, load_threshold_config
from tapwatch.alerting.volume import VolumeRules
from tapwatch.bus.state import MemoryStateStore, RedisStateStore, StateStore
from tapwatch.bus.streams import Bus, RedisBus
from tapwatch.features.baseline import SiteBaseline, load_baseline, shipped_baseline
from tapwatch.features.card import ModelCard, card_path_for, load_card
from tapwatch.features.errors import ConfigError, ModelCardError
from tapwatch.features.profile import SiteProfile, load_profile, profile_to_use
from tapwatch.inference.profiled import ProfileReloader

log = logging.getLogger(__name__)


def build_sinks(settings: AlerterSettings, bus: Bus, metrics: AlerterMetrics | None) -> SinkSet:
    """Every sink the settings switch on (the Redis stream one by default when Redis is the bus)."""
    s = settings
    sinks: list[Sink] = []
    if s.stdout:
        sinks.append(StdoutSink())
    if s.alert_file:
        sinks.append(FileSink(s.alert_file, s.alert_file_max_bytes, s.alert_file_keep))
    if s.redis_sink_on:
        sinks.append(RedisStreamSink(bus, s.alerts_stream, s.alerts_stream_maxlen))
    for addr, transport in ((s.syslog_udp, Transport.UDP), (s.syslog_tcp, Transport.TCP)):
        if addr:
            host, port = parse_hostport(addr, f"syslog_{transport.value}")
            sinks.append(SyslogSink(host, port, transport, FACILITIES[s.syslog_facility]))
    if s.webhook_url:
        try:
            sinks.append(
                WebhookSink(s.webhook_url, s.webhook_queue, s.webhook_retries, s.webhook_backoff_s, s.webhook_timeout_s)
            )
        except ValueError as err:
            raise ConfigError("webhook_url", str(err)) from err
    if not sinks:
        log.warning("no alert sink is switched on: alerts are counted and dropped")
    return SinkSet(sinks, metrics)


def card_path(settings: AlerterSettings) -> Path | None:
    """``--card``, else the card beside ``--onnx`` as the worker finds it (:func:`card_path_for`)."""
    if settings.card:
        return Path(settings.card)
    return card_path_for(settings.onnx) if settings.onnx else None


def load_alert_card(settings: AlerterSettings) -> ModelCard | None:
    path = card_path(settings)
    if path is None:
        return None
    try:
        return load_card(path)
    except ModelCardError as err:  # its message names the file; the subject names the setting
        raise ConfigError("card" if settings.card else "onnx", str(err)) from err


def lime_explainer(
    settings: AlerterSettings, card: ModelCard | None, score_fn: ScoreFn | None, without: str
) -> LimeExplainer | None:
    """LIME over the card's model, or None when explanations are off or (with ``explain`` unset) impossible, logged
    with ``without`` (what goes out unexplained). ``score_fn`` lets the embedded mode reuse the worker's session
    instead of loading the ONNX file twice."""
    s = settings
    if s.explain is False:
        return None
    cfg = ExplainConfig(samples=s.explain_samples, top_k=s.explain_top_k, seed=s.explain_seed)
    try:
        if card is None:
            raise ExplainerUnavailable("no model card given (--card)")
        if score_fn is not None:
            return LimeExplainer(score_fn, card, cfg)
        return load_onnx_explainer(card, card_path(s) or Path("."), s.onnx, cfg, s.explain_threads)
    except ExplainerUnavailable as err:
        if s.explain:
            raise ConfigError("explain", f"explanations were required but are not possible: {err}") from err
        log.warning("%s: %s", without, err)
        return None


def build_explainer(
    settings: AlerterSettings, card: ModelCard | None, metrics: AlerterMetrics | None, score_fn: ScoreFn | None = None
) -> ExplainQueue | None:
    """The per-window alerts' explanation queue (a budget), or None (see :func:`lime_explainer`)."""
    explainer = lime_explainer(settings, card, score_fn, "alerts go out without explanations")
    if explainer is None:
        return None
    s = settings
    budget = BudgetConfig(s.explain_per_second, s.explain_queue, s.explain_deadline_ms, s.explain_cpu_share)
    return ExplainQueue(explainer, budget, metrics)


def build_suppressor(settings: AlerterSettings, metrics: AlerterMetrics) -> Suppressor | None:
    """``threshold.config`` suppression from ``--threshold-file``, or None."""
    if not settings.threshold_file:
        return None
    config = load_threshold_config(Path(settings.threshold_file))
    return Suppressor(config, settings.threshold_max_entries, metrics.threshold_evictions.inc)


def build_alerter(
    settings: AlerterSettings,
    bus: Bus,
    metrics: AlerterMetrics,
    card: ModelCard | None = None,
    score_fn: ScoreFn | None = None,
) -> Alerter:
    """A ready alerter on ``bus``; ``card`` defaults to the settings' card file."""
    card = card if card is not None else load_alert_card(settings)
    suppressor = build_suppressor(settings, metrics)
    sinks = build_sinks(settings, bus, metrics)
    try:
        explainer = build_explainer(settings, card, metrics, score_fn)
    except BaseException:
        sinks.close()
        raise
    reloader = build_reloader(settings, card, explainer is not None) if score_fn is None else None
    return Alerter(bus, card, settings, sinks, metrics, AlertPolicy(suppressor, explainer), reloader)


def episode_explainer(
    settings: AlerterSettings, card: ModelCard | None, score_fn: ScoreFn | None = None
) -> Explain | None:
    """LIME run synchronously, once per episode (no queue or budget can skip it), or None when off or impossible."""
    explainer = lime_explainer(settings, card, score_fn, "window-view episodes are explained by their scores only")
    return explainer.explain if explainer is not None else None


def load_volume_rules(settings: AlerterSettings) -> VolumeRules:
    """The volume view's rules with ``--site-baseline`` or the shipped baseline (else the floors, said once)."""
    path = settings.baseline or shipped_baseline()
    if path is None:
        log.warning("no volume baseline installed: the volume view uses its floor thresholds")
        return VolumeRules(SiteBaseline())
    return VolumeRules(load_baseline(path))


def load_site_profile(
    settings: AlerterSettings, card: ModelCard | None, onnx: Path | None
) -> tuple[SiteProfile, Path] | None:
    """``--profile``, else the model's default profile beside its ONNX file when there is one, and its path;
    checked against the model (another model's profile, an unknown version or a corrupt file: a one-line
    ConfigError)."""
    path = profile_to_use(settings.profile, onnx)
    if path is None:
        return None
    model = (card.name, card.version, card.onnx.sha256 if card.onnx else None) if card is not None else None
    profile = load_profile(path, model)
    log.info("site profile %s (learned on %d flows for %s %s)", path, profile.card.flows, profile.card.model.name,
             profile.card.model.version)  # fmt: skip
    return profile, path


def episode_config(settings: AlerterSettings, baseline: SiteBaseline, model: str | None) -> EpisodeConfig:
    """The tracker's settings, with the baseline's window-view bars for ``model`` (the card's name)."""
    s = settings
    bars = tuple(sorted(baseline.window_open.get(model, {}).items())) if model else ()
    return EpisodeConfig(quiet_s=s.episode_quiet_s, open_windows=s.episode_open_windows,
                         open_within_s=s.episode_open_within_s, open_min_score=s.episode_open_min_score,
                         open_concurrent=s.episode_open_concurrent, update_every_s=s.episode_update_s,
                         open_by_family=bars)  # fmt: skip


def build_episode_alerter(
    settings: AlerterSettings,
    bus: Bus,
    metrics: AlerterMetrics,
    card: ModelCard | None = None,
    score_fn: ScoreFn | None = None,
    store: StateStore | None = None,
    wall: Callable[[], float] = time.monotonic,
    onnx: Path | None = None,
    reload_profile: bool = False,
) -> EpisodeAlerter:
    """A ready episode alerter on ``bus``; the store defaults to memory (the service passes Redis).

    ``wall`` advances the episodes' evidence clock while no evidence comes (a quiet live link still closes its
    episodes); a clock that stands still (:func:`standing_clock`) keeps it on packet time alone, which ``detect``
    wants: a pcap's episodes must not depend on how fast the machine read it.
    """
    card = card if card is not None else load_alert_card(settings)
    onnx = onnx or (Path(settings.onnx) if settings.onnx else None)
    if onnx is None and card is not None and card.onnx is not None and (where := card_path(settings)) is not None:
        onnx = where.parent / card.onnx.file
    found = load_site_profile(settings, card, onnx)
    profile, where = found if found is not None else (None, None)
    # the profile's baseline, unless --baseline names one
    use_profile = profile is not None and not settings.baseline
    rules = VolumeRules(profile.baseline) if profile is not None and use_profile else load_volume_rules(settings)
    suppressor = build_suppressor(settings, metrics)
    allow = AllowList.load(settings.allow_list) if settings.allow_list else None
    medians = rules.baseline.feature_medians or (
        {f.feature: f.quantiles["p50"] for f in card.feature_stats if "p50" in f.quantiles} if card else {}
    )
    explain = episode_explainer(settings, card, score_fn)
    sinks = build_sinks(settings, bus, metrics)
    tracker_config = episode_config(settings, rules.baseline, card.name if card else None)
    tracker = EpisodeTracker(store or MemoryStateStore(), tracker_config, wall=wall)
    policy = EpisodePolicy(rules, explain, suppressor, allow, medians, ProfileGate.of(profile) if profile else None)
    alerter = EpisodeAlerter(bus, settings, sinks, metrics, tracker, card, policy)
    if reload_profile and where is not None and card is not None and settings.reload_poll_s > 0:
        model = (card.name, card.version, card.onnx.sha256 if card.onnx else None)
        alerter.profile_swap = ProfileSwap(ProfileReloader(where, settings.reload_poll_s), model, use_profile)
    return alerter


def standing_clock() -> float:
    """A wall clock that never moves (``detect``'s episodes run on packet time alone)."""
    return 0.0


def build_reloader(settings: AlerterSettings, card: ModelCard | None, explaining: bool) -> CardReloader | None:
    """Hot reload of the card (and of the explainer's model when ``explaining``), when its files are known."""
    path = card_path(settings)
    if settings.reload_poll_s <= 0 or card is None or path is None:
        return None
    onnx = Path(settings.onnx) if settings.onnx else (path.parent / card.onnx.file if card.onnx else None)
    if onnx is None or not onnx.exists():
        log.info("no ONNX file beside card %s: the card is not reloaded when it changes", path)
        return None
    s = settings
    explain = (
        ExplainConfig(samples=s.explain_samples, top_k=s.explain_top_k, seed=s.explain_seed) if explaining else None
    )
    return CardReloader(onnx, path, explain if explaining else None, s.explain_threads, s.reload_poll_s)


def run_alerter(settings: AlerterSettings, registry: CollectorRegistry, stop: threading.Event) -> int:
    """Serve metrics and health and run the alerter on Redis until ``stop`` is set; return the exit code."""
    if not settings.redis_url:
        raise ConfigError(
            "redis_url", "the alerter reads verdicts from Redis: give its URL (without Redis: detect or run)"
        )
    from tapwatch.features.health import HealthServer

    Info("tapwatch_build", "tapwatch build.", registry=registry).info({"version": _version()})
    metrics = AlerterMetrics(registry)
    bus = RedisBus(settings.redis_url)
    alerter: Alerter | EpisodeAlerter
    if settings.alert_mode is AlertMode.EPISODES:
        alerter = build_episode_alerter(settings, bus, metrics, store=RedisStateStore(bus.client), reload_profile=True)
    else:
        alerter = build_alerter(settings, bus, metrics)
    http = HealthServer(registry, alerter.ready, settings.metrics_host, settings.metrics_port).start()
    log.info(
        "alerter %s reading %s in group %s", settings.alerter_consumer, settings.verdicts_stream, settings.alerter_group
    )
    try:
        alerter.run(stop)
    finally:
        alerter.close()
        http.stop()
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tapwatch")
    except PackageNotFoundError:
        return "unknown"

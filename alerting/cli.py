"""``tapwatch alerter``: parse options, build :class:`AlerterSettings`, run. Registered lazily by the root CLI."""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Any

import click
from prometheus_client import REGISTRY
from pydantic import ValidationError

from tapwatch.features.cli import name_the_option, option_names, run_guarded, settings_error
from tapwatch.features.errors import BadInputError

log = logging.getLogger(__name__)

# option name -> settings field
_OPTIONS = {
    "redis_url": "redis_url", "card": "card", "onnx": "onnx", "threshold_file": "threshold_file",
    "stdout": "stdout", "alert_file": "alert_file", "file_max_bytes": "alert_file_max_bytes",
    "file_keep": "alert_file_keep", "redis_sink": "redis_sink", "syslog_udp": "syslog_udp",
    "syslog_tcp": "syslog_tcp", "webhook": "webhook_url", "explain": "explain", "explain_samples": "explain_samples",
    "explain_per_second": "explain_per_second", "explain_cpu_share": "explain_cpu_share",
    "consumer": "alerter_consumer", "metrics_port": "metrics_port", "metrics_host": "metrics_host",
    "reload_poll": "reload_poll_s", "alert_mode": "alert_mode", "allow_list": "allow_list", "baseline": "baseline",
    "quiet": "episode_quiet_s", "profile": "profile",
}  # fmt: skip


def install_signals(stop: threading.Event) -> None:
    """First SIGTERM/SIGINT: finish and ack the batch in hand, close the sinks, exit 0. Second: exit at once."""

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            log.warning("second signal %s: exiting now", signum)
            raise SystemExit(1)
        log.warning("signal %s: finishing the batch in hand (send it again to exit at once)", signum)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@click.command("alerter")
@click.option(
    "--redis", "redis_url", envvar="TAPWATCH_REDIS_URL", help="Redis URL, e.g. redis://:PASSWORD@host:6379/0."
)
@click.option("--card", help="Model card JSON (explanations, benign class, T).")
@click.option("--onnx", help="ONNX file [default: the card's onnx.file beside the card].")
@click.option("--threshold-file", help="Suppression/threshold rules in threshold.config vocabulary.")
@click.option(
    "--alert-mode",
    type=click.Choice(["episodes", "flows"]),
    help="episodes: a line per episode open/update/close [default]; flows: one per window.",
)
@click.option("--allow-list", help="Hosts, networks and ports whose episodes are never written.")
@click.option("--baseline", help="Site baseline: volume thresholds, benign medians, window bars [shipped].")
@click.option("--profile", help="Site profile from tapwatch learn [NAME.profile.json beside the model].")
@click.option(
    "--quiet", type=click.FloatRange(0.001, 86_400), help="Seconds without evidence that close an episode [120]."
)
@click.option("--stdout/--no-stdout", default=None, help="Write EVE lines to standard output.")
@click.option("-o", "--file", "alert_file", help="JSON-lines alert file (rotated by size).")
@click.option("--file-max-bytes", type=click.IntRange(1024), help="Rotate the file at this size [100 MiB].")
@click.option("--file-keep", type=click.IntRange(0, 1000), help="Rotated files kept [5].")
@click.option("--redis-sink/--no-redis-sink", default=None, help="Alerts to stream tapwatch:alerts [on with --redis].")
@click.option("--syslog-udp", metavar="HOST:PORT", help="RFC 5424 syslog over UDP.")
@click.option("--syslog-tcp", metavar="HOST:PORT", help="RFC 5424 syslog over TCP (octet counting).")
@click.option("--webhook", metavar="URL", help="POST each alert as JSON (retries, bounded queue).")
@click.option("--explain/--no-explain", default=None, help="Require / switch off LIME [default: when the card allows].")
@click.option("--explain-samples", type=click.IntRange(10, 100_000), help="LIME samples per explanation [500].")
@click.option("--explain-per-second", type=click.FloatRange(0), help="Explanation budget per second [10].")
@click.option("--explain-cpu-share", type=click.FloatRange(0, 64),
              help="CPU seconds of explanation per second, a fraction of one core [0.25].")  # fmt: skip
@click.option("--reload-poll", type=click.FloatRange(0, 3600),
              help="Seconds between polls of the model files; a changed card is reloaded; 0: never [2].")  # fmt: skip
@click.option("--consumer", help="Consumer name in group alerters [host-pid].")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Port of /metrics, /livez, /readyz [9642].")
@click.option("--metrics-host", help="Address of /metrics [127.0.0.1].")
def alerter_command(**kw: Any) -> None:
    """Turn verdicts over threshold into Suricata EVE alerts with LIME explanations.

    Example: tapwatch alerter --redis redis://localhost:6379/0 --card models/hybrid-lab.card.json -o alerts.jsonl
    """

    def body() -> int:
        from tapwatch.alerting.settings import AlerterSettings

        names = option_names(alerter_command, _OPTIONS)
        overrides = {_OPTIONS[k]: v for k, v in kw.items() if v is not None}
        try:
            settings = AlerterSettings(**overrides)
        except ValidationError as err:
            raise settings_error(err, names) from err
        from tapwatch.alerting.service import run_alerter

        stop = threading.Event()
        install_signals(stop)
        try:
            return run_alerter(settings, REGISTRY, stop)
        except BadInputError as err:  # settings checked at start-up name the option, not the settings field
            raise name_the_option(err, names) from err

    run_guarded(body)

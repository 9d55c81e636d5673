"""``tapwatch detect`` and ``tapwatch run``: every stage in one process, over an in-memory bus, no Redis.

``detect PCAP...`` reads the files as one capture, scores every window and writes the alerts as EVE JSON
lines (to ``-o FILE``, which is overwritten, or to standard output), then prints a summary on standard
error. ``run --interface IF`` does the same on a live interface until SIGINT or SIGTERM (a second one exits
at once), serving ``/metrics``, ``/livez`` and ``/readyz``; it then flushes every open flow, scores it and
prints the summary. Both use the sensor's window builder, the inference :class:`Worker` and the
:class:`Alerter` as the services do (see :mod:`tapwatch.app.pipeline`).

The model: ``--model`` (its card beside it, or ``--card``), else the deployment model shipped under
``models/`` (:data:`SHIPPED_MODEL`). A missing or refused model exits 2 with one line saying what to do.
The model is fixed for the run: restart to change it (the services reload on SIGHUP).

Exit codes: 0 done; 2 bad input (model, pcap, interface, option), also after processing the readable part
of a truncated pcap; 1 internal error, or a stage that failed.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import replace
from importlib.util import find_spec
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click
from pydantic import ValidationError

from tapwatch.capture.options import capture_config, timeout_options
from tapwatch.features.cli import option_names, run_guarded, settings_error
from tapwatch.features.errors import BadInputError, ModelCardError
from tapwatch.features.output import replaced_when_done

if TYPE_CHECKING:  # imported when a command runs: `tapwatch --help` loads neither ONNX Runtime nor the stages
    from tapwatch.app.settings import EmbeddedConfig
    from tapwatch.inference.model import Model

log = logging.getLogger(__name__)

SHIPPED_MODEL = "hybrid-lab.onnx"
"""The deployment model's file name in the ``tapwatch.models`` package (card: ``hybrid-lab.card.json``): the Hybrid
trained on CIC-IDS2017 and on the flows tapwatch extracted from the lab's packets, its classes the families."""

# option name -> (settings object, field)
_OPTIONS = {
    "model": ("settings", "model"), "card": ("settings", "card"), "threads": ("settings", "threads"),
    "batch_size": ("settings", "batch_size"), "metrics_port": ("settings", "metrics_port"),
    "metrics_host": ("settings", "metrics_host"), "threshold_file": ("alerter", "threshold_file"),
    "explain": ("alerter", "explain"), "explain_per_second": ("alerter", "explain_per_second"),
    "verdicts": ("alerter", "verdicts_file"), "allow_list": ("alerter", "allow_list"),
    "baseline": ("alerter", "baseline"), "alert_mode": ("alerter", "alert_mode"), "profile": ("alerter", "profile"),
}  # fmt: skip


def shipped_model() -> Path:
    """Where the shipped deployment model is installed (the first ``tapwatch.models`` directory holding it)."""
    spec = find_spec("tapwatch.models")
    dirs = [Path(p) for p in (spec.submodule_search_locations or []) if Path(p).is_dir()] if spec else []
    found = [d / SHIPPED_MODEL for d in dirs if (d / SHIPPED_MODEL).exists()]
    return found[0] if found else (dirs[0] if dirs else Path("models")) / SHIPPED_MODEL


def load_embedded_model(model: Path | None, card: Path | None, threads: int) -> Model:
    """Load and check the model (``model`` or the shipped one); raise :class:`BadInputError` if impossible."""
    from tapwatch.features.window import check_servable
    from tapwatch.inference.model import ModelRejected, load_model

    path = model or shipped_model()
    if model is None and not path.exists():
        raise BadInputError(
            str(path),
            "the shipped model is not installed; pass --model FILE.onnx (and --card if its card is elsewhere)",
        )
    if not path.is_file():
        raise BadInputError(str(path), "no such model file")
    try:
        loaded = load_model(path, card, threads)
    except ModelRejected as err:
        raise BadInputError(str(err.onnx_path), f"model refused: {err.problem}") from err
    except ModelCardError as err:
        raise BadInputError(str(path), f"model refused: {err}") from err
    try:  # the sensor must compute every feature the model reads (a subset is selected by name)
        check_servable(loaded.card)
    except ModelCardError as err:
        raise BadInputError(str(path), f"the sensor cannot serve this model: {err}") from err
    return loaded


def build_config(options: dict[str, Any], output: str) -> EmbeddedConfig:
    """Settings of the three stages from the environment and the options that were given."""
    from tapwatch.alerting.settings import AlerterSettings
    from tapwatch.app.settings import EmbeddedConfig, EmbeddedSettings
    from tapwatch.capture.service import CaptureSettings

    given: dict[str, dict[str, Any]] = {"settings": {}, "alerter": {}, "capture": {}}
    for name, value in options.items():
        if value is not None and name in _OPTIONS:
            part, key = _OPTIONS[name]
            given[part][key] = value
    given["alerter"].update({"stdout": True} if output == "-" else {"alert_file": output, "stdout": False})
    try:
        return EmbeddedConfig(
            EmbeddedSettings(**given["settings"]),
            AlerterSettings(**given["alerter"]),
            CaptureSettings(**given["capture"]),
        )
    except ValidationError as err:  # name the option of detect/run (both have the same), not the settings field
        names = option_names(detect_command, {name: key for name, (_, key) in _OPTIONS.items()})
        raise settings_error(err, names) from err


def _common(fn: Any) -> Any:
    """Options shared by ``detect`` and ``run``."""
    opts = [
        click.option("-o", "--output", default="-", show_default=True,
                     help="EVE JSON lines alert file ('-' for standard output)."),
        click.option("--model", type=click.Path(dir_okay=False, path_type=Path),
                     help=f"ONNX model [default: the shipped models/{SHIPPED_MODEL}]."),
        click.option("--card", type=click.Path(dir_okay=False, path_type=Path),
                     help="Model card JSON [default: NAME.card.json or NAME.json beside the model]."),
        click.option("--threshold-file", help="Suppression/threshold rules in threshold.config vocabulary."),
        click.option("--allow-list", help="Hosts, networks and ports whose episodes are never written."),
        click.option("--baseline", help="Site baseline: volume thresholds, benign medians, window bars [shipped]."),
        click.option("--profile", help="Site profile from tapwatch learn [NAME.profile.json beside the model]."),
        click.option("--verdicts", help="Also write every window's verdict as a JSON line to this file."),
        click.option("--alert-mode", type=click.Choice(["episodes", "flows"]),
                     help="episodes: a line per episode open/update/close [default]; flows: one per window."),
        click.option("--explain/--no-explain", default=None,
                     help="Require / switch off LIME explanations [default: when the card allows]."),
        click.option("--explain-per-second", type=click.FloatRange(0), help="Explanations per second [10]."),
        click.option("--threads", type=click.IntRange(1, 64),
                     help="ONNX Runtime threads [detect: the usable cores, at most 4; run: 1]."),
        click.option("--batch-size", type=click.IntRange(1, 4096), help="Windows per model run [64]."),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return timeout_options(fn)


@click.command("detect")
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(path_type=str))
@_common
def detect_command(pcaps: tuple[str, ...], output: str, **kw: Any) -> None:
    """Find attacks in PCAP files: capture, features, model and alerts in one process, no Redis.

    Alerts go out as Suricata EVE JSON lines; a summary (packets, flows, windows, verdicts, alerts by class,
    dropped, time taken) goes to standard error.

    Example: tapwatch detect capture/samples/sample.pcap -o alerts.jsonl
    """

    def body() -> int:
        if output == "-":
            return _detect(pcaps, "-", kw)
        # A new result per run, written beside the old one and renamed onto it when done: input refused before
        # anything was read leaves an earlier result as it was, and a run that dies leaves no partial file.
        with replaced_when_done(output) as tmp:
            return _detect(pcaps, str(tmp), kw)

    run_guarded(body, fast_exit=True)


def _detect(pcaps: tuple[str, ...], output: str, kw: dict[str, Any]) -> int:
    from prometheus_client import CollectorRegistry

    from tapwatch.capture.meter import PcapSource
    from tapwatch.capture.metrics import CaptureMetrics

    registry = CollectorRegistry()  # a registry of its own: nothing serves it
    capture_metrics = CaptureMetrics(registry)
    # The meter starts first, before even the settings are read (their imports take a tenth of a second), and reads
    # the capture while the settings, the model and the stages load. It reads as the sensor does with its aggregates
    # on, the default: one-packet flows too. Should the settings turn the aggregates off (``--alert-mode flows``,
    # TAPWATCH_AGGREGATES=false), it starts again with the configuration the sensor asks for.
    user = capture_config(**kw)
    guessed = replace(user, emit_single_packet_flows=True)
    # the pipeline is the busy side: the meter computes the feature values once it has read the packets
    source = PcapSource(list(pcaps), replace(guessed, values_in_meter=True), capture_metrics)
    source.start()
    try:
        from tapwatch.app.pipeline import Embedded

        config = build_config(kw, output)
        if output != "-":  # one result file per run: no rotation of a temporary file the rename could not follow
            config = replace(config, alerter=config.alerter.model_copy(update={"alert_file_max_bytes": 2**62}))
        model = load_embedded_model(config.settings.model, config.settings.card, config.settings.threads_for(True))
        embedded = Embedded(model, config, registry, offline=True, capture_metrics=capture_metrics)
        reading = embedded.pipeline.source_config(user)
        if reading != guessed:  # read again as the sensor reads (before anything of the first reading was used)
            source.close()
            source = PcapSource(list(pcaps), replace(reading, values_in_meter=True), capture_metrics)
        summary = embedded.process(source)
    finally:  # a refused model or a failed stage leaves the meter reading with nobody to drain it
        source.close()
    for problem in source.problems:
        click.echo(f"tapwatch: error: {problem.line('its readable part was processed')}", err=True)
    for line in summary.lines("detect"):
        click.echo(line, err=True)
    return 2 if source.problems else 0


def install_signals(stop: Any) -> None:
    """First SIGINT/SIGTERM: stop capturing, flush and drain. Second: exit at once."""
    stopping = {"asked": False}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stopping["asked"]:
            log.warning("second %s: exiting now; open flows and queued windows are lost", name)
            os._exit(128 + signum)
        stopping["asked"] = True
        log.warning("%s: flushing open flows and scoring them (send it again to exit at once)", name)
        stop()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, handler)


@click.command("run")
@click.option("-i", "--interface", required=True, help="Capture live on this interface (needs CAP_NET_RAW).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), help="Port of /metrics /livez /readyz [9640].")
@click.option("--metrics-host", help="Address of /metrics /livez /readyz [127.0.0.1].")
@_common
def run_command(interface: str, output: str, **kw: Any) -> None:
    """Detect attacks live on an interface: every stage in one process, no Redis.

    Serves /metrics, /livez and /readyz; stops on SIGINT or SIGTERM after scoring every open flow.

    Example: sudo tapwatch run --interface IFACE -o /var/log/tapwatch/alerts.jsonl
    """

    def body() -> int:
        from prometheus_client import REGISTRY

        from tapwatch.app.pipeline import Embedded
        from tapwatch.capture.meter import LiveSource
        from tapwatch.features.health import HealthServer

        config = build_config(kw, output)
        model = load_embedded_model(config.settings.model, config.settings.card, config.settings.threads_for(False))
        embedded = Embedded(model, config, REGISTRY)
        # The publisher batches 64 windows per bus write, which saves Redis round trips; in one process a
        # write costs nothing, and a live window must not wait for 63 more flows before it is scored.
        publisher = embedded.pipeline.publisher
        publisher.config = replace(publisher.config, batch=1)
        source = LiveSource(interface, embedded.pipeline.source_config(capture_config(**kw)), embedded.pipeline.metrics)

        def ready() -> dict[str, bool]:
            return {**embedded.ready(), "capture_running": embedded.capturing.is_set() and source.running.is_set()}

        s = config.settings
        http = HealthServer(REGISTRY, ready, s.metrics_host, s.metrics_port).start()
        install_signals(source.stop)
        try:
            summary = embedded.process(source.records())
        finally:
            http.stop()
        for line in summary.lines("run"):
            click.echo(line, err=True)
        return 0

    run_guarded(body)

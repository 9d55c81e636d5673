"""The ``tapwatch`` command line. Commands only parse options, build settings and call ``run``.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, interface or option); 1 internal error.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from tapwatch.features.errors import BadInputError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("tapwatch")


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command body; map errors to exit codes and one-line messages."""
    try:
        code = fn() or 0
    except BadInputError as err:
        click.echo(f"tapwatch: error: {err}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as err:  # anything else is our bug: say so, keep the traceback in the log
        log.debug("internal error", exc_info=True)
        click.echo(f"tapwatch: internal error: {type(err).__name__}: {err} (run with -vv for a traceback)", err=True)
        sys.exit(1)
    sys.exit(code)


def timeout_options(fn: F) -> F:
    """Flow-cutting options shared by every command that reads packets."""
    opts = [
        click.option("--sensor", envvar="TAPWATCH_SENSOR", help="Sensor name written into every record."),
        click.option("--bpf", "bpf_filter", help="BPF filter, for example 'tcp or udp'."),
        click.option(
            "--flow-timeout", type=click.IntRange(1, 86_400), default=120, show_default=True,
            help="Seconds after a flow's first packet at which it is cut (CICFlowMeter: 120).",
        ),
        click.option(
            "--idle-timeout", type=click.IntRange(1, 86_400), default=None,
            help="Seconds without packets after which a flow is closed [default: the flow timeout].",
        ),
        click.option(
            "--activity-timeout", type=click.FloatRange(0.001, 3600), default=5.0, show_default=True,
            help="Seconds that split active and idle periods (CICFlowMeter: 5).",
        ),
        click.option(
            "--single-packet-flows/--no-single-packet-flows", default=False, show_default=True,
            help="Emit one-packet flows (CICFlowMeter and the training data have none).",
        ),
    ]  # fmt: skip
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def capture_config(**kw: Any) -> Any:
    from tapwatch.capture.meter import CaptureConfig

    cfg: dict[str, Any] = {
        "bpf_filter": kw.get("bpf_filter"),
        "flow_timeout_s": kw["flow_timeout"],
        "idle_timeout_s": kw.get("idle_timeout") or kw["flow_timeout"],
        "activity_timeout_s": kw["activity_timeout"],
        "emit_single_packet_flows": kw["single_packet_flows"],
    }
    if kw.get("sensor"):
        cfg["sensor"] = kw["sensor"]
    return CaptureConfig(**cfg)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="tapwatch")
def main(verbose: int) -> None:
    """tapwatch: real-time ML network intrusion detection on CIC-IDS2017 flow features."""
    _setup_logging(verbose)


@main.command()
@click.argument("pcaps", nargs=-1, required=True, type=click.Path(dir_okay=True, path_type=str))
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), default="-", show_default=True,
              help="CSV file to write ('-' for standard output).")  # fmt: skip
@timeout_options
def flows(pcaps: tuple[str, ...], output: str, **kw: Any) -> None:
    """Extract CIC-IDS2017 flow features from PCAP files (read as one capture) into a CSV.

    Example: tapwatch flows capture/samples/sample.pcap -o flows.csv
    """

    def body() -> int:
        from prometheus_client import CollectorRegistry

        from tapwatch.capture.flowcsv import write_csv
        from tapwatch.capture.meter import PcapSource
        from tapwatch.capture.metrics import CaptureMetrics

        metrics = CaptureMetrics(CollectorRegistry())
        source = PcapSource(list(pcaps), capture_config(**kw), metrics)
        if output == "-":
            n = write_csv(source, sys.stdout)
        else:
            with Path(output).open("w", newline="") as fh:
                n = write_csv(source, fh)
        log.info("wrote %s flows to %s", n, output)
        for problem in source.problems:
            click.echo(f"tapwatch: error: {problem.message()}; flows of the readable part were written", err=True)
        return 2 if source.problems else 0

    _guard(body)


def _register_optional() -> None:
    """Commands of later stages register themselves here when their modules exist."""
    from tapwatch.capture import service

    main.add_command(service.capture_command)


# registered below once service exists

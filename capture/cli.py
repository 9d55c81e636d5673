"""The ``tapwatch`` command line. Commands only parse options, build settings and call ``run``.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, interface or option); 1 internal error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from tapwatch.capture.cliutil import capture_config, run_guarded, setup_logging, timeout_options
from tapwatch.capture.service import capture_command

log = logging.getLogger("tapwatch")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.version_option(package_name="tapwatch")
def main(verbose: int) -> None:
    """tapwatch: real-time ML network intrusion detection on CIC-IDS2017 flow features."""
    setup_logging(verbose)


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

    run_guarded(body)


main.add_command(capture_command)

"""The ``tapwatch`` command line. Commands only parse options, build settings and call ``run``.

Exit codes: 0 ok; 2 bad input or usage (one line naming the file, interface or option); 1 internal error.
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import sys
from typing import Any

import click

from tapwatch.capture.options import capture_config, timeout_options
from tapwatch.features.cli import run_guarded, setup_logging
from tapwatch.features.output import replaced_when_done

log = logging.getLogger("tapwatch")


# Commands of later stages, imported only when used: `tapwatch flows` never imports ONNX Runtime, and
# nothing at run time imports TensorFlow. A module that is not there yet simply adds no command.
LAZY_COMMANDS = {
    # `detect` starts its meter as early as it can: the sensor service's imports (Redis, the publisher) wait
    "capture": "tapwatch.capture.service:capture_command",
    "train": "tapwatch.models.cli:train_command",
    "evaluate": "tapwatch.models.cli:evaluate_command",
    "export": "tapwatch.models.cli:export_command",
    "score": "tapwatch.models.scoring.score:score_command",
    "worker": "tapwatch.inference.cli:worker_command",
    "alerter": "tapwatch.alerting.cli:alerter_command",
    "detect": "tapwatch.app.embedded:detect_command",
    "run": "tapwatch.app.embedded:run_command",
    "learn": "tapwatch.app.learn:learn_command",
    # The console is a floor above app/: named here, never imported by app/ (it needs the web extra).
    "console": "tapwatch.console.cli:console_group",
}


class LazyGroup(click.Group):
    """A click group that imports the modules of :data:`LAZY_COMMANDS` on demand."""

    def _available(self) -> dict[str, str]:
        found = {}
        for name, target in LAZY_COMMANDS.items():
            module = target.split(":")[0]
            try:
                if importlib.util.find_spec(module) is not None:
                    found[name] = target
            except ModuleNotFoundError:
                continue
        return found

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._available()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            return command
        target = self._available().get(cmd_name)
        if target is None:
            return None
        module, attr = target.split(":")
        found = getattr(importlib.import_module(module), attr)
        return found if isinstance(found, click.Command) else None


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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
        source = PcapSource(list(pcaps), capture_config(**kw), metrics)  # refuses bad input before any output
        if output == "-":
            n = write_csv(source, sys.stdout)
        else:
            with replaced_when_done(output) as tmp, tmp.open("w", newline="") as fh:
                n = write_csv(source, fh)
        log.info("wrote %s flows to %s", n, output)
        for problem in source.problems:
            click.echo(f"tapwatch: error: {problem.line('flows of the readable part were written')}", err=True)
        return 2 if source.problems else 0

    run_guarded(body, fast_exit=True)

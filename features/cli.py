"""Plumbing shared by every ``tapwatch`` command: logging set-up and the error-to-exit-code guard."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import click

from tapwatch.features.errors import BadInputError

log = logging.getLogger("tapwatch")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_guarded(fn: Callable[[], int | None]) -> None:
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

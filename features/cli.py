"""Plumbing shared by every ``tapwatch`` command: logging set-up and the error-to-exit-code guard."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import sys
from collections.abc import Callable, Mapping

import click
from pydantic import ValidationError

from tapwatch.features.errors import BadInputError

log = logging.getLogger("tapwatch")


def setup_logging(verbose: int) -> None:
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


def run_guarded(fn: Callable[[], int | None], fast_exit: bool = False) -> None:
    """Run a command body; map errors to exit codes and one-line messages.

    ``fast_exit``: once the body is done (its files written and closed, its children ended), leave without
    tearing the interpreter down (ONNX Runtime sessions, NumPy and pandas, a tenth to a fifth of a second of a
    short ``detect``): standard streams and logging are flushed, then ``os._exit``. Only for commands whose
    body closes everything it opened (``flows``, ``detect``).
    """
    try:
        code = fn() or 0
    except BadInputError as err:
        click.echo(f"tapwatch: error: {err}", err=True)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except BrokenPipeError:  # the reader of standard output left (`| head`): say nothing more, as SIGPIPE would
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (Python's advice: so that the exit flush does not fail)
        code = 141
    except Exception as err:  # anything else is our bug: say so, keep the traceback in the log
        log.debug("internal error", exc_info=True)
        click.echo(f"tapwatch: internal error: {type(err).__name__}: {err} (run with -vv for a traceback)", err=True)
        code = 1
    # only as the process's own command: not with its streams replaced (click's CliRunner, a redirected stderr)
    if fast_exit and sys.stdout is sys.__stdout__ and sys.stderr is sys.__stderr__:
        # os._exit skips multiprocessing's exit handler, which ends this process's children: end them here (a
        # meter still reading when the command failed, e.g. detect started it before it found the model missing)
        for child in multiprocessing.active_children():
            child.terminate()
            child.join(5.0)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError, AttributeError):  # closed, a broken pipe, or none at all
                stream.flush()  # type: ignore[union-attr]
        logging.shutdown()
        os._exit(code)
    sys.exit(code)


def option_names(command: click.Command, fields: Mapping[str, str], env_prefix: str = "TAPWATCH_") -> dict[str, str]:
    """Settings field -> how a person sets it: the command's option and the environment variable, for messages.

    ``fields`` maps the command's parameter names onto settings fields (the command's own table).

    >>> @click.command()
    ... @click.option("--redis", "redis_url")
    ... def cmd(redis_url: str) -> None: ...
    >>> option_names(cmd, {"redis_url": "redis_url"})
    {'redis_url': '--redis (or TAPWATCH_REDIS_URL)'}
    """
    names = {}
    for param in command.params:
        if isinstance(param, click.Option) and param.name in fields:
            flag = max(param.opts, key=len)
            names[fields[param.name]] = f"{flag} (or {env_prefix}{fields[param.name].upper()})"
    return names


def settings_error(err: ValidationError, names: Mapping[str, str]) -> BadInputError:
    """The first problem pydantic found in a command's settings, as one line naming the option (``names``, from
    :func:`option_names`) rather than the settings field."""
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "settings"
    return name_the_option(BadInputError(field, str(first["msg"]).removeprefix("Value error, ")), names)


def name_the_option(err: BadInputError, names: Mapping[str, str]) -> BadInputError:
    """``err`` about a settings field, re-worded to name the option a person typed instead of the field."""
    if err.subject not in names:
        return err
    return type(err)(names[err.subject], err.problem)

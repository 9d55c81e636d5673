"""``tapwatch console``: users, serving, loading alert files (the CLI parses, builds settings and calls).

Registered in ``tapwatch.app.cli`` by name only (the CLI's lazy commands): app/ does not import the console.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import click

from tapwatch.features.cli import run_guarded
from tapwatch.features.errors import BadInputError

log = logging.getLogger("tapwatch.console")


def _settings(data_dir: Path | None, database_url: str | None, **more: Any) -> Any:
    from pydantic import ValidationError

    from tapwatch.console.settings import ConsoleSettings
    from tapwatch.features.errors import ConfigError

    given = {k: v for k, v in {"data": data_dir, "database_url": database_url, **more}.items() if v is not None}
    try:
        return ConsoleSettings(**given)
    except ValidationError as err:
        first = err.errors()[0]
        name = "TAPWATCH_CONSOLE_" + ".".join(str(p) for p in first["loc"]).upper()
        raise ConfigError(name, str(first["msg"])) from err


def _open(settings: Any) -> Any:
    import importlib.util

    if importlib.util.find_spec("flask") is None or importlib.util.find_spec("sqlalchemy") is None:
        raise BadInputError("console", "needs the web extra: pip install 'tapwatch[web]'")
    from tapwatch.console.settings import prepare_data
    from tapwatch.console.store import open_database

    prepare_data(settings)
    return open_database(settings.url)


data_option = click.option(
    "--data-dir", type=click.Path(path_type=Path), default=None,
    help="Data folder [env TAPWATCH_CONSOLE_DATA; default: the user's data directory].",
)  # fmt: skip
url_option = click.option(
    "--database-url", default=None,
    help="SQLAlchemy URL, sqlite:///... or postgresql://... [default: SQLite in the data folder].",
)  # fmt: skip


@click.group("console")
def console_group() -> None:
    """The web console: users, serving, loading alert files."""


@console_group.group("user")
def user_group() -> None:
    """Console accounts."""


def read_password(prompt_tty: bool) -> str:
    """Twice, hidden, from the terminal; or two lines of standard input when it is not a terminal."""
    if prompt_tty:
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    first, second = sys.stdin.readline().rstrip("\n"), sys.stdin.readline().rstrip("\n")
    if first != second:
        raise BadInputError("password", "the two lines of standard input differ")
    return first


@user_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(["admin", "analyst", "viewer"]), required=True, help="What the user may do.")
@data_option
@url_option
def user_add(name: str, role: str, data_dir: Path | None, database_url: str | None) -> None:
    """Create user NAME; the password is prompted twice (or read as two lines from standard input)."""

    def go() -> None:
        from tapwatch.console import accounts
        from tapwatch.console.store import Role

        factory = _open(_settings(data_dir, database_url))
        password = read_password(sys.stdin.isatty())
        with factory() as db:
            accounts.add_user(db, name, Role(role), password)
            accounts.audit(db, "cli", "local", "user_add", f"{name} ({role})")
            db.commit()
        click.echo(f"user {name} ({role}) added")

    run_guarded(go)


@user_group.command("list")
@data_option
@url_option
def user_list(data_dir: Path | None, database_url: str | None) -> None:
    """The console's users and their roles."""

    def go() -> None:
        from sqlalchemy import select

        from tapwatch.console.store import User

        with _open(_settings(data_dir, database_url))() as db:
            for u in db.scalars(select(User).order_by(User.name)):
                click.echo(f"{u.name}\t{u.role.value}\t{'disabled' if u.disabled else 'active'}")

    run_guarded(go)


@console_group.command("ingest")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_option
@url_option
def ingest_command(files: tuple[Path, ...], data_dir: Path | None, database_url: str | None) -> None:
    """Load EVE alert lines (alerts.jsonl of detect, run or the alerter) into the console's episodes."""

    def go() -> None:
        from tapwatch.console.ingest import LineError, ingest

        factory = _open(_settings(data_dir, database_url))
        stored = refused = twice = 0
        with factory() as db:
            for path in files:
                with path.open("rb") as fh:
                    for number, raw in enumerate(fh, 1):
                        if not raw.strip():
                            continue
                        try:
                            if ingest(db, raw) is None:
                                twice += 1
                            else:
                                stored += 1
                        except LineError as err:
                            refused += 1
                            log.warning("%s line %d refused: %s", path, number, err)
            db.commit()
        click.echo(f"{stored} alert lines stored, {refused} refused, {twice} stored already")

    run_guarded(go)


@console_group.command("export-labels")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The labelled flows (.csv, or .csv.gz).")  # fmt: skip
@click.option("--only", type=click.Choice(["all", "benign", "attacks"]), default="all", show_default=True,
              help="Which rows: benign ones suit `learn --flows`, all of them `train --lab-corpus`.")  # fmt: skip
@data_option
@url_option
def export_labels_command(output: Path, only: str, data_dir: Path | None, database_url: str | None) -> None:
    """Analysts' true/false-positive verdicts on uploaded captures as labelled flows (the lab corpus's columns)."""

    def go() -> None:
        from tapwatch.console.labels import export_file

        with _open(_settings(data_dir, database_url))() as db:
            counts = export_file(db, output, only)
        click.echo(f"{sum(counts.values())} flows written to {output}: " + ", ".join(
            f"{family} {n}" for family, n in sorted(counts.items())))  # fmt: skip

    run_guarded(go)


@console_group.command("purge")
@data_option
@url_option
def purge_command(data_dir: Path | None, database_url: str | None) -> None:
    """Delete jobs (with their files) and episodes older than the retention period (TAPWATCH_CONSOLE_RETENTION_DAYS)."""

    def go() -> None:
        from tapwatch.console.jobs import purge

        settings = _settings(data_dir, database_url)
        with _open(settings)() as db:
            n_jobs, n_episodes = purge(db, settings.retention_days)
        click.echo(f"purged {n_jobs} jobs and {n_episodes} episodes older than {settings.retention_days} days")

    run_guarded(go)


@console_group.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="TAPWATCH_CONSOLE_HOST",
              help="Address to listen on (env TAPWATCH_CONSOLE_HOST).")  # fmt: skip
@click.option("--port", default=8070, show_default=True, type=click.IntRange(0, 65535), envvar="TAPWATCH_CONSOLE_PORT",
              help="Port to listen on (env TAPWATCH_CONSOLE_PORT).")  # fmt: skip
@click.option("--secure-cookies", is_flag=True, default=None, help="Send the session cookie over HTTPS only.")
@click.option("--trusted-proxies", type=click.IntRange(0, 5), default=None,
              help="Reverse proxies in front whose X-Forwarded-* headers are believed.")  # fmt: skip
@click.option("--redis", "redis_url", default=None, help="Read the alerter's alert stream from this Redis URL.")
@click.option("--metrics-port", default=9643, show_default=True, type=click.IntRange(0, 65535),
              envvar="TAPWATCH_CONSOLE_METRICS_PORT",
              help="Port of /metrics, /livez, /readyz (env TAPWATCH_CONSOLE_METRICS_PORT).")  # fmt: skip
@click.option("--metrics-host", default="127.0.0.1", show_default=True, envvar="TAPWATCH_CONSOLE_METRICS_HOST",
              help="Address of /metrics, /livez, /readyz (env TAPWATCH_CONSOLE_METRICS_HOST).")  # fmt: skip
@data_option
@url_option
def serve_command(host: str, port: int, secure_cookies: bool | None, trusted_proxies: int | None,
                  redis_url: str | None, metrics_port: int, metrics_host: str, data_dir: Path | None,
                  database_url: str | None) -> None:  # fmt: skip
    """Serve the console (Waitress); refuses to start while the console has no user."""

    def go() -> None:
        import threading

        from prometheus_client import CollectorRegistry, ProcessCollector
        from waitress import serve

        from tapwatch.alerting.settings import default_consumer
        from tapwatch.console.jobs import JobRunner
        from tapwatch.console.settings import prepare_data, session_secret
        from tapwatch.console.store import user_count
        from tapwatch.console.stream import ConsoleMetrics, start_reader
        from tapwatch.console.web import create_app
        from tapwatch.features.health import HealthServer

        settings = _settings(data_dir, database_url, secure_cookies=secure_cookies, trusted_proxies=trusted_proxies,
                             redis_url=redis_url)  # fmt: skip
        factory = _open(settings)
        if user_count(factory) == 0:
            raise BadInputError("console", "no user yet: add one first with `tapwatch console user add NAME --role "
                                "admin` (same --data-dir)")  # fmt: skip
        data = prepare_data(settings)
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, as the others
        metrics = ConsoleMetrics(registry)
        stop = threading.Event()
        if settings.redis_url:
            from tapwatch.bus.streams import RedisBus

            start_reader(RedisBus(settings.redis_url), factory, metrics, default_consumer(), stop,
                         settings.max_entry_bytes, settings.claim_idle_ms)  # fmt: skip
        HealthServer(registry, lambda: {"database": True}, metrics_host, metrics_port).start()
        runner = JobRunner(settings, factory)
        runner.start()
        app = create_app(settings, factory, session_secret(settings, data), data, runner)
        log.info("console on http://%s:%d (data %s)", host, port, data)
        try:
            serve(app, host=host, port=port, threads=8, ident="tapwatch-console")
        finally:
            stop.set()
            runner.close()

    run_guarded(go)

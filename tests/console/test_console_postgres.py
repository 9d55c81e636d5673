"""The console on PostgreSQL: Debian's postgresql, a private cluster started by the test on a free port; the same
migrations, accounts, ingest and pages as on SQLite."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tapwatch.console import accounts
from tapwatch.console.ingest import ingest
from tapwatch.console.settings import ConsoleSettings, prepare_data, session_secret
from tapwatch.console.store import Role, open_database
from tapwatch.console.web import create_app
from tests.console.conftest import log_in
from tests.support.console import PASSWORD, eve_line
from tests.support.env import free_port, need


def _as_owner(cmd: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: as root, run it as the postgres user the package made."""
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


@pytest.fixture
def postgres_url() -> Iterator[str]:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    need(bool(found), "Debian's postgresql is not installed (apt-get install postgresql)")
    bin_dir = Path(found[-1]).parent
    # Its own folder outside pytest's (which only root may enter), owned by the user the server runs as
    base = Path(tempfile.mkdtemp(prefix="tapwatch-pg-"))
    data, port = base / "pg", free_port()
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres")
        shutil.chown(data, "postgres")
    run = lambda *c: subprocess.run(_as_owner([str(bin_dir / c[0]), *c[1:]]), check=True, capture_output=True,  # noqa: E731
                                    timeout=120)  # fmt: skip
    run("initdb", "-D", str(data), "-A", "trust", "-U", "tapwatch", "--no-sync")
    run("pg_ctl", "-D", str(data), "-w", "-l", str(data / "log"), "-o",
        f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start")  # fmt: skip
    try:
        run("createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "tapwatch", "console")
        yield f"postgresql://tapwatch@127.0.0.1:{port}/console"
    finally:
        run("pg_ctl", "-D", str(data), "-w", "-m", "fast", "stop")
        shutil.rmtree(base, ignore_errors=True)


def test_the_console_runs_on_postgresql(postgres_url: str, tmp_path: Path) -> None:
    settings = ConsoleSettings(data=tmp_path / "data", database_url=postgres_url)
    assert settings.url.startswith("postgresql+psycopg://")
    factory = open_database(settings.url)
    open_database(settings.url)  # a second start finds the schema at its head
    with factory() as db:
        accounts.add_user(db, "ann", Role.ANALYST, PASSWORD)
        ingest(db, eve_line())
        db.commit()
    data = prepare_data(settings)
    client = create_app(settings, factory, session_secret(settings, data), data).test_client()
    assert log_in(client, "ann").status_code == 302
    assert "TAPWATCH Password guessing" in client.get("/inbox?family=bruteforce").get_data(as_text=True)
    assert client.get("/api/episodes").json["total"] == 1

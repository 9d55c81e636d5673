"""A console on a fresh data folder, its Flask test client, users of each role and one alert episode."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flask", reason="the console needs the web extra: pip install '.[web]'")

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console import accounts
from tapwatch.console.ingest import ingest
from tapwatch.console.settings import ConsoleSettings, prepare_data, session_secret
from tapwatch.console.store import Role, open_database
from tapwatch.console.web import create_app
from tests.support.console import PASSWORD, eve_line


@pytest.fixture
def settings(tmp_path: Path) -> ConsoleSettings:
    return ConsoleSettings(data=tmp_path / "data")


@pytest.fixture
def factory(settings: ConsoleSettings) -> sessionmaker[Session]:
    prepare_data(settings)
    factory = open_database(settings.url)
    with factory() as db:
        for name, role in (("ada", Role.ADMIN), ("ann", Role.ANALYST), ("vic", Role.VIEWER)):
            accounts.add_user(db, name, role, PASSWORD)
        ingest(db, eve_line())
        db.commit()
    return factory


@pytest.fixture
def make_app(settings: ConsoleSettings, factory: sessionmaker[Session]) -> Callable[..., Flask]:
    def make(runner: Any = None, **change: Any) -> Flask:
        s = settings.model_copy(update=change)
        data = prepare_data(s)
        app = create_app(s, factory, session_secret(s, data), data, runner)
        app.config["TESTING"] = True
        return app

    return make


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    # Not a `with` block: a kept request context would share its `g` (and the CSRF token cached there) with
    # the requests of another client of the same app.
    return app.test_client()


def csrf_of(client: FlaskClient, path: str = "/login") -> str:
    page = client.get(path).get_data(as_text=True)
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, f"no csrf_token on {path}"
    return found.group(1)


def log_in(client: FlaskClient, name: str, password: str = PASSWORD, **environ: Any) -> Any:
    token = csrf_of(client)
    return client.post("/login", data={"username": name, "password": password, "csrf_token": token},
                       environ_base=environ)  # fmt: skip

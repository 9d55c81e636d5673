"""Every route against every role: anonymous visitors go to the login page (the API answers 401), each role gets
what its role allows and a 403 naming the role it lacks otherwise."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console.store import Job
from tests.console.conftest import csrf_of, log_in

ROLE_OF = {"vic": "viewer", "ann": "analyst", "ada": "admin"}
# (path, the lowest role that may GET it)
PAGES = [("/inbox", "viewer"), ("/escalated", "viewer"), ("/archived", "viewer"), ("/episodes/ep-1", "viewer"),
         ("/hosts", "viewer"), ("/hosts/10.0.0.9", "viewer"), ("/overview", "viewer"), ("/live", "viewer"),
         ("/upload", "viewer"), ("/jobs/1", "viewer"), ("/jobs/1/flows.csv", "viewer"), ("/account", "viewer"),
         ("/admin", "admin"), ("/api/me", "viewer"), ("/api/episodes", "viewer"), ("/api/episodes/ep-1", "viewer"),
         ("/api/jobs/1", "viewer")]  # fmt: skip
# (path, form, the lowest role that may POST it)
POSTS = [("/triage", {"action": "escalate", "id": "ep-1"}, "analyst"),
         ("/episodes/ep-1/verdict", {"verdict": "tp"}, "analyst"),
         ("/episodes/ep-1/comment", {"text": "seen"}, "analyst"),
         ("/upload", {}, "analyst"),
         ("/jobs/1/delete", {}, "analyst"),
         ("/admin/users", {"name": "x"}, "admin"),
         ("/admin/users/2", {"role": "viewer"}, "admin"),
         ("/account/tokens", {"name": "t"}, "viewer")]  # fmt: skip
LEVEL = {"viewer": 0, "analyst": 1, "admin": 2}


@pytest.fixture
def console(make_app: Callable[..., Flask], factory: sessionmaker[Session]) -> Flask:
    with factory() as db:  # a finished job for the job routes
        db.add(Job(name="j", owner="ann", kind="pcap", size=1, path="", records=1, status="done"))
        db.commit()
    app = make_app()
    app.config["TAPWATCH_SSE_SECONDS"] = 0.1
    return app


def test_anonymous_visitors_are_sent_to_login_and_the_api_answers_401(console: Flask) -> None:
    client = console.test_client()
    for path, _ in PAGES:
        r = client.get(path)
        if path.startswith("/api/"):
            assert r.status_code == 401, path
        else:
            assert r.status_code == 302 and r.location.startswith("/login?next="), path
    for path, form, _ in POSTS:  # no session, no CSRF token: refused before anything happens
        assert client.post(path, data=form).status_code in (302, 400, 401), path


@pytest.mark.parametrize("user", ["vic", "ann", "ada"])
def test_each_role_gets_what_it_may_and_a_403_for_the_rest(console: Flask, user: str) -> None:
    client = console.test_client()
    log_in(client, user)
    mine = LEVEL[ROLE_OF[user]]
    for path, needs in PAGES:
        r = client.get(path)
        expected = 200 if mine >= LEVEL[needs] else 403
        assert r.status_code == expected, (user, path, r.status_code)
    token = csrf_of(client, "/account")
    for path, form, needs in POSTS:
        r = client.post(path, data={**form, "csrf_token": token})
        if mine >= LEVEL[needs]:
            assert r.status_code != 403, (user, path)
        else:
            assert r.status_code == 403, (user, path, r.status_code)
            assert re.search(f"needs the {needs} role", r.get_data(as_text=True)), (user, path)

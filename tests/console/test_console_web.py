"""The console's routes, roles and defences with Flask's test client (browser tests: test_console_browser.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console import accounts
from tapwatch.console.store import AuditEvent, Episode, Triage, User
from tests.console.conftest import csrf_of, log_in
from tests.support.console import PASSWORD

PAGES = ["/inbox", "/escalated", "/archived", "/episodes/ep-1"]


def session_cookie(r: Any) -> str:
    return next(c for c in r.headers.getlist("Set-Cookie") if c.startswith("tapwatch_session="))


def audit(factory: sessionmaker[Session]) -> list[tuple[str, str, bool]]:
    with factory() as db:
        return [(a.user, a.action, a.ok) for a in db.scalars(select(AuditEvent).order_by(AuditEvent.id))]


def test_without_a_session_pages_go_to_login_and_the_api_answers_401(client: FlaskClient) -> None:
    for path in PAGES:
        r = client.get(path)
        assert r.status_code in (302, 303) and r.location.startswith("/login?next="), path
    assert client.get("/inbox?family=scan").location == "/login?next=/inbox?family%3Dscan"
    r = client.get("/api/episodes")
    assert r.status_code == 401 and r.json == {"error": "authentication required"}
    page = client.get("/login").get_data(as_text=True)
    for field in ('name="username"', 'name="password"', 'type="hidden" name="csrf_token"'):
        assert field in page


def test_every_response_carries_the_security_headers(client: FlaskClient) -> None:
    for r in (client.get("/login"), client.get("/inbox"), client.get("/nothing-here"), client.get("/api/me")):
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Referrer-Policy"] == "same-origin"


def test_login_sets_a_hardened_session_cookie_and_follows_only_local_next(make_app: Callable[..., Flask]) -> None:
    with make_app().test_client() as c:
        token = csrf_of(c, "/login?next=/archived")
        r = c.post("/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token, "next": "/archived"})
        assert r.status_code == 302 and r.location == "/archived"
        cookie = session_cookie(r)
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
        assert c.get("/inbox").status_code == 200
    with make_app().test_client() as c:
        token = csrf_of(c)
        r = c.post("/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token,
                                   "next": "//evil.example/phish"})  # fmt: skip
        assert r.location == "/inbox"  # no open redirect
    with make_app(secure_cookies=True).test_client() as c:
        assert "Secure" in session_cookie(log_in(c, "ann"))
    with make_app(trusted_proxies=1).test_client() as c:  # the proxy says the client came over HTTPS
        token = csrf_of(c)
        r = c.post("/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token},
                   headers={"X-Forwarded-Proto": "https"})  # fmt: skip
        assert "Secure" in session_cookie(r)


def test_a_post_without_a_valid_csrf_token_is_refused(client: FlaskClient, factory: sessionmaker[Session]) -> None:
    r = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert r.status_code == 400 and "The form was refused" in r.get_data(as_text=True)
    assert log_in(client, "ann").status_code == 302
    r = client.post("/triage", data={"action": "archive", "id": "ep-1", "csrf_token": "forged"})
    assert r.status_code == 400
    with factory() as db:
        assert db.get(Episode, "ep-1").triage is Triage.INBOX  # type: ignore[union-attr]


def test_a_late_response_to_a_request_sent_before_the_first_form_does_not_refuse_that_form(
    client: FlaskClient, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    """What a browser did on a loaded CI machine: the favicon request of the page right after login (a 404 page then,
    with no form) came back after the next page's form; its cookie, re-sent as every permanent session's is, set the
    session back to one without the CSRF secret, and the form was refused ("The CSRF session token is missing.")."""
    r = log_in(client, "ann")
    stale = session_cookie(r).split(";")[0].split("=", 1)[1]  # the cookie the slow request was sent with
    assert client.get("/nothing-here").status_code == 404
    token = csrf_of(client, "/inbox")
    client.set_cookie("tapwatch_session", stale)  # the late response's Set-Cookie wins
    assert client.get("/static/favicon.svg").status_code == 200
    r = client.post("/triage", data={"action": "archive", "id": "ep-1", "csrf_token": token})
    assert r.status_code == 302, r.get_data(as_text=True)
    with factory() as db:
        assert db.get(Episode, "ep-1").triage is Triage.ARCHIVED  # type: ignore[union-attr]


def test_a_missing_page_is_the_consoles_own_page_and_json_under_the_api(client: FlaskClient) -> None:
    r = client.get("/nothing-here")
    assert r.status_code == 404 and "There is no such page here." in r.get_data(as_text=True)
    assert 'rel="icon"' in r.get_data(as_text=True)  # no /favicon.ico request from a bare page
    log_in(client, "ann")
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and r.json == {"error": "not found"}


def test_failed_logins_are_limited_per_account_and_per_address(
    client: FlaskClient, app: Flask, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    for _ in range(2):  # CSRF refusals and successes do not count
        client.post("/login", data={"username": "ann", "password": "x" * 12})
    for _ in range(5):
        r = log_in(client, "ann", "wrong password!", REMOTE_ADDR="10.9.9.1")
        assert r.status_code == 401 and "Wrong user name or password." in r.get_data(as_text=True)
    # the account is locked for a minute, even with its password, even from another address
    r = log_in(client, "ann", PASSWORD, REMOTE_ADDR="10.9.9.2")
    assert r.status_code == 429 and "Too many failed logins" in r.get_data(as_text=True)
    other = app.test_client()
    r = log_in(other, "vic", PASSWORD, REMOTE_ADDR="10.9.9.2")
    assert r.status_code == 302, r.get_data(as_text=True)  # other accounts are not
    for _ in range(5):  # guessing many accounts from one address
        log_in(client, "nobody", "wrong password!", REMOTE_ADDR="10.9.9.3")
    assert log_in(client, "ada", PASSWORD, REMOTE_ADDR="10.9.9.3").status_code == 429
    log = audit(factory)
    assert ("ann", "login", False) in log and ("vic", "login", True) in log
    assert sum(1 for u, a, ok in log if a == "login" and not ok) >= 12


def test_a_viewer_reads_but_cannot_triage_and_an_analyst_can(
    make_app: Callable[..., Flask], factory: sessionmaker[Session]
) -> None:  # fmt: skip
    with make_app().test_client() as c:
        log_in(c, "vic")
        page = c.get("/inbox").get_data(as_text=True)
        assert "TAPWATCH Password guessing" in page and 'value="archive"' not in page
        r = c.post("/triage", data={"action": "archive", "id": "ep-1", "csrf_token": csrf_of(c, "/inbox")})
        assert r.status_code == 403 and "needs the analyst role" in r.get_data(as_text=True)
    with make_app().test_client() as c:
        log_in(c, "ann")
        token = csrf_of(c, "/inbox")
        r = c.post("/triage", data={"action": "archive", "id": "ep-1", "csrf_token": token, "back": "/inbox"})
        assert r.status_code == 302 and r.location == "/inbox"
        assert "No episodes here." in c.get("/inbox").get_data(as_text=True)
        assert "TAPWATCH Password guessing" in c.get("/archived").get_data(as_text=True)
        r = c.post("/episodes/ep-1/verdict", data={"verdict": "fp", "csrf_token": token})
        assert r.status_code == 302
        c.post("/episodes/ep-1/comment", data={"text": "lab test harness", "csrf_token": token})
        page = c.get("/episodes/ep-1").get_data(as_text=True)
        assert "lab test harness" in page and "verdict fp" in page
    assert [(a, ok) for u, a, ok in audit(factory) if u == "ann"][-3:] == [("archive", True), ("verdict", True),
                                                                           ("comment", True)]  # fmt: skip


def test_the_episode_page_explains_with_weights_values_and_benign_medians(client: FlaskClient) -> None:
    log_in(client, "vic")
    page = client.get("/episodes/ep-1").get_data(as_text=True)
    assert "Password guessing from 10.0.0.9: 40 logins" in page
    explanation = page.split('id="explanation"', 1)[1].split("</table>", 1)[0]
    assert explanation.count("<rect") == 2 and "Flow Duration" in explanation and "+0.0400" in explanation
    assert "2,500,000" in page  # the value; the median column is the shipped baseline's
    assert client.get("/episodes/no-such").status_code == 404


def test_filters_stay_in_the_url_and_select_episodes(client: FlaskClient) -> None:
    log_in(client, "vic")
    assert "TAPWATCH Password guessing" in client.get("/inbox?family=bruteforce&host=10.0.0.9").get_data(as_text=True)
    assert "No episodes here." in client.get("/inbox?family=scan").get_data(as_text=True)
    assert "No episodes here." in client.get("/inbox?since=2026-12-02").get_data(as_text=True)
    assert 'value="10.0.0.9"' in client.get("/inbox?host=10.0.0.9").get_data(as_text=True)


def test_the_api_takes_a_session_or_a_token_and_a_revoked_token_no_more(
    app: Flask, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    with factory() as db:
        ann = db.scalar(select(User).where(User.name == "ann"))
        assert ann is not None
        token = accounts.new_token(db, ann, "soar")
        db.commit()
    auth = {"Authorization": f"Bearer {token}"}
    with app.test_client() as c:
        r = c.get("/api/episodes", headers=auth)
        assert r.status_code == 200 and r.json["total"] == 1 and r.json["episodes"][0]["family"] == "bruteforce"
        assert c.get("/api/episodes/ep-1", headers=auth).json["lines"][0]["alert"]["signature_id"] == 9200003
        r = c.post("/api/triage", json={"ids": ["ep-1"], "action": "escalate"}, headers=auth)  # a token needs no CSRF
        assert r.status_code == 200 and r.json == {"changed": 1}
        assert c.post("/api/triage", json={"ids": ["ep-1"], "action": "delete"}, headers=auth).status_code == 400
        assert c.get("/api/episodes", headers={"Authorization": "Bearer tw_forged"}).status_code == 401
    with app.test_client() as c:  # the session cookie: POSTs need the CSRF token
        log_in(c, "ann")
        assert c.get("/api/me").json == {"name": "ann", "role": "analyst"}
        assert c.post("/api/triage", json={"ids": ["ep-1"], "action": "inbox"}).status_code == 400
        r = c.post("/api/triage", json={"ids": ["ep-1"], "action": "inbox"},
                   headers={"X-CSRFToken": csrf_of(c, "/inbox")})  # fmt: skip
        assert r.json == {"changed": 1}
    with factory() as db:
        assert accounts.revoke_token(db, 1, db.get(User, ann.id))  # type: ignore[arg-type]
        db.commit()
    with app.test_client() as c:
        assert c.get("/api/episodes", headers=auth).status_code == 401


def test_logout_ends_the_session(client: FlaskClient, factory: sessionmaker[Session]) -> None:
    log_in(client, "ann")
    r = client.post("/logout", data={"csrf_token": csrf_of(client, "/inbox")})
    assert r.status_code == 302 and r.location == "/login"
    assert client.get("/inbox").status_code == 302
    assert ("ann", "logout", True) in audit(factory)

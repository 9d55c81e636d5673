"""The admin page (users, tokens, the audit log, the model in use) and the account page (password, own tokens)."""

from __future__ import annotations

import re

from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from tapwatch.console.store import ApiToken, User
from tests.console.conftest import csrf_of, log_in
from tests.support.console import PASSWORD


def test_only_an_admin_reaches_the_admin_page_and_sees_users_the_audit_log_and_the_model(client: FlaskClient) -> None:
    log_in(client, "ann")
    assert client.get("/admin").status_code == 403
    client.post("/logout", data={"csrf_token": csrf_of(client, "/inbox")})
    log_in(client, "ada")
    page = client.get("/admin").get_data(as_text=True)
    assert all(name in page for name in ("ada", "ann", "vic"))
    assert "hybrid-lab" in page and "cic-ids2017+lab" in page  # the shipped model and what it was trained on
    assert re.search(r"<td>ada</td><td>[^<]*</td><td>login</td><td>yes</td>", page)  # the audit log
    assert re.search(r"<td>ann</td><td>[^<]*</td><td>logout</td><td>yes</td>", page)


def test_an_admin_adds_and_disables_users_but_never_the_last_admin(
    client: FlaskClient, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    log_in(client, "ada")
    token = csrf_of(client, "/admin")
    form = {"name": "bob", "role": "analyst", "password": PASSWORD, "password2": PASSWORD, "csrf_token": token}
    assert client.post("/admin/users", data=form).status_code == 302
    r = client.post("/admin/users", data={**form, "name": "eve", "password2": "something else!"})
    assert r.status_code == 400 and "the two passwords differ" in r.get_data(as_text=True)
    with factory() as db:
        ids = {u.name: u.id for u in db.scalars(select(User))}
    assert "eve" not in ids
    assert client.post(f"/admin/users/{ids['vic']}", data={"state": "disable", "csrf_token": token}).status_code == 302
    r = client.post(f"/admin/users/{ids['ada']}", data={"role": "viewer", "csrf_token": token})
    assert r.status_code == 400 and "ada: is the last admin" in r.get_data(as_text=True)
    vic = FlaskClient(client.application)
    r = log_in(vic, "vic")
    assert r.status_code == 401  # a disabled user cannot log in


def test_a_user_makes_a_token_sees_it_once_and_revokes_it_and_changes_their_password(
    client: FlaskClient, factory: sessionmaker[Session]
) -> None:  # fmt: skip
    log_in(client, "vic")
    token = csrf_of(client, "/account")
    page = client.post("/account/tokens", data={"name": "script", "csrf_token": token}).get_data(as_text=True)
    secret = re.search(r'id="new-token">(tw_[^<]+)<', page)
    assert secret is not None
    assert secret.group(1) not in client.get("/account").get_data(as_text=True)  # shown once
    api = FlaskClient(client.application)
    assert api.get("/api/me", headers={"Authorization": f"Bearer {secret.group(1)}"}).json["name"] == "vic"
    with factory() as db:
        stored = db.scalars(select(ApiToken)).one()
        assert secret.group(1) not in stored.digest and len(stored.digest) == 64
        token_id = stored.id
    assert client.post(f"/account/tokens/{token_id}/revoke", data={"csrf_token": token}).status_code == 302
    assert api.get("/api/me", headers={"Authorization": f"Bearer {secret.group(1)}"}).status_code == 401
    r = client.post("/account/password", data={"current": "wrong one", "password": "a new long password",
                                               "password2": "a new long password", "csrf_token": token})  # fmt: skip
    assert r.status_code == 400 and "the current password is wrong" in r.get_data(as_text=True)
    r = client.post("/account/password", data={"current": PASSWORD, "password": "a new long password",
                                               "password2": "a new long password", "csrf_token": token})  # fmt: skip
    assert r.status_code == 302
    fresh = FlaskClient(client.application)
    assert log_in(fresh, "vic").status_code == 401
    assert log_in(fresh, "vic", "a new long password").status_code == 302

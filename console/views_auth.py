"""Log in and out: the form, the rate limit on failures, the audit lines."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from flask import Blueprint, Flask, redirect, render_template, request, session, url_for
from flask_limiter import Limiter
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf.csrf import generate_csrf
from werkzeug.wrappers import Response

from tapwatch.console import accounts
from tapwatch.console.settings import ConsoleSettings
from tapwatch.console.web import address, db


def _safe_next(target: str | None) -> str:
    """Only a path on this site (never ``//host`` or ``https://host``): no open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return url_for("inbox.inbox")
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "") if not parts.netloc else url_for("inbox.inbox")


def _failed(response: Any) -> bool:
    """Only a wrong name or password counts against the limit (not a success, not a refused CSRF token)."""
    return bool(response.status_code == 401)


def login() -> Any:
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    return render_template("login.html", next=request.args.get("next", ""))


def login_post() -> Any:
    name = request.form.get("username", "").strip()
    password = request.form.get("password", "")
    user = accounts.authenticate(db(), name, password) if name and password else None
    if user is None:
        accounts.audit(db(), name or "-", address(), "login", "wrong user name or password", ok=False)
        db().commit()
        message = "Wrong user name or password."
        return render_template("login.html", error=message, next=request.form.get("next", ""), name=name), 401
    session.clear()  # a new session at login: no fixation of one made before
    login_user(user)
    session.permanent = True
    # The session's CSRF secret is made now, once per login: every response re-sends the (permanent) session cookie,
    # so a slow response to a request sent before a page made the secret (a favicon, a 404 page) would otherwise set
    # the cookie back to a session without it, and the next form would be refused as "CSRF session token missing".
    generate_csrf()
    accounts.audit(db(), user.name, address(), "login")
    db().commit()
    return redirect(_safe_next(request.form.get("next")))


def logout() -> Response:
    accounts.audit(db(), current_user.name, address(), "logout")
    db().commit()
    logout_user()
    session.clear()
    return redirect(url_for("auth.login"))


def register(app: Flask, settings: ConsoleSettings) -> None:
    """Add the blueprint, with ``POST /login`` limited per address and per account name."""
    bp = Blueprint("auth", __name__)
    limiter = Limiter(key_func=address, app=app, storage_uri="memory://", headers_enabled=False)
    per_minute = f"{settings.login_failures_per_minute}/minute"
    view = limiter.limit(per_minute, key_func=address, deduct_when=_failed)(login_post)
    view = limiter.limit(
        per_minute, key_func=lambda: "user:" + request.form.get("username", "").strip(), deduct_when=_failed
    )(view)
    bp.add_url_rule("/login", "login", login, methods=["GET"])
    bp.add_url_rule("/login", "login_post", view, methods=["POST"])
    bp.add_url_rule("/logout", "logout", login_required(logout), methods=["POST"])
    app.register_blueprint(bp)

    @app.errorhandler(429)
    def _limited(_err: Exception) -> Any:
        message = "Too many failed logins for this account or address. Wait a minute and try again."
        accounts.audit(db(), request.form.get("username", "-") or "-", address(), "login", "rate limited", ok=False)
        db().commit()
        return render_template("login.html", error=message, next=request.form.get("next", "")), 429

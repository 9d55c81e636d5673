"""The console's Flask application: sessions, CSRF, the login rate limit, security headers, and its pages.

:func:`create_app` builds it from :class:`~tapwatch.console.settings.ConsoleSettings` and a database session
factory; ``tapwatch console serve`` runs it under Waitress. Every page needs a session (or, for ``/api/``, a session
or an API token): without one a page redirects to ``/login?next=...`` and the API answers 401.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from flask import Flask, Request, Response, current_app, g, jsonify, redirect, render_template, request, url_for
from flask.sessions import SecureCookieSessionInterface
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from tapwatch.console import accounts
from tapwatch.console.explain import benign_medians
from tapwatch.console.settings import ConsoleSettings
from tapwatch.console.store import Role, User

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the cookie Secure also when a trusted proxy says the request was HTTPS."""

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"]) or request.is_secure


def db() -> Session:
    """The request's database session (closed at the end of the request)."""
    if "db" not in g:
        g.db = current_app.config["TAPWATCH_FACTORY"]()
    return g.db  # type: ignore[no-any-return]


def address() -> str:
    """The client's address (the proxy's client when a trusted proxy is configured)."""
    return request.remote_addr or "-"


def _unauthorized() -> Response:
    if request.path.startswith("/api/"):
        return Response('{"error": "authentication required"}', 401, {"Content-Type": "application/json"})
    return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))  # type: ignore[return-value]


def _token_user(req: Request) -> User | None:
    header = req.headers.get("Authorization", "")
    if not req.path.startswith("/api/") or not header.startswith("Bearer "):
        return None
    user = accounts.token_user(db(), header[7:].strip())
    if user is not None:
        g.by_token = True
        db().commit()  # the token's last use
    return user


def _when(ms: int | None) -> str:
    """Epoch ms as ``2026-12-07 06:28:07Z``."""
    if not ms:
        return ""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    x = float(x) + 0.0  # -0.0 (a LIME-perturbed zero) reads as 0
    return f"{x:,.0f}" if x.is_integer() else f"{x:,.3f}"


def create_app(settings: ConsoleSettings, factory: sessionmaker[Session], secret: str, data: Path | None = None,
               runner: Any = None) -> Flask:  # fmt: skip
    """The console application (see the module docstring)."""
    # root_path given: Flask cannot find the folder of a module of a namespace package (tapwatch) by itself
    app = Flask(__name__, root_path=str(Path(__file__).parent), static_folder="static", template_folder="templates")
    app.config.update(
        SECRET_KEY=secret, SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.secure_cookies, SESSION_COOKIE_NAME="tapwatch_session",
        PERMANENT_SESSION_LIFETIME=timedelta(minutes=settings.session_minutes),
        WTF_CSRF_TIME_LIMIT=settings.session_minutes * 60, MAX_CONTENT_LENGTH=settings.max_upload_bytes + 65_536,
        TAPWATCH_SETTINGS=settings, TAPWATCH_MEDIANS=benign_medians(), TAPWATCH_FACTORY=factory,
        TAPWATCH_DATA=data or settings.data, TAPWATCH_RUNNER=runner,
    )  # fmt: skip
    app.session_interface = _SessionInterface()
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_prefix=n)  # type: ignore[method-assign]
    csrf = CSRFProtect(app)
    login = LoginManager(app)
    login.session_protection = "strong"
    login.unauthorized_handler(_unauthorized)

    def _load(user_id: str) -> User | None:
        user = db().get(User, int(user_id))
        return None if user is None or user.disabled else user

    login.user_loader(_load)
    login.request_loader(_token_user)

    @app.teardown_appcontext
    def _close(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.errorhandler(CSRFError)
    def _csrf(err: CSRFError) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error=f"CSRF check failed: {err.description}"), 400
        message = f"The form was refused ({err.description}). Reload the page and try again."
        return render_template("error.html", title="Form expired", message=message), 400

    @app.errorhandler(404)
    def _not_found(_err: Exception) -> Any:
        if request.path.startswith("/api/"):
            return jsonify(error="not found"), 404
        return render_template("error.html", title="Not found", message="There is no such page here."), 404

    @app.errorhandler(413)
    def _too_large(_err: Exception) -> Any:
        message = f"The upload is larger than the limit of {settings.max_upload_mb} MB; nothing was stored."
        if request.path.startswith("/api/"):
            return jsonify(error=message), 413
        return render_template("error.html", title="Upload too large", message=message), 413

    app.jinja_env.filters.update(when=_when, num=_num)
    app.jinja_env.globals["roles"] = Role
    from tapwatch.console import (
        views_admin,
        views_api,
        views_auth,
        views_hosts,
        views_inbox,
        views_live,
        views_overview,
        views_upload,
    )  # fmt: skip

    views_auth.register(app, settings)
    views_inbox.register(app)
    views_api.register(app, csrf)
    views_upload.register(app)
    views_admin.register(app)
    views_hosts.register(app)
    views_overview.register(app)
    views_live.register(app)
    return app

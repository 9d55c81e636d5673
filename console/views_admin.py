"""The admin page (users, every API token, the audit log, the model and profile in use) and each user's account
page (their password and their own API tokens)."""

from __future__ import annotations

import json
from typing import Any

from flask import Blueprint, Flask, redirect, render_template, request, url_for
from flask_login import current_user
from sqlalchemy import select

from tapwatch.console import accounts
from tapwatch.console.guard import requires
from tapwatch.console.store import ApiToken, AuditEvent, Role, User
from tapwatch.console.web import address, db
from tapwatch.features.errors import BadInputError

AUDIT_PAGE = 200


def model_in_use() -> dict[str, Any]:
    """The shipped model's card and default profile, summarised (what ``detect`` and uploads use)."""
    from tapwatch.app.embedded import shipped_model

    out: dict[str, Any] = {}
    try:
        onnx = shipped_model()
        card = json.loads(onnx.with_name(onnx.stem + ".card.json").read_text())
        out["model"] = {"name": card.get("name"), "version": card.get("version"), "created": card.get("created"),
                        "dataset": (card.get("training_data") or {}).get("dataset"),
                        "classes": card.get("class_names"), "file": onnx.name}  # fmt: skip
        profile = onnx.with_name(onnx.stem + ".profile.json")
        if profile.exists():
            p = json.loads(profile.read_text()).get("card", {})
            out["profile"] = {"created": p.get("created"), "command": p.get("command"), "file": profile.name}
    except (OSError, ValueError) as err:
        out["error"] = str(err)
    return out


def _back(error: str = "", token: str = "", status: int = 200, page: str = "admin") -> Any:
    if page == "account":
        return account(error=error, token=token, status=status)
    return admin(error=error, status=status)


@requires(Role.ADMIN)
def admin(error: str = "", status: int = 200) -> Any:
    who, action = request.args.get("user", "").strip(), request.args.get("action", "").strip()
    q = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(AUDIT_PAGE)
    if who:
        q = q.where(AuditEvent.user == who)
    if action:
        q = q.where(AuditEvent.action == action)
    return render_template(
        "admin.html", users=db().scalars(select(User).order_by(User.name)).all(),
        tokens=db().scalars(select(ApiToken).order_by(ApiToken.id.desc())).all(), audit=db().scalars(q).all(),
        who=who, action=action, error=error, model=model_in_use(), all_roles=[r.value for r in Role],
    ), status  # fmt: skip


@requires(Role.ADMIN)
def add_user() -> Any:
    form = request.form
    try:
        if form.get("password", "") != form.get("password2", ""):
            raise BadInputError("password", "the two passwords differ")
        user = accounts.add_user(db(), form.get("name", "").strip(), Role(form.get("role", "viewer")),
                                 form.get("password", ""))  # fmt: skip
    except (BadInputError, ValueError) as err:
        db().rollback()
        return _back(error=str(err), status=400)
    accounts.audit(db(), current_user.name, address(), "user_add", f"{user.name} ({user.role.value})")
    db().commit()
    return redirect(url_for("admin.admin"))


@requires(Role.ADMIN)
def change_user(user_id: int) -> Any:
    user = db().get(User, user_id)
    if user is None:
        return _back(error="no such user", status=404)
    form = request.form
    try:
        role = Role(form["role"]) if form.get("role") else None
        disabled = {"disable": True, "enable": False}.get(form.get("state", ""))
        accounts.change_user(db(), user, role, disabled)
    except (BadInputError, ValueError) as err:
        db().rollback()
        return _back(error=str(err), status=400)
    accounts.audit(db(), current_user.name, address(), "user_change",
                   f"{user.name}: role {user.role.value}, {'disabled' if user.disabled else 'active'}")  # fmt: skip
    db().commit()
    return redirect(url_for("admin.admin"))


@requires(Role.VIEWER)
def account(error: str = "", token: str = "", status: int = 200) -> Any:
    mine = db().scalars(select(ApiToken).where(ApiToken.user_id == current_user.id).order_by(ApiToken.id.desc()))
    return render_template("account.html", tokens=mine.all(), error=error, token=token), status


@requires(Role.VIEWER)
def new_token() -> Any:
    me = db().get(User, current_user.id)
    assert me is not None
    token = accounts.new_token(db(), me, request.form.get("name", "").strip())
    accounts.audit(db(), me.name, address(), "token_new", request.form.get("name", "")[:64])
    db().commit()
    return account(token=token)  # shown once, on this answer only


@requires(Role.VIEWER)
def revoke(token_id: int) -> Any:
    me = db().get(User, current_user.id)
    assert me is not None
    if not accounts.revoke_token(db(), token_id, me):
        return _back(error="no such token of yours", status=404, page=request.form.get("page", "account"))
    accounts.audit(db(), me.name, address(), "token_revoke", str(token_id))
    db().commit()
    return redirect(url_for("admin.admin" if request.form.get("page") == "admin" else "admin.account"))


@requires(Role.VIEWER)
def password() -> Any:
    me = db().get(User, current_user.id)
    assert me is not None
    form = request.form
    try:
        if accounts.authenticate(db(), me.name, form.get("current", "")) is None:
            raise BadInputError("password", "the current password is wrong")
        if form.get("password", "") != form.get("password2", ""):
            raise BadInputError("password", "the two new passwords differ")
        accounts.set_password(db(), me, form.get("password", ""))
    except BadInputError as err:
        db().rollback()
        accounts.audit(db(), me.name, address(), "password", str(err), ok=False)
        db().commit()
        return account(error=str(err), status=400)
    accounts.audit(db(), me.name, address(), "password")
    db().commit()
    return redirect(url_for("admin.account"))


def register(app: Flask) -> None:
    bp = Blueprint("admin", __name__)
    bp.add_url_rule("/admin", "admin", admin)
    bp.add_url_rule("/admin/users", "add_user", add_user, methods=["POST"])
    bp.add_url_rule("/admin/users/<int:user_id>", "change_user", change_user, methods=["POST"])
    bp.add_url_rule("/account", "account", account)
    bp.add_url_rule("/account/tokens", "new_token", new_token, methods=["POST"])
    bp.add_url_rule("/account/tokens/<int:token_id>/revoke", "revoke", revoke, methods=["POST"])
    bp.add_url_rule("/account/password", "password", password, methods=["POST"])
    app.register_blueprint(bp)

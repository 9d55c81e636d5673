"""Role checks for views: a viewer reads, an analyst triages and uploads, an admin manages accounts."""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar, cast

from flask import jsonify, render_template, request
from flask_login import current_user, login_required

from tapwatch.console.store import Role

F = TypeVar("F", bound=Callable[..., Any])


def requires(role: Role) -> Callable[[F], F]:
    """Log in first; then a user below ``role`` gets 403 (a page, or JSON under ``/api/``)."""

    def wrap(view: F) -> F:
        @wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if not current_user.role.may(role):
                message = f"This needs the {role.value} role; you are {current_user.role.value}."
                if request.path.startswith("/api/"):
                    return jsonify(error=message), 403
                return render_template("error.html", title="Not allowed", message=message), 403
            return view(*args, **kwargs)

        return cast(F, login_required(inner))

    return wrap

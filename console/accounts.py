"""Users, passwords, API tokens and the audit log: the console's accounts, apart from any web request.

Passwords are hashed with Argon2id (argon2-cffi's defaults: salted, memory-hard); an API token is 256 random bits
shown once, of which only the SHA-256 is kept (a token is not a password: it has all the entropy a hash needs).
"""

from __future__ import annotations

import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from tapwatch.console.store import ApiToken, AuditEvent, Role, User, now_ms
from tapwatch.features.errors import BadInputError

MIN_PASSWORD = 12
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_PREFIX = "tw_"
_HASHER = PasswordHasher()
# A hash to verify against when the user does not exist: the answer takes as long as for a real user.
_DUMMY = _HASHER.hash(secrets.token_hex(16))


def check_password(password: str) -> None:
    """Refuse a password a person should not use (one clear line)."""
    if len(password) < MIN_PASSWORD:
        raise BadInputError("password", f"must be at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise BadInputError("password", "must be at most 1024 characters")


def add_user(db: Session, name: str, role: Role, password: str) -> User:
    """Create a user; a bad name, a weak password or a taken name is a :class:`BadInputError`."""
    if not NAME.match(name):
        raise BadInputError(name, "a user name is 1 to 64 letters, digits, '.', '_', '@' or '-'")
    check_password(password)
    if db.scalar(select(User).where(User.name == name)) is not None:
        raise BadInputError(name, "this user exists already")
    user = User(name=name, role=role, password_hash=_HASHER.hash(password))
    db.add(user)
    db.flush()
    return user


def set_password(db: Session, user: User, password: str) -> None:
    check_password(password)
    user.password_hash = _HASHER.hash(password)


def authenticate(db: Session, name: str, password: str) -> User | None:
    """The enabled user with this name and password, or None (the same time either way)."""
    user = db.scalar(select(User).where(User.name == name))
    try:
        _HASHER.verify(user.password_hash if user is not None else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    if user is None or user.disabled:
        return None
    if _HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = _HASHER.hash(password)
    return user


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(db: Session, user: User, name: str) -> str:
    """A new API token for ``user``; the returned text is the only copy."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    db.add(ApiToken(user_id=user.id, name=name[:64] or "token", digest=digest(token)))
    return token


def token_user(db: Session, token: str) -> User | None:
    """The enabled user of a valid, unrevoked token (its last use is noted), or None."""
    found = db.scalar(select(ApiToken).where(ApiToken.digest == digest(token), ApiToken.revoked_ms.is_(None)))
    if found is None or found.user.disabled:
        return None
    found.last_used_ms = now_ms()
    return found.user


def revoke_token(db: Session, token_id: int, user: User) -> bool:
    """Revoke a token of ``user`` (an admin may revoke anyone's); False when there is no such token."""
    found = db.get(ApiToken, token_id)
    if found is None or found.revoked_ms is not None or (found.user_id != user.id and user.role is not Role.ADMIN):
        return False
    found.revoked_ms = now_ms()
    return True


def audit(db: Session, user: str, address: str, action: str, detail: str = "", ok: bool = True) -> None:
    """One line of the audit log (committed with the caller's change)."""
    db.add(AuditEvent(user=user[:64], address=address[:64], action=action, ok=ok, detail=detail[:2000]))


def admins(db: Session) -> int:
    return len(db.scalars(select(User.id).where(User.role == Role.ADMIN, User.disabled.is_(False))).all())


def change_user(db: Session, user: User, role: Role | None = None, disabled: bool | None = None) -> None:
    """Change a user's role or disable them; the last enabled admin is kept (no lock-out)."""
    losing_admin = user.role is Role.ADMIN and not user.disabled and (
        (role is not None and role is not Role.ADMIN) or disabled is True)  # fmt: skip
    if losing_admin and admins(db) <= 1:
        raise BadInputError(user.name, "is the last admin: make another admin first")
    if role is not None:
        user.role = role
    if disabled is not None:
        user.disabled = disabled

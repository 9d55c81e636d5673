"""The console's tables (SQLAlchemy 2) and the one place that opens the database and migrates it (Alembic).

Episodes and their alert lines come from the alerter's EVE lines (:mod:`tapwatch.console.ingest`); users, API tokens,
the audit log, comments and upload jobs are the console's own. Times are UTC epoch milliseconds, like the records
of the pipeline.
"""

from __future__ import annotations

import enum
import time
from pathlib import Path

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    create_engine,
    event,
    select,
)  # fmt: skip
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
COVER_SLACK_MS = 60_000
"""How far outside an episode's time a flow of its host still belongs to it: episodes are dated by their evidence,
flows by their packets."""


def now_ms() -> int:
    return int(time.time() * 1000)


class Role(str, enum.Enum):
    """What a user may do: a viewer reads; an analyst also triages, comments and uploads; an admin also manages
    users and tokens and reads the audit log."""

    VIEWER = "viewer"
    ANALYST = "analyst"
    ADMIN = "admin"

    def may(self, needed: Role) -> bool:
        order = (Role.VIEWER, Role.ANALYST, Role.ADMIN)
        return order.index(self) >= order.index(needed)


class Triage(str, enum.Enum):
    """Where an episode sits in the analyst's queues (EveBox's inbox, escalated, archived)."""

    INBOX = "inbox"
    ESCALATED = "escalated"
    ARCHIVED = "archived"


class Verdict(str, enum.Enum):
    """The analyst's word on an episode."""

    TRUE_POSITIVE = "tp"
    FALSE_POSITIVE = "fp"
    UNSURE = "unsure"


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    role: Mapped[Role] = mapped_column(Enum(Role, native_enum=False, length=16))
    password_hash: Mapped[str] = mapped_column(String(255))
    created_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)

    # What Flask-Login asks of a user object
    is_authenticated = True
    is_anonymous = False

    @property
    def is_active(self) -> bool:
        return not self.disabled

    def get_id(self) -> str:
        return str(self.id)


class ApiToken(Base):
    """A user's API token: only its SHA-256 is stored (the token is 256 random bits, shown once)."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    created_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    last_used_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    user: Mapped[User] = relationship()


class AuditEvent(Base):
    """Who did what, from where: logins (failed ones too), uploads, triage, user and token changes."""

    __tablename__ = "audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms, index=True)
    user: Mapped[str] = mapped_column(String(64))
    address: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    ok: Mapped[bool] = mapped_column(Boolean, default=True)
    detail: Mapped[str] = mapped_column(Text, default="")


class Episode(Base):
    """An alert episode as its newest line describes it, plus the analyst's triage."""

    __tablename__ = "episodes"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sensor: Mapped[str] = mapped_column(String(128), index=True)
    family: Mapped[str] = mapped_column(String(32), index=True)
    signature: Mapped[str] = mapped_column(String(256))
    signature_id: Mapped[int] = mapped_column(Integer)
    severity: Mapped[int] = mapped_column(Integer)
    host: Mapped[str] = mapped_column(String(64), index=True)
    role: Mapped[str] = mapped_column(String(16))
    src_ip: Mapped[str] = mapped_column(String(64))
    dest_ip: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    first_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    last_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    flows: Mapped[int] = mapped_column(Integer, default=0)
    lines: Mapped[int] = mapped_column(Integer, default=0)
    max_score: Mapped[float] = mapped_column(Float, default=0.0)
    summary: Mapped[str] = mapped_column(Text, default="")
    detail: Mapped[dict] = mapped_column(JSON, default=dict)  # type: ignore[type-arg]
    """The newest line's ``episode`` and ``ml`` objects (targets, ports, explanation)."""
    triage: Mapped[Triage] = mapped_column(Enum(Triage, native_enum=False, length=16), default=Triage.INBOX, index=True)
    verdict: Mapped[Verdict | None] = mapped_column(Enum(Verdict, native_enum=False, length=16), nullable=True)
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), nullable=True, index=True)
    alert_lines: Mapped[list[AlertLine]] = relationship(
        back_populates="episode", cascade="all, delete-orphan", order_by="AlertLine.at_ms"
    )


class AlertLine(Base):
    """One EVE alert line of an episode, kept whole."""

    __tablename__ = "alert_lines"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    alert_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    """The line's ``ml.alert_id``: a line delivered twice (the stream is at least once) is stored once."""
    at_ms: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[str] = mapped_column(String(16))
    line: Mapped[dict] = mapped_column(JSON)  # type: ignore[type-arg]
    episode: Mapped[Episode] = relationship(back_populates="alert_lines")


class Comment(Base):
    __tablename__ = "comments"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    episode_id: Mapped[str] = mapped_column(ForeignKey("episodes.id", ondelete="CASCADE"), index=True)
    user: Mapped[str] = mapped_column(String(64))
    at_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms)
    text: Mapped[str] = mapped_column(Text)


class Job(Base):
    """An uploaded capture or flows CSV and what processing it found."""

    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128))
    owner: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    size: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(String(512))
    records: Mapped[int] = mapped_column(Integer, default=0)
    """Packets of a capture, rows of a CSV."""
    first_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    last_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    """A capture's first and last packet times: the progress bar's scale."""
    labelled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_ms: Mapped[int] = mapped_column(BigInteger, default=now_ms, index=True)
    finished_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    error: Mapped[str] = mapped_column(Text, default="")
    flows: Mapped[int] = mapped_column(Integer, default=0)
    alerts: Mapped[int] = mapped_column(Integer, default=0)

    @property
    def sensor(self) -> str:
        """The sensor name of the job's episodes in the inbox."""
        return f"upload-{self.id}"


class JobFlow(Base):
    """One flow of an upload with the model's verdict on its window (and the CSV's label, when it had one)."""

    __tablename__ = "job_flows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at_ms: Mapped[int] = mapped_column(BigInteger)
    src_ip: Mapped[str] = mapped_column(String(64))
    src_port: Mapped[int] = mapped_column(Integer)
    dest_ip: Mapped[str] = mapped_column(String(64))
    dest_port: Mapped[int] = mapped_column(Integer)
    proto: Mapped[int] = mapped_column(Integer)
    family: Mapped[str] = mapped_column(String(32), index=True)
    predicted: Mapped[str] = mapped_column(String(64))
    score: Mapped[float] = mapped_column(Float)
    label: Mapped[str | None] = mapped_column(String(64), nullable=True)


def _sqlite_pragmas(dbapi_connection: object, _record: object) -> None:
    cur = dbapi_connection.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA foreign_keys=ON")  # SQLite ignores ON DELETE CASCADE without it
    cur.execute("PRAGMA journal_mode=WAL")  # the job thread writes while pages read
    cur.close()


def open_database(url: str) -> sessionmaker[Session]:
    """Open the database at ``url``, create or migrate its tables to the newest revision, return a session factory."""
    engine = create_engine(url, future=True)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    migrate(engine)
    return sessionmaker(engine, expire_on_commit=False)


def migrate(engine: Engine) -> None:
    """Bring the schema to Alembic's head (a fresh database gets every revision)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def user_count(factory: sessionmaker[Session]) -> int:
    with factory() as db:
        return len(db.scalars(select(User.id).where(User.disabled.is_(False))).all())

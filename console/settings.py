"""Settings of ``tapwatch console``: environment ``TAPWATCH_CONSOLE_<FIELD>``; command-line options win.

Built once by the CLI and passed down; library code never reads the environment.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tapwatch.features.errors import ConfigError

MB = 1024 * 1024


def default_data_dir() -> Path:
    """The user's data directory (``$XDG_DATA_HOME/tapwatch-console``, else ``~/.local/share/tapwatch-console``)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tapwatch-console"


class ConsoleSettings(BaseSettings):
    """Every setting of the console; see ``docs/console.md`` and ``tapwatch console serve --help``."""

    model_config = SettingsConfigDict(env_prefix="TAPWATCH_CONSOLE_", extra="ignore")

    data: Path = Field(default_factory=default_data_dir, description="Data folder (mode 0700): database, secret, jobs.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; None: SQLite console.db in the data folder.")
    secret_key: str | None = Field(
        None, description="Session signing key; None: generated at first start into DATA/secret_key (mode 0600)."
    )
    secure_cookies: bool = Field(False, description="Session cookie only over HTTPS (always, not only behind a proxy).")
    trusted_proxies: int = Field(
        0, ge=0, le=5, description="Reverse proxies in front whose X-Forwarded-For/-Proto headers are believed."
    )
    session_minutes: int = Field(480, ge=5, le=7 * 24 * 60, description="A session expires after this long.")
    login_failures_per_minute: int = Field(
        5, ge=1, le=1000, description="Failed logins allowed per minute per account and per address."
    )
    max_upload_mb: int = Field(256, ge=1, le=64 * 1024, description="Largest upload (pcap, pcapng or flows CSV).")
    max_jobs: int = Field(1, ge=1, le=16, description="Uploads processed at once (each takes a core).")
    max_queued: int = Field(8, ge=0, le=1000, description="Uploads waiting beyond those; a full queue refuses one.")
    retention_days: int = Field(90, ge=1, le=3650, description="Jobs and episodes older than this are purged.")
    max_entry_bytes: int = Field(1 << 20, ge=16 << 10, le=512 << 20,
                                 description="Larger alert stream entries are dead-lettered unread.")  # fmt: skip
    redis_url: str | None = Field(None, description="Redis of the alerter: episodes are read from its alert stream.")
    claim_idle_ms: int = Field(60_000, ge=100, le=86_400_000,
                               description="Lines pending this long in a dead console are taken over.")  # fmt: skip

    @field_validator("database_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None and not v.split(":", 1)[0].startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return v

    @property
    def url(self) -> str:
        """The database URL in use; ``postgresql://`` means the psycopg 3 driver of the web extra."""
        url = self.database_url or f"sqlite:///{self.data / 'console.db'}"
        return "postgresql+psycopg://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * MB


def prepare_data(settings: ConsoleSettings) -> Path:
    """Create the data folder (0700) and its ``jobs`` folder; refuse a data folder others can read or write."""
    data = settings.data.expanduser().resolve()
    try:
        data.mkdir(mode=0o700, parents=True, exist_ok=True)
        (data / "jobs").mkdir(mode=0o700, exist_ok=True)
    except OSError as err:
        raise ConfigError(str(data), f"cannot create the data folder: {err.strerror}") from err
    if data.stat().st_mode & 0o077:
        raise ConfigError(str(data), "the data folder is open to other users (chmod 700 it)")
    return data


def session_secret(settings: ConsoleSettings, data: Path) -> str:
    """The session key: the setting's, else the one in ``DATA/secret_key``, generated (0600) at first start."""
    if settings.secret_key:
        if len(settings.secret_key) < 32:
            raise ConfigError("TAPWATCH_CONSOLE_SECRET_KEY", "must be at least 32 characters")
        return settings.secret_key
    path = data / "secret_key"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made at an earlier start (or by the other of two starting at once)
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(os.urandom(32).hex())
    return path.read_text().strip()

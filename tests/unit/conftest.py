"""The unit layer runs without a Redis server, without root and without ../shared, in under a minute.

A unit test that asks for what another layer provides fails, naming the folder it belongs in: the
``redis_server`` and ``shared`` fixtures are overridden here, and ``need_netns()`` (a function, not a fixture)
is refused while these tests run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NoReturn

import pytest

from tests.support import env


def _belongs_elsewhere(what: str, folder: str) -> NoReturn:
    pytest.fail(f"a unit test must not need {what}: move it to {folder} (tests/unit runs without Redis, root or "
                f"../shared)", pytrace=False)  # fmt: skip


@pytest.fixture
def redis_server() -> NoReturn:
    _belongs_elsewhere("a Redis server (the redis_server fixture)", "tests/redis/")


@pytest.fixture(scope="session")
def shared() -> NoReturn:
    _belongs_elsewhere("../shared (the shared fixture)", "tests/corpus/")


@pytest.fixture(scope="package", autouse=True)
def _refuse_netns() -> Iterator[None]:
    """Package scope: set before any module fixture of tests/unit runs, undone after its last test."""
    refusal = ("a unit test must not need network namespaces (need_netns): move it to tests/netns/ (tests/unit "
               "runs without Redis, root or ../shared)")  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(env, "NETNS_REFUSED", refusal)
        yield

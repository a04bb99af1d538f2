"""Fixtures of the verifier's own tests: an issuer on loopback, whose keys and answers each test
sets (tests/helpers/issuer.py)."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers.issuer import Issuer

HERE = Path(__file__).parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The distribution's own tests need no app and no database: `unit`, and `verifier`."""
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker("unit")
            item.add_marker("verifier")


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.stop()

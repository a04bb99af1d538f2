"""Fixtures of the verifier's own tests: an issuer on loopback, whose keys and answers each test
sets (tests/helpers/issuer.py)."""

from collections.abc import Iterator

import pytest

from tests.helpers.issuer import Issuer


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    server = Issuer()
    yield server
    server.stop()

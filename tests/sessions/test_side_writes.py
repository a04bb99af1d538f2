"""Writes that outlive a refused request (`kit.db.SideWrites`): each in a transaction of its
own, kept when the request's own transaction rolls back, on SQLite and on PostgreSQL."""

import ast
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

import auth_service
from auth_service.kit import db as kit_db
from auth_service.kit.db import transaction
from auth_service.sessions import repository
from tests.helpers.app import app_state, register, request_token, sql

pytestmark = pytest.mark.anyio

TABLES = ("sessions", "users", "user_roles", "clients", "revoked_access_tokens", "signing_keys")


class Refused(Exception):
    """What a refused request raises: its transaction rolls back."""


async def two_sessions(client: httpx.AsyncClient, email: str) -> tuple[dict[str, Any], ...]:
    await register(client, email)
    answers = [await request_token(client, email) for _ in range(2)]
    assert [a.status_code for a in answers] == [200, 200]
    return tuple(a.json() for a in answers)


async def session_ids(client: httpx.AsyncClient) -> set[uuid.UUID]:
    return {uuid.UUID(str(row[0])) for row in await sql(client, "SELECT id FROM sessions")}


async def snapshot(client: httpx.AsyncClient) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of the tables a refresh could touch, in a stable order."""
    rows: dict[str, list[tuple[Any, ...]]] = {}
    for table in TABLES:
        found = await sql(client, f"SELECT * FROM {table}")  # noqa: S608
        rows[table] = sorted((tuple(row) for row in found), key=repr)
    return rows


@contextmanager
def transactions_ended(engine: AsyncEngine) -> Iterator[list[str]]:
    """How the engine's transactions end while the block runs: "commit" or "rollback"."""
    ended: list[str] = []

    def committed(_connection: Any) -> None:
        ended.append("commit")

    def rolled_back(_connection: Any) -> None:
        ended.append("rollback")

    event.listen(engine.sync_engine, "commit", committed)
    event.listen(engine.sync_engine, "rollback", rolled_back)
    try:
        yield ended
    finally:
        event.remove(engine.sync_engine, "commit", committed)
        event.remove(engine.sync_engine, "rollback", rolled_back)


# --- the collaborator -----------------------------------------------------------------------


async def test_a_side_write_commits_though_the_request_around_it_rolls_back(
    client: httpx.AsyncClient,
) -> None:
    await two_sessions(client, "sid@example.com")
    first, second = sorted(await session_ids(client))
    state = app_state(client)

    async def refused_request() -> None:
        async with transaction(state.sessionmaker) as db:
            # Before the request's own first write, as the contract asks.
            await state.side_writes.run(partial(repository.delete_one, session_id=first))
            await repository.delete_one(db, second)
            raise Refused

    with pytest.raises(Refused):
        await refused_request()

    assert await session_ids(client) == {second}  # the side write stayed, the request's went


async def test_a_side_write_queued_under_the_requests_lock_runs_once_it_has_rolled_back(
    client: httpx.AsyncClient,
) -> None:
    await two_sessions(client, "sue@example.com")
    first, second = sorted(await session_ids(client))
    state = app_state(client)

    async def refused_request() -> None:
        async with transaction(state.sessionmaker) as db:
            # The request writes (a row lock on PostgreSQL, the write lock on SQLite), then
            # queues a write of that very row: `run` here would wait on its own request.
            await repository.delete_one(db, first)
            await repository.delete_one(db, second)
            state.side_writes.after(db, partial(repository.delete_one, session_id=first))
            raise Refused

    with pytest.raises(Refused):
        await refused_request()

    assert await session_ids(client) == {second}


async def test_a_side_write_queued_on_a_request_that_succeeds_runs_after_its_commit(
    client: httpx.AsyncClient,
) -> None:
    await two_sessions(client, "sal@example.com")
    first, second = sorted(await session_ids(client))
    state = app_state(client)

    with transactions_ended(state.engine) as ended:
        async with transaction(state.sessionmaker) as db:
            await repository.delete_one(db, second)
            state.side_writes.after(db, partial(repository.delete_one, session_id=first))

    assert await session_ids(client) == set()
    assert ended == ["commit", "commit"]  # the request's, then the side write's


async def test_side_writes_queue_only_on_a_request_transaction(
    client: httpx.AsyncClient,
) -> None:
    state = app_state(client)
    async with state.sessionmaker() as db:
        with pytest.raises(RuntimeError, match="transaction"):
            state.side_writes.after(db, partial(repository.delete_one, session_id=uuid.uuid4()))


# --- through the refresh grant --------------------------------------------------------------


async def test_a_reused_refresh_token_ends_its_session_though_the_request_rolls_back(
    client: httpx.AsyncClient,
) -> None:
    stolen, other = await two_sessions(client, "sam@example.com")
    refreshed = await client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": stolen["refresh_token"]},
    )
    assert refreshed.status_code == 200, refreshed.text
    family = await session_ids(client)
    before = await snapshot(client)

    with transactions_ended(app_state(client).engine) as ended:
        replay = await client.post(
            "/oauth2/token",
            data={"grant_type": "refresh_token", "refresh_token": stolen["refresh_token"]},
        )

    assert replay.status_code == 400, replay.text
    assert replay.json()["error"] == "invalid_grant"
    # The refused request rolled back; the session's end was committed on its own after it.
    assert ended == ["rollback", "commit"]
    after = await snapshot(client)
    [ended_id] = family - await session_ids(client)
    ended_rows = [row for row in before["sessions"] if uuid.UUID(str(row[0])) == ended_id]
    assert len(ended_rows) == 1
    # Nothing else changed: the other sign-in's row, the user, the clients, the keys.
    assert after == {**before, "sessions": [r for r in before["sessions"] if r not in ended_rows]}
    still = await client.post(
        "/oauth2/token",
        data={"grant_type": "refresh_token", "refresh_token": other["refresh_token"]},
    )
    assert still.status_code == 200, still.text


def test_only_the_transaction_helper_commits_or_rolls_back() -> None:
    """Services never commit (a request's transaction commits once or rolls back, in
    `kit.db.transaction`); what must outlive a refusal goes through `SideWrites`."""
    package = Path(auth_service.__file__).parent
    ending = []
    for path in sorted(package.rglob("*.py")):
        if path == Path(kit_db.__file__):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"commit", "rollback"}
            ):
                ending.append(f"{path.relative_to(package)}:{node.lineno}")
    assert ending == []

"""Periodic work beside the requests: each capability names its jobs (`jobs(...)` in its
service), and the lifespan starts every one from a single list (`app.JOBS`).

A job's round is its own short transactions, never a request's; a failed round (the
database briefly away) is logged and the next round tries again. The first round runs one
interval after the start, not at once: a worker's start is busy enough, and what expired
waits a round harmlessly.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.lowlevel
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel.ext.asyncio.session import AsyncSession

logger = logging.getLogger(__name__)

PURGE_BATCH = 500


@dataclass(frozen=True, slots=True)
class Job:
    """`run` every `interval_seconds`; it answers how many rows it changed."""

    name: str
    interval_seconds: float
    run: Callable[[], Awaitable[int]]


async def run_every(job: Job) -> None:
    """Run `job` round after round, until cancelled."""
    while True:
        await anyio.sleep(job.interval_seconds)
        try:
            changed = await job.run()
        except SQLAlchemyError as exc:
            logger.warning("%s failed: %s", job.name, type(exc).__name__)
        else:
            if changed:
                logger.info("%s", job.name, extra={"rows": changed})


async def _batch(
    sessionmaker: async_sessionmaker[AsyncSession], key: Any, matching: Any, change: Any
) -> int:
    # Shielded: a shutdown waits for the batch rather than cancel a transaction midway,
    # which can leave its connection unusable and the pool's disposal waiting on it.
    with anyio.CancelScope(shield=True):
        async with sessionmaker() as db, db.begin():
            batch = select(key).where(matching).limit(PURGE_BATCH)
            result = await db.exec(change.where(key.in_(batch)))
    return int(result.rowcount or 0)


async def in_batches(
    sessionmaker: async_sessionmaker[AsyncSession], *, key: Any, matching: Any, change: Any
) -> int:
    """Apply `change` (a DELETE or UPDATE of `key`'s table) to every row `matching`, up to
    PURGE_BATCH rows per transaction of its own, so a purge never holds the write lock long
    enough to stall a sign-in (ORY Hydra's token table grew to 16-18 GB without one, hydra
    #1574); how many rows it changed."""
    total = 0
    while (changed := await _batch(sessionmaker, key, matching, change)) > 0:
        total += changed
        await anyio.lowlevel.checkpoint()  # this worker's requests go between batches
    return total

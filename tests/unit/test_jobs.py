"""Periodic jobs (kit.jobs): a failed round is logged and the next one runs."""

import logging

import anyio
import pytest
from sqlalchemy.exc import OperationalError

from auth_service.kit.jobs import Job, run_every

pytestmark = pytest.mark.anyio


async def test_a_failed_round_is_logged_and_the_next_round_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rounds: list[int] = []
    done = anyio.Event()

    async def work() -> int:
        rounds.append(len(rounds))
        if len(rounds) == 1:
            raise OperationalError("DELETE", {}, Exception("the database is away"))
        if len(rounds) == 3:
            done.set()
        return len(rounds) - 2  # round 2 changes nothing, round 3 one row

    caplog.set_level(logging.INFO, logger="auth_service.kit.jobs")
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(run_every, Job("purged test rows", 0, work))
            await done.wait()
            tasks.cancel_scope.cancel()

    records = [(r.levelname, r.getMessage(), getattr(r, "rows", None)) for r in caplog.records]
    assert records[:2] == [
        ("WARNING", "purged test rows failed: OperationalError", None),
        ("INFO", "purged test rows", 1),
    ]

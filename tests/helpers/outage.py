"""A database that stops answering under a running app: what every request must then say."""

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

DATABASE_TIMEOUT = 1.0
BOUND_SECONDS = 10

T = TypeVar("T")


def assert_unavailable(response: httpx.Response, *, oauth: bool = False) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["retry-after"]) > 0
    body = response.json()
    if oauth:
        assert body["error"] == "temporarily_unavailable"  # RFC 6749 §5.2
        assert body["error_description"]
        assert response.headers["cache-control"] == "no-store"
    else:
        assert set(body) == {"detail"}
        assert body["detail"]


async def answered_while_locked(call: Awaitable[T], release: Callable[[], Awaitable[object]]) -> T:
    """The answer to `call`, made while another connection holds a lock it waits for.

    Not cancelled at the bound, as `_bounded` would: its rollback would wait for the lock,
    and the lock is only released after the cancel, so the test would hang. The lock is
    released at the bound instead, and an answer that came only after that fails the test.
    """
    pending = asyncio.ensure_future(call)
    await asyncio.wait([pending], timeout=BOUND_SECONDS)
    in_time = pending.done()
    await release()
    answer = await pending
    assert in_time, f"no answer within {BOUND_SECONDS} s while the lock was held"
    return answer

"""Failed sign-ins take the same time whether or not the address is registered.

Timing is compared as distributions, not as single calls: many samples of each kind of
failure, interleaved in random order so that noise from the machine falls on all kinds alike,
compared with a Mann-Whitney U test. At bcrypt cost 4 (about 1 ms) a difference of a database
round trip or a role lookup stands out clearly (|z| of 6 and more over this many samples);
the same work on every path gives |z| of a few at most.
"""

import math
import random
import time

import httpx
import pytest

from tests.helpers.app import ClientFactory, admin_headers, register, request_token

pytestmark = pytest.mark.anyio

SAMPLES = 300  # per kind of failure
WARM_UP = 20
# Two-sided; |z| > 4.5 happens by chance about once in 150,000 runs of identical paths.
MAX_ABS_Z = 4.5


def mann_whitney_z(first: list[float], second: list[float]) -> float:
    """The normal approximation of the Mann-Whitney U statistic: z < 0 when `first` is
    faster. Timings in float seconds have no ties worth correcting for."""
    ranked = sorted([(value, 0) for value in first] + [(value, 1) for value in second])
    rank_sum = sum(rank for rank, (_, group) in enumerate(ranked, start=1) if group == 0)
    n1, n2 = len(first), len(second)
    u = rank_sum - n1 * (n1 + 1) / 2
    sigma = math.sqrt(n1 * n2 * (n1 + n2 + 1) / 12)
    return (u - n1 * n2 / 2) / sigma


async def _timed(client: httpx.AsyncClient, email: str, password: str) -> float:
    started = time.perf_counter()
    response = await request_token(client, email, password)
    elapsed = time.perf_counter() - started
    assert response.status_code == 400, response.text
    return elapsed


async def test_every_failed_sign_in_takes_as_long_as_an_unknown_address(
    make_client: ClientFactory,
) -> None:
    async with make_client(bcrypt_rounds=4) as client:
        await register(client, "known@example.com")
        inactive = await register(client, "inactive@example.com")
        response = await client.patch(
            f"/admin/users/{inactive['id']}",
            json={"is_active": False},
            headers=await admin_headers(client),
        )
        assert response.status_code == 200, response.text
        attempts = {
            "unknown": ("unknown@example.com", "a wrong password, long enough"),
            "wrong password": ("known@example.com", "a wrong password, long enough"),
            # The right password for a deactivated account fails like any other.
            "inactive": ("inactive@example.com", "correct horse battery staple"),
        }
        order = [kind for kind in attempts for _ in range(SAMPLES)]
        random.Random(20261202).shuffle(order)
        for kind in list(attempts) * WARM_UP:
            await _timed(client, *attempts[kind])
        samples: dict[str, list[float]] = {kind: [] for kind in attempts}
        for kind in order:
            samples[kind].append(await _timed(client, *attempts[kind]))

    for kind in ("wrong password", "inactive"):
        z = mann_whitney_z(samples["unknown"], samples[kind])
        medians = {k: sorted(v)[len(v) // 2] * 1000 for k, v in samples.items()}
        assert abs(z) < MAX_ABS_Z, f"{kind} vs unknown: z = {z:.1f}, medians (ms) {medians}"

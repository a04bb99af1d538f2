"""Micro benchmarks of the per-request primitives, with plain `time.perf_counter` loops.

    .venv/bin/python bench/micro.py [--seconds 1.0]

Each case runs a short warm-up, then repeats until its time budget (or iteration cap) is
spent, timing every call. Printed: calls, calls per second, and the p50 / p99 of one call.
Nothing touches the network or a database.
"""

import argparse
import asyncio
import os
import platform
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from auth_service.accounts import password_policy
from auth_service.security import crypto, jwt
from auth_service.security.passwords import PasswordHasher

ISSUER = "http://bench.invalid"
PASSPHRASE = "correct horse battery staple"  # noqa: S105 (a sample password)
EMAIL = "bench@example.com"


@dataclass(frozen=True)
class Result:
    name: str
    calls: int
    total: float
    p50: float
    p99: float

    @property
    def per_second(self) -> float:
        return self.calls / self.total


def measure(name: str, call: Callable[[], object], *, seconds: float, cap: int) -> Result:
    for _ in range(min(3, cap)):
        call()  # warm-up: caches, lazy imports, first-use allocations
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < cap and time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        call()
        samples.append(time.perf_counter() - t0)
    samples.sort()
    p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
    return Result(name, len(samples), sum(samples), statistics.median(samples), p99)


def _key(alg: str) -> jwt.SigningKeyPair:
    private = crypto.generate_private_key(alg)
    return jwt.load_key_pair(
        kid=crypto.new_kid(private), alg=alg, private_pem=crypto.private_key_pem(private)
    )


def _claims() -> dict[str, object]:
    now = time.time()
    return {
        "iss": ISSUER,
        "sub": str(uuid.uuid4()),
        "aud": ISSUER,
        "exp": int(now) + 900,
        "iat": now,
        "jti": uuid.uuid4().hex,
        "client_id": "auth-service",
        "scope": "account email openid profile",
        "roles": [],
    }


def _bcrypt(runner: asyncio.Runner, rounds: int, *, seconds: float, cap: int) -> Result:
    """bcrypt through the service's hasher: a worker thread behind its limiter, as in a login."""
    hasher = PasswordHasher(rounds=rounds, concurrency=1)
    return measure(
        f"bcrypt hash, cost {rounds}",
        lambda: runner.run(hasher.hash(PASSPHRASE)),
        seconds=seconds,
        cap=cap,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="time budget per case")
    seconds = parser.parse_args().seconds

    results: list[Result] = []
    for alg in ("RS256", "ES256"):
        key = _key(alg)
        keys = {key.kid: key}
        token = jwt.encode(_claims(), key)
        results.append(
            measure(
                f"JWT sign {alg}",
                lambda k=key: jwt.encode(_claims(), k),
                seconds=seconds,
                cap=20_000,
            )
        )
        results.append(
            measure(
                f"JWT verify {alg} (jwt.decode)",
                lambda t=token, ks=keys, a=alg: jwt.decode(
                    t, keys=ks, algorithm=a, issuer=ISSUER, audience=ISSUER
                ),
                seconds=seconds,
                cap=20_000,
            )
        )
    results.append(
        measure(
            "password policy check (accepted)",
            lambda: password_policy.check(PASSPHRASE, min_length=15, email=EMAIL),
            seconds=seconds,
            cap=20_000,
        )
    )
    with asyncio.Runner() as runner:
        # Cost 12 is the default: a quarter of a second or so each, so a handful of calls.
        results.append(_bcrypt(runner, 12, seconds=seconds * 3, cap=12))
        results.append(_bcrypt(runner, 4, seconds=seconds, cap=5_000))

    print(f"python {platform.python_version()} on {platform.machine()}, {_cpus()} CPU(s)")
    print(f"{'case':<34} {'calls':>7} {'calls/s':>10} {'p50':>11} {'p99':>11}")
    for r in results:
        print(
            f"{r.name:<34} {r.calls:>7} {r.per_second:>10.1f} "
            f"{_duration(r.p50):>11} {_duration(r.p99):>11}"
        )


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _duration(seconds: float) -> str:
    if seconds >= 0.1:
        return f"{seconds * 1000:.0f} ms"
    if seconds >= 0.001:
        return f"{seconds * 1000:.2f} ms"
    return f"{seconds * 1_000_000:.1f} µs"


if __name__ == "__main__":
    main()

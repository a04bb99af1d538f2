"""A bounded load test against a real `auth-service serve` that this script starts itself.

    .venv/bin/python bench/load.py [--workers 1] [--bcrypt-rounds 12]

It serves on a free loopback port with a temporary SQLite database, registers a few users,
then measures with `httpx.AsyncClient` (keep-alive connections, one per concurrent client):

1. GET /users/me with a valid token: the guard path (JWT verify + one database read);
2. POST /oauth2/token: the password grant, bound by bcrypt;
3. GET /users/me at low concurrency, first on an idle server, then while a burst of logins
   runs: bcrypt runs in worker threads, so token verification should barely notice.

Every phase has a fixed request count and a time cap; the server is stopped at the end.
Only loopback traffic.
"""

import argparse
import asyncio
import collections
import json
import os
import platform
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

PASSWORD = "correct horse battery staple"  # noqa: S105 (a sample password)
STARTUP_TIMEOUT_SECONDS = 60.0
USERS = 8  # logins rotate over several accounts, as real traffic does
ME = "/users/me"
TOKEN = "/oauth2/token"  # noqa: S105 (a path)


@dataclass
class Phase:
    name: str
    concurrency: int
    route: str
    latencies: list[float] = field(default_factory=list)
    server_times: list[float] = field(default_factory=list)  # from the access log
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    elapsed: float = 0.0

    @property
    def throughput(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0

    def percentile(self, fraction: float, *, server: bool = False) -> float:
        ordered = sorted(self.server_times if server else self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def run_phase(
    phase: Phase,
    request: Callable[[int], Awaitable[httpx.Response]],
    *,
    total: int,
    time_cap: float,
    stop: asyncio.Event | None = None,
) -> Phase:
    """`concurrency` closed-loop clients share `total` requests; stop at the cap or `stop`."""
    issued = 0
    started = time.perf_counter()
    deadline = started + time_cap

    async def client() -> None:
        nonlocal issued
        while issued < total and time.perf_counter() < deadline:
            if stop is not None and stop.is_set():
                return
            index, issued = issued, issued + 1
            t0 = time.perf_counter()
            try:
                response = await request(index)
            except httpx.HTTPError as exc:
                phase.errors[type(exc).__name__] += 1
                continue
            if response.is_success:
                phase.latencies.append(time.perf_counter() - t0)
            else:
                phase.errors[str(response.status_code)] += 1

    await asyncio.gather(*(client() for _ in range(phase.concurrency)))
    phase.elapsed = time.perf_counter() - started
    return phase


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


class Server:
    def __init__(
        self, workdir: Path, *, workers: int, bcrypt_rounds: int, hash_concurrency: int | None
    ) -> None:
        self.workers = workers
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "serve.log"
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("AUTH_")}
        env.update(
            AUTH_DATABASE_URL=f"sqlite:///{workdir / 'auth.db'}",
            AUTH_SECRET_KEY=secrets.token_urlsafe(32),
            AUTH_ISSUER=self.url,
            AUTH_BCRYPT_ROUNDS=str(bcrypt_rounds),
            TMPDIR=str(workdir),
        )
        if hash_concurrency is not None:
            env["AUTH_PASSWORD_HASH_CONCURRENCY"] = str(hash_concurrency)
        with self.log.open("wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                [sys.executable, "-m", "auth_service", "serve", "--host", "127.0.0.1"]
                + ["--port", str(self.port), "--workers", str(workers)],
                cwd=workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )

    async def wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"serve exited:\n{self.log.read_text()[-3000:]}")
                started = self.log.read_text(errors="replace").count("Application startup complete")
                if started >= self.workers:
                    try:
                        if (await client.get("/health/ready")).status_code == 200:
                            return
                    except httpx.TransportError:
                        pass
                await asyncio.sleep(0.05)
        raise RuntimeError(f"serve not ready in {STARTUP_TIMEOUT_SECONDS} s")

    def log_offset(self) -> int:
        return self.log.stat().st_size

    def server_times(self, since: int, route: str) -> list[float]:
        """Seconds the service spent on each successful `route` request, per its access log."""
        with self.log.open("rb") as log:
            log.seek(since)
            lines = log.read().splitlines()
        times = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("route") == route and 200 <= entry.get("status", 0) < 300:
                times.append(entry["duration_ms"] / 1000)
        return times

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


def _client(url: str, concurrency: int) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(base_url=url, limits=limits, timeout=60)


def _login_form(index: int) -> dict[str, str]:
    return {
        "grant_type": "password",
        "username": f"load-{index % USERS}@example.com",
        "password": PASSWORD,
    }


async def benchmark(server: Server, args: argparse.Namespace) -> list[Phase]:
    async with _client(server.url, 64) as client:
        for i in range(USERS):
            body = {"email": f"load-{i}@example.com", "password": PASSWORD}
            (await client.post("/users", json=body)).raise_for_status()
        response = await client.post("/oauth2/token", data=_login_form(0))
        response.raise_for_status()
        headers = {"Authorization": f"Bearer {response.json()['access_token']}"}

        def me(_: int) -> Awaitable[httpx.Response]:
            return client.get("/users/me", headers=headers)

        def login(index: int) -> Awaitable[httpx.Response]:
            return client.post("/oauth2/token", data=_login_form(index))

        async def measured(
            phase: Phase, request: Callable[[int], Awaitable[httpx.Response]], total: int
        ) -> Phase:
            since = server.log_offset()
            await run_phase(phase, request, total=total, time_cap=args.time_cap)
            phase.server_times = server.server_times(since, phase.route)
            return phase

        await run_phase(Phase("warm-up", 4, ME), me, total=200, time_cap=10)
        phases = [
            await measured(Phase("GET /users/me", args.me_concurrency, ME), me, args.me_requests),
            await measured(
                Phase("POST /oauth2/token", args.login_concurrency, TOKEN), login, args.logins
            ),
            await measured(
                Phase("GET /users/me, idle server", args.probe_concurrency, ME),
                me,
                args.probe_requests,
            ),
        ]

        # The same probe while a burst of logins keeps every bcrypt thread busy.
        burst = Phase("  the login burst itself", args.login_concurrency, TOKEN)
        probe = Phase("GET /users/me, during login burst", args.probe_concurrency, ME)
        burst_over = asyncio.Event()

        async def run_burst() -> None:
            try:
                await run_phase(burst, login, total=args.logins, time_cap=args.time_cap)
            finally:
                burst_over.set()

        since = server.log_offset()
        await asyncio.gather(
            run_burst(),
            run_phase(probe, me, total=100_000, time_cap=args.time_cap, stop=burst_over),
        )
        probe.server_times = server.server_times(since, ME)
        burst.server_times = server.server_times(since, TOKEN)
        phases += [probe, burst]
    return phases


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def report(phases: list[Phase], args: argparse.Namespace) -> None:
    print(
        f"python {platform.python_version()}, {len(os.sched_getaffinity(0))} CPUs, "
        f"load average {os.getloadavg()[0]:.2f}; serve --workers {args.workers}, "
        f"bcrypt cost {args.bcrypt_rounds}, hash threads "
        f"{args.hash_concurrency or 'default (CPU count)'}; load generator on the same machine"
    )
    print(
        f"{'':<35} {'':>4} {'':>5} {'':>4} {'':>7} {'client ms':^13} {'server ms':^13}\n"
        f"{'phase':<35} {'conc':>4} {'ok':>5} {'err':>4} {'req/s':>7} "
        f"{'p50':>6} {'p99':>6} {'p50':>6} {'p99':>6}"
    )
    for p in phases:
        print(
            f"{p.name:<35} {p.concurrency:>4} {len(p.latencies):>5} {sum(p.errors.values()):>4} "
            f"{p.throughput:>7.1f} {_ms(p.percentile(0.5)):>6} {_ms(p.percentile(0.99)):>6} "
            f"{_ms(p.percentile(0.5, server=True)):>6} {_ms(p.percentile(0.99, server=True)):>6}"
        )
        if p.errors:
            print(f"    errors: {dict(p.errors)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument(
        "--hash-concurrency", type=int, default=None, help="AUTH_PASSWORD_HASH_CONCURRENCY"
    )
    parser.add_argument("--me-requests", type=int, default=3000)
    parser.add_argument("--me-concurrency", type=int, default=16)
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--login-concurrency", type=int, default=8)
    parser.add_argument("--probe-requests", type=int, default=300)
    parser.add_argument("--probe-concurrency", type=int, default=2)
    parser.add_argument("--time-cap", type=float, default=30.0, help="seconds per phase")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="auth-load-") as workdir:
        server = Server(
            Path(workdir),
            workers=args.workers,
            bcrypt_rounds=args.bcrypt_rounds,
            hash_concurrency=args.hash_concurrency,
        )
        try:
            asyncio.run(server.wait_until_ready())
            phases = asyncio.run(benchmark(server, args))
        finally:
            server.stop()
    report(phases, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

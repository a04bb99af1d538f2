"""`auth-service serve` as an operator starts it: a process tree on loopback, and what its
workers' metric files say about who answered."""

import collections
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import httpx
import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
)

# prometheus_client declares no types for it: what it returns, as its documentation says.
_merge: Callable[..., Iterable[Metric]] = MultiProcessCollector.merge

WORKERS = 2
STARTUP_TIMEOUT_SECONDS = 45.0
STOP_TIMEOUT_SECONDS = 15.0
REQUEST_TIMEOUT_SECONDS = 15.0
MIN_REQUESTS = 30
MAX_REQUESTS = 150  # bound on the loops that go on until both workers have answered
SERVE = [sys.executable, "-m", "auth_service", "serve"]

RouteCounts = collections.Counter[tuple[str, str]]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def child_environment(**values: str) -> dict[str, str]:
    """The test runner's environment without any AUTH_* or metrics setting, plus `values`."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.upper().startswith("AUTH_") and name != "PROMETHEUS_MULTIPROC_DIR"
    }
    env.update(values)
    return env


class Server:
    """One `auth-service serve` process tree on loopback; restartable on the same port."""

    workers = WORKERS

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.database_url = database_url
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.issuer = self.url
        self.logs: list[Path] = []
        self.metrics_dir: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        # Connection: close makes every request a new TCP connection, whichever worker accepts.
        self.http = httpx.Client(
            base_url=self.url, headers={"Connection": "close"}, timeout=REQUEST_TIMEOUT_SECONDS
        )
        (workdir / "tmp").mkdir(parents=True, exist_ok=True)

    def environment(self) -> dict[str, str]:
        return child_environment(
            AUTH_DATABASE_URL=self.database_url,
            AUTH_SECRET_KEY="serve test secret key",
            AUTH_ISSUER=self.issuer,
            AUTH_BCRYPT_ROUNDS="4",
            AUTH_BOOTSTRAP_ADMIN_EMAIL=ADMIN_EMAIL,
            AUTH_BOOTSTRAP_ADMIN_PASSWORD=ADMIN_PASSWORD,
            AUTH_LOG_LEVEL="INFO",
            # `serve` creates its metrics directory with mkdtemp: keep it where we can see it.
            TMPDIR=str(self.workdir / "tmp"),
        )

    def start(self) -> None:
        assert self.process is None, "already running"
        log = self.workdir / f"serve-{len(self.logs) + 1}.log"
        self.logs.append(log)
        metrics_before = set((self.workdir / "tmp").glob("auth-service-metrics-*"))
        with log.open("wb") as stderr:
            self.process = subprocess.Popen(  # noqa: S603 (our own interpreter and arguments)
                [*SERVE, "--host", "127.0.0.1", "--port", str(self.port)]
                + ["--workers", str(self.workers)],
                cwd=self.workdir,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,  # its own process group: teardown can reach the workers
            )
        try:
            self._wait_until_ready(log)
        except BaseException:
            self.stop()
            raise
        created = set((self.workdir / "tmp").glob("auth-service-metrics-*")) - metrics_before
        self.metrics_dir = created.pop() if len(created) == 1 else None

    def _wait_until_ready(self, log: Path) -> None:
        """Every worker has finished its start-up and /health/ready answers 200."""
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"serve exited with {self.process.returncode}:\n{tail(log)}")
            started = log.read_text(errors="replace").count("Application startup complete")
            if started >= self.workers:
                try:
                    if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
            if time.monotonic() > deadline:
                pytest.fail(f"serve not ready in {STARTUP_TIMEOUT_SECONDS} s:\n{tail(log)}")
            time.sleep(0.05)

    def stop(self) -> int | None:
        """SIGTERM, wait; SIGKILL the whole group when it does not stop in time."""
        process, self.process = self.process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        return process.returncode

    def restart(self) -> int | None:
        code = self.stop()
        self.start()
        return code

    def close(self) -> None:
        self.stop()
        self.http.close()

    def log_text(self) -> str:
        return "".join(log.read_text(errors="replace") for log in self.logs)

    def requests_by_worker(self) -> dict[str, RouteCounts]:
        """(method, route) -> requests answered, per worker pid, from the metric files."""
        assert self.metrics_dir is not None, "serve --workers 2 set no PROMETHEUS_MULTIPROC_DIR"
        by_worker: dict[str, RouteCounts] = {}
        for path in self.metrics_dir.glob("counter_*.db"):
            counts: RouteCounts = collections.Counter()
            for family in _merge([str(path)], accumulate=True):
                for sample in family.samples:
                    if sample.name == "auth_http_requests_total":
                        key = (sample.labels["method"], sample.labels["route"])
                        counts[key] += int(sample.value)
            by_worker[path.stem.removeprefix("counter_")] = counts
        return by_worker


def tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def workers_that_answered(
    before: dict[str, RouteCounts], after: dict[str, RouteCounts], method: str, route: str
) -> set[str]:
    return {
        pid
        for pid, counts in after.items()
        if counts[(method, route)] > before.get(pid, collections.Counter())[(method, route)]
    }

"""`make bench`: the service's hot paths against ceilings measured in the same run.

    .venv/bin/python bench/run.py [--quick] [--seconds 8] [--warmup 2] [--bcrypt-rounds 12]
        [--databases sqlite,postgresql] [--postgres-url URL] [--json PATH] [--no-readme]

It starts the real `auth-service serve` on loopback (one worker, then two; SQLite, then
PostgreSQL when the server answers) and, beside it, the baselines of `bench/baselines.py`
served with the same uvicorn options: a FastAPI hello world (the framework ceiling) and one
raw-driver primary-key SELECT per request on the same database (the database ceilings), and a
downstream service verifying our tokens with `auth_service_verifier`, against its own hello
world (issue 11). The password limit is `cores / one bcrypt verify` at the configured cost,
timed in-process. On each database it also measures introspection by a client that
authenticates, the client credentials grant and the refresh grant (issue 11), with a client
made by `auth-service create-client`.

Load comes from `wrk` (closed loop, one thread, Lua scripts for bearer headers and form
POSTs) and `hey -q` (a fixed-rate probe, so the probe does not take the CPU it measures);
`bench/ensure-tools` installs both. Every figure is divided by its ceiling, compared with its
target (issue 10) and printed as one table, which is also written, with the command, between
the markers in `bench/README.md`. Errors (socket errors, 4xx and 5xx) are counted; a figure
with errors is not a result. Only loopback traffic; each load has a fixed duration.
"""

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg import sql

from auth_service.security.passwords import PasswordHasher

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
README = ROOT / "bench" / "README.md"
BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
PASSWORD = "correct horse battery staple"  # noqa: S105 (a sample password)
ACCOUNTS = 8  # logins rotate over several accounts, as real traffic does
CONNECTIONS = 32
GRANT_CONNECTIONS = 8  # within the fair queue's room: a flat-out grant, never a 429
# The refresh grant's connections, and how many fresh tokens its pool holds beyond one per
# connection: sessions signed in before each load, each then a chain of rotations.
REFRESH_CONNECTIONS, REFRESH_SPARE = 8, 8
PROBE_RATE, PROBE_CLIENTS = 100, 4  # hey -q is per client: 4 x 25 = 100 requests/s
START_TIMEOUT = 60.0

# done() runs once, after the load, with wrk's own totals: one JSON line to parse.
DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "BENCH {\\"requests\\": %d, \\"duration_us\\": %d, \\"p50_us\\": %d, \\"p99_us\\": %d, "
    .. "\\"socket_errors\\": %d, \\"http_errors\\": %d}\\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


@dataclass
class Load:
    """What one load generator saw."""

    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


@dataclass
class Figure:
    name: str
    rate: float  # requests (or logins) per second
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    ratio: float | None = None
    of: str = ""  # what the ratio divides by
    target: str = ""
    met: bool | None = None
    rss_mib: float | None = None  # peak resident memory per worker of the server measured


@dataclass
class Options:
    seconds: float
    warmup: float
    bcrypt_rounds: int
    databases: list[str]
    postgres_url: str
    work: Path


# --- servers -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers or {})  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def post(
    url: str,
    *,
    form: dict[str, str] | None = None,
    data: object = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    if form is not None:
        body, ctype = urllib.parse.urlencode(form).encode(), "application/x-www-form-urlencoded"
    else:
        body, ctype = json.dumps(data).encode(), "application/json"
    request = urllib.request.Request(  # noqa: S310
        url, body, {"Content-Type": ctype, **(headers or {})}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
        payload: bytes = response.read()
        return payload


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(child) for child in task.read_text().split()]
    return found


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


class Server:
    """A server process (and its workers) on a free loopback port, stopped on exit."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], ready: str) -> None:
        self.name, self.port = name, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.argv = [part.replace("{port}", str(self.port)) for part in argv]
        self.env, self.ready = {**os.environ, **env}, ready
        self.log = tempfile.TemporaryFile()
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "Server":
        self.process = subprocess.Popen(  # noqa: S603 (our own argv)
            self.argv, env=self.env, stdout=self.log, stderr=subprocess.STDOUT, cwd=ROOT
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(OSError):
                if get(self.base + self.ready)[0] == 200:
                    return self
            time.sleep(0.1)
        self.__exit__()
        self.log.seek(0)
        raise RuntimeError(f"{self.name} did not start:\n{self.log.read().decode()[-3000:]}")

    def workers_peak_rss_mib(self) -> float:
        """The largest peak RSS of the processes that serve (the workers, not a supervisor)."""
        assert self.process is not None
        pids = _children(self.process.pid) or [self.process.pid]
        return max(_peak_rss_mib(pid) for pid in pids)

    def __exit__(self, *_: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def baseline(
    kind: str, *, workers: int = 1, database: str = "", user_id: str = "", issuer: str = ""
) -> Server:
    argv = [str(BIN / "python"), str(ROOT / "bench" / "baselines.py"), kind, "--port", "{port}"]
    argv += ["--workers", str(workers), "--database", database, "--user-id", user_id]
    argv += ["--issuer", issuer]
    ready = "/hello" if kind in ("hello", "verifier") else "/user"
    return Server(f"{kind} baseline", argv, {}, ready)


def service(database_url: str, options: Options, *, workers: int = 1) -> Server:
    env = {
        "AUTH_DATABASE_URL": database_url,
        "AUTH_SECRET_KEY_FILE": str(options.work / "secret-key"),
        "AUTH_BCRYPT_ROUNDS": str(options.bcrypt_rounds),
        "AUTH_ISSUER": "http://127.0.0.1",
    }
    argv = [str(BIN / "auth-service"), "serve", "--port", "{port}", "--workers", str(workers)]
    server = Server("auth-service", argv, env, "/health/ready")
    # The issuer is the URL it is reached at: the verifier's figure finds its keys there.
    server.env["AUTH_ISSUER"] = server.base
    return server


def create_client(server: Server) -> dict[str, str]:
    """A confidential client in the server's database, by the command line an operator uses:
    the `introspect` scope and the client credentials grant. Its HTTP Basic header."""
    argv = [str(BIN / "auth-service"), "create-client", "--name", "bench"]
    argv += ["--scope", "introspect", "--grant-type", "client_credentials"]
    done = subprocess.run(  # noqa: S603 (our own argv)
        argv, env=server.env, capture_output=True, text=True, timeout=60, check=True, cwd=ROOT
    )
    printed = dict(line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line)
    pair = f"{printed['client_id']}:{printed['client_secret']}"
    return {"Authorization": "Basic " + base64.b64encode(pair.encode()).decode()}


# --- load ----------------------------------------------------------------------------------


def wrk(url: str, lua: str, *, seconds: float, connections: int = CONNECTIONS) -> Load:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(lua + DONE_LUA)
    try:
        argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
        argv += ["--timeout", "10s", "-s", script.name, url]
        done = subprocess.run(  # noqa: S603
            argv, capture_output=True, text=True, timeout=seconds + 60, check=True
        )
    finally:
        os.unlink(script.name)
    line = next(x for x in done.stdout.splitlines() if x.startswith("BENCH "))
    report = json.loads(line.removeprefix("BENCH "))
    return Load(
        requests=report["requests"],
        seconds=report["duration_us"] / 1e6,
        p50_ms=report["p50_us"] / 1000,
        p99_ms=report["p99_us"] / 1000,
        errors=report["socket_errors"] + report["http_errors"],
    )


def get_lua(headers: dict[str, str]) -> str:
    return "".join(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in headers.items())


def login_lua(emails: list[str]) -> str:
    bodies = [
        urllib.parse.urlencode({"grant_type": "password", "username": e, "password": PASSWORD})
        for e in emails
    ]
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f"local bodies = {{{', '.join(json.dumps(b) for b in bodies)}}}\n"
        "local i = 0\n"
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        "  return wrk.format(nil, nil, nil, bodies[i])\n"
        "end\n"
    )


def form_lua(form: dict[str, str], headers: dict[str, str]) -> str:
    """The same form POST again and again, with `headers`."""
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        + get_lua(headers)
        + f"wrk.body = {json.dumps(urllib.parse.urlencode(form))}\n"
    )


def refresh_lua(tokens: list[str]) -> str:
    """Refreshes that each present a fresh token: a pool of unspent refresh tokens, each
    taken once; each answer's successor goes back into the pool (wrk runs `response`, with
    the body, before the connection sends again). A refused refresh returns none: the pool
    shrinks, and once empty the requests are malformed (400s, counted as errors)."""
    return (
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"\n'
        f"local fresh = {{{', '.join(json.dumps(t) for t in tokens)}}}\n"
        "request = function()\n"
        '  local token = table.remove(fresh) or ""\n'
        "  return wrk.format(nil, nil, nil,\n"
        '    "grant_type=refresh_token&refresh_token=" .. token)\n'
        "end\n"
        "response = function(status, headers, body)\n"
        '  local successor = body:match(\'"refresh_token":"([^"]+)"\')\n'
        "  if successor then fresh[#fresh + 1] = successor end\n"
        "end\n"
    )


def start_probe(url: str, headers: dict[str, str], *, seconds: float) -> subprocess.Popen[str]:
    argv = ["hey", "-z", f"{max(1, round(seconds))}s", "-c", str(PROBE_CLIENTS)]
    argv += ["-q", str(PROBE_RATE // PROBE_CLIENTS)]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    return subprocess.Popen(argv + [url], stdout=subprocess.PIPE, text=True)  # noqa: S603


def probe_result(probe: subprocess.Popen[str], *, seconds: float) -> Load:
    """hey's summary: its latency distribution, status codes and socket errors."""
    output, _ = probe.communicate(timeout=seconds + 60)
    percentiles = {
        int(m[1]): float(m[2]) * 1000 for m in re.finditer(r"(\d+)%+ in ([\d.]+) secs", output)
    }
    statuses = {int(m[1]): int(m[2]) for m in re.finditer(r"\[(\d+)\]\s+(\d+) responses", output)}
    errors = sum(int(m[1]) for m in re.finditer(r"\[(\d+)\]\s+Get ", output))
    errors += sum(count for status, count in statuses.items() if not 200 <= status < 300)
    return Load(
        requests=sum(statuses.values()),
        seconds=max(1, round(seconds)),
        p50_ms=percentiles.get(50, 0.0),
        p99_ms=percentiles.get(99, 0.0),
        errors=errors,
    )


def measure(url: str, lua: str, options: Options, **kwargs: int) -> Load:
    if options.warmup:
        wrk(url, lua, seconds=options.warmup, **kwargs)
    return wrk(url, lua, seconds=options.seconds, **kwargs)


def preflight(url: str, headers: dict[str, str] | None = None) -> None:
    """One request first: a load of refusals measures nothing."""
    status, body = get(url, headers)
    if status != 200:
        raise RuntimeError(f"{url}: {status} {body[:200]!r}")


def preflight_post(url: str, form: dict[str, str], headers: dict[str, str]) -> dict[str, object]:
    """One form POST first, which must answer 200: its JSON answer."""
    try:
        answer: dict[str, object] = json.loads(post(url, form=form, headers=headers))
    except urllib.error.HTTPError as error:
        raise RuntimeError(f"{url}: {error.code} {error.read()[:200]!r}") from None
    return answer


# --- the password limit --------------------------------------------------------------------


def bcrypt_verify_seconds(rounds: int) -> float:
    """The median time of one verify at `rounds`, through the service's own hasher."""

    async def timed() -> float:
        hasher = PasswordHasher(rounds=rounds, concurrency=1)
        hashed = await hasher.hash(PASSWORD)
        samples: list[float] = []
        started = time.perf_counter()
        while len(samples) < 5 or (time.perf_counter() - started < 1 and len(samples) < 200):
            t0 = time.perf_counter()
            await hasher.verify(PASSWORD, hashed)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples)

    return asyncio.run(timed())


# --- the suite -----------------------------------------------------------------------------


@dataclass
class Suite:
    options: Options
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, load: Load, *, rss: float | None = None) -> Figure:
        figure = Figure(name, load.rate, load.p50_ms, load.p99_ms, load.errors, rss_mib=rss)
        self.figures.append(figure)
        print(f"  {name}: {load.rate:,.1f}/s, p99 {load.p99_ms:.1f} ms, {load.errors} errors")
        return figure

    def compare(
        self, figure: Figure, ceiling: float, of: str, at_least: float | None = None
    ) -> None:
        figure.ratio, figure.of = (figure.rate / ceiling if ceiling else 0.0), of
        if at_least is not None:
            figure.target = f"≥ {at_least:.2f}× {of}"
            figure.met = figure.errors == 0 and figure.ratio >= at_least

    def run(self) -> None:
        cores = os.cpu_count() or 1
        print(f"bench: {cores} cores, {self.options.seconds:g} s per figure")
        with baseline("hello") as hello:
            print("framework ceiling")
            hello_1 = self.add("FastAPI hello world (framework ceiling)", self._hello(hello))
            hello_1.rss_mib = hello.workers_peak_rss_mib()
            self.compare(hello_1, hello_1.rate, "hello")

        sqlite_url = f"sqlite:///{self.options.work / 'auth.db'}"
        me_1 = self._database("sqlite", sqlite_url, hello_1, cores=cores)
        if "postgresql" in self.options.databases:
            with self._postgres_database() as postgres_url:
                if postgres_url is None:
                    self.notes.append("PostgreSQL figures skipped: no server answered.")
                else:
                    self._database("postgresql", postgres_url, hello_1, cores=cores)

        print("two workers")
        with baseline("hello", workers=2) as hello:
            hello_2 = self.add("FastAPI hello world, 2 workers", self._hello(hello))
            hello_2.rss_mib = hello.workers_peak_rss_mib()
            self.compare(hello_2, hello_1.rate, "hello, 1 worker")
        with service(sqlite_url, self.options, workers=2) as server:
            headers = self._sign_in(server, ACCOUNTS)[1]
            preflight(server.base + "/users/me", headers)
            load = measure(server.base + "/users/me", get_lua(headers), self.options)
            me_2 = self.add("GET /users/me, SQLite, 2 workers", load)
            me_2.rss_mib = server.workers_peak_rss_mib()
        scaling = hello_2.rate / hello_1.rate
        self.compare(me_2, me_1.rate, "/users/me, 1 worker", at_least=scaling)
        me_2.target = f"≥ {scaling:.2f}× (hello's scaling)"

    def _hello(self, hello: Server) -> Load:
        preflight(hello.base + "/hello")
        return measure(hello.base + "/hello", "", self.options)

    def _sign_in(self, server: Server, accounts: int) -> tuple[list[str], dict[str, str]]:
        """Register `accounts` users (or find them registered): their emails, a bearer header."""
        emails = [f"bench{i}@example.com" for i in range(accounts)]
        for email in emails:
            with contextlib.suppress(urllib.error.HTTPError):  # 409: an earlier run's
                post(server.base + "/users", data={"email": email, "password": PASSWORD})
        form = {"grant_type": "password", "username": emails[0], "password": PASSWORD}
        token = json.loads(post(server.base + "/oauth2/token", form=form))["access_token"]
        return emails, {"Authorization": f"Bearer {token}"}

    def _database(self, kind: str, url: str, hello: Figure, *, cores: int) -> Figure:
        label = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}[kind]
        print(f"{label}: the service")
        options = self.options
        on_this_server: list[Figure] = []
        with service(url, options) as server:
            emails, headers = self._sign_in(server, ACCOUNTS if kind == "sqlite" else 1)
            user_id = json.loads(get(server.base + "/users/me", headers)[1])["id"]
            me_url = server.base + "/users/me"
            if kind == "sqlite":
                for path, name in [
                    ("/health/live", "GET /health/live"),
                    ("/.well-known/jwks.json", "GET /.well-known/jwks.json"),
                    ("/.well-known/openid-configuration", "GET /.well-known/openid-configuration"),
                ]:
                    preflight(server.base + path)
                    figure = self.add(name, measure(server.base + path, "", options))
                    self.compare(figure, hello.rate, "hello", at_least=0.85)
                    on_this_server.append(figure)
            preflight(me_url, headers)
            me = self.add(f"GET /users/me, {label}", measure(me_url, get_lua(headers), options))
            on_this_server.append(me)
            introspection, *grants = self._service_clients(server, emails, headers, label)
            on_this_server += [introspection, *grants]
            if kind == "sqlite":
                self._verifier(server, headers)
                on_this_server += self._password_grant(server, emails, headers, cores=cores)
            rss = server.workers_peak_rss_mib()
        for figure in on_this_server:
            figure.rss_mib = rss
        print(f"{label}: the database ceiling")
        with baseline(kind, database=url, user_id=user_id) as ceiling_server:
            preflight(ceiling_server.base + "/user")
            load = measure(ceiling_server.base + "/user", "", options)
            ceiling = self.add(f"one {label} primary-key SELECT (database ceiling)", load)
            ceiling.rss_mib = ceiling_server.workers_peak_rss_mib()
        self.compare(ceiling, hello.rate, "hello")
        if kind == "sqlite":
            self.compare(me, hello.rate, "hello", at_least=0.50)
            self.compare(introspection, hello.rate, "hello", at_least=0.50)
            for grant in grants:
                self.compare(grant, hello.rate, "hello")
        else:
            self.compare(me, ceiling.rate, "the PostgreSQL ceiling", at_least=0.90)
            self.compare(introspection, ceiling.rate, "the PostgreSQL ceiling", at_least=0.90)
            for grant in grants:
                self.compare(grant, ceiling.rate, "the PostgreSQL ceiling")
        return me

    def _service_clients(
        self, server: Server, emails: list[str], headers: dict[str, str], label: str
    ) -> list[Figure]:
        """Introspection of a user's access token by a client that authenticates (HTTP
        Basic), the client credentials grant of the same client, and the refresh grant."""
        options, basic = self.options, create_client(server)
        access_token = headers["Authorization"].removeprefix("Bearer ")
        url = server.base + "/oauth2/introspect"
        form = {"token": access_token}
        if preflight_post(url, form, basic).get("active") is not True:
            raise RuntimeError(f"{url}: the bench's access token is not active")
        load = measure(url, form_lua(form, basic), options)
        introspection = self.add(f"POST /oauth2/introspect, {label}", load)

        token_url = server.base + "/oauth2/token"
        form = {"grant_type": "client_credentials"}
        preflight_post(token_url, form, basic)
        load = measure(token_url, form_lua(form, basic), options)
        client_credentials = self.add(f"client credentials grant, {label}", load)

        # Each refresh token is single use: every load gets sessions signed in for it alone.
        if options.warmup:
            lua = refresh_lua(self._refresh_tokens(server, emails))
            wrk(token_url, lua, seconds=options.warmup, connections=REFRESH_CONNECTIONS)
        lua = refresh_lua(self._refresh_tokens(server, emails))
        load = wrk(token_url, lua, seconds=options.seconds, connections=REFRESH_CONNECTIONS)
        refresh = self.add(f"refresh grant, {label}", load)
        return [introspection, client_credentials, refresh]

    @staticmethod
    def _refresh_tokens(server: Server, emails: list[str]) -> list[str]:
        """Fresh refresh tokens, one per new session, enough for the refresh grant's load;
        the first one is refreshed once here, so a refused refresh stops the run."""

        def sign_in(email: str) -> str:
            form = {"grant_type": "password", "username": email, "password": PASSWORD}
            return str(json.loads(post(server.base + "/oauth2/token", form=form))["refresh_token"])

        wanted = [emails[i % len(emails)] for i in range(REFRESH_CONNECTIONS + REFRESH_SPARE)]
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            tokens = list(pool.map(sign_in, wanted))
        form = {"grant_type": "refresh_token", "refresh_token": tokens[0]}
        tokens[0] = str(preflight_post(server.base + "/oauth2/token", form, {})["refresh_token"])
        return tokens

    def _verifier(self, server: Server, headers: dict[str, str]) -> None:
        """A downstream service verifying our tokens locally, against its own hello world."""
        print("SQLite: the verifier in a downstream service")
        with baseline("verifier", issuer=server.base) as downstream:
            preflight(downstream.base + "/hello")
            own_hello = self.add(
                "downstream service's own hello world",
                measure(downstream.base + "/hello", "", self.options),
            )
            preflight(downstream.base + "/verified", headers)
            load = measure(downstream.base + "/verified", get_lua(headers), self.options)
            verified = self.add("downstream GET with verifier.require(), local", load)
            own_hello.rss_mib = verified.rss_mib = downstream.workers_peak_rss_mib()
        self.compare(own_hello, own_hello.rate, "its hello")
        self.compare(verified, own_hello.rate, "its hello", at_least=0.75)

    def _password_grant(
        self, server: Server, emails: list[str], headers: dict[str, str], *, cores: int
    ) -> list[Figure]:
        """The grant flat out, then a fixed-rate probe while it runs: the figures measured."""
        options = self.options
        verify = bcrypt_verify_seconds(options.bcrypt_rounds)
        limit = cores / verify
        self.figures.append(
            Figure(
                f"bcrypt limit: {cores} cores / one verify at cost {options.bcrypt_rounds}",
                limit,
                verify * 1000,
                None,
                0,
            )
        )
        token_url = server.base + "/oauth2/token"
        lua = login_lua(emails)
        # Long enough for many verifies per slot whatever --seconds says: a login takes a
        # queue's worth of verifies, and a short window would count mostly the first wait.
        seconds = max(options.seconds, 25 * verify)
        if options.warmup:
            wrk(token_url, lua, seconds=options.warmup, connections=GRANT_CONNECTIONS)
        load = wrk(token_url, lua, seconds=seconds, connections=GRANT_CONNECTIONS)
        grant = self.add("password grant", load)
        self.compare(grant, limit, "the bcrypt limit", at_least=0.90)

        # The probe at a fixed rate while the grant runs flat out, both for the same time.
        if options.warmup:
            wrk(token_url, lua, seconds=options.warmup, connections=GRANT_CONNECTIONS)
        probe = start_probe(server.base + "/users/me", headers, seconds=seconds)
        meanwhile = wrk(token_url, lua, seconds=seconds, connections=GRANT_CONNECTIONS)
        steady = probe_result(probe, seconds=seconds)
        figure = self.add(f"GET /users/me at {PROBE_RATE}/s during the grant", steady)
        figure.target = "p99 ≤ 25 ms, no errors"
        figure.met = steady.errors == 0 and steady.p99_ms <= 25
        during = self.add("password grant meanwhile", meanwhile)
        self.compare(during, limit, "the bcrypt limit", at_least=0.85)
        return [grant, figure, during]

    @contextlib.contextmanager
    def _postgres_database(self) -> Iterator[str | None]:
        """A fresh database on the server for this run, dropped afterwards."""
        name = f"auth_bench_{uuid.uuid4().hex[:8]}"
        try:
            admin = psycopg.connect(self.options.postgres_url, autocommit=True, connect_timeout=3)
        except psycopg.OperationalError:
            yield None
            return
        with admin:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            try:
                info = admin.info
                yield f"postgresql://{info.user}@{info.host}:{info.port}/{name}"
            finally:
                admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


# --- the table -----------------------------------------------------------------------------


def _number(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def table(figures: list[Figure]) -> str:
    lines = [
        "| figure | req/s | p50 ms | p99 ms | errors | ratio | target | met? | peak RSS MiB |",
        "|---|--:|--:|--:|--:|--:|---|---|--:|",
    ]
    for f in figures:
        ratio = f"{f.ratio:.2f}× {f.of}" if f.ratio is not None else ""
        met = "" if f.met is None else ("yes" if f.met else "**no**")
        lines.append(
            f"| {f.name} | {_number(f.rate)} | {_number(f.p50_ms)} | {_number(f.p99_ms)} | "
            f"{f.errors} | {ratio} | {f.target} | {met} | {_number(f.rss_mib, 0)} |"
        )
    return "\n".join(lines)


def _commit() -> str:
    done = subprocess.run(  # noqa: S603
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],  # noqa: S607
        capture_output=True,
        text=True,
    )
    return done.stdout.strip() or "unknown"


def report(figures: list[Figure], notes: list[str], command: str, elapsed: float) -> str:
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"
    text = [
        f"`{command}` at {_commit()}, {when}; {machine}; load generators on the same cores; "
        f"run time {elapsed:.0f} s.",
        "",
        table(figures),
    ]
    if notes:
        text += [""] + [f"- {note}" for note in notes]
    return "\n".join(text)


def write_readme(text: str) -> None:
    readme = README.read_text()
    before, rest = readme.split(BEGIN, 1)
    after = rest.split(END, 1)[1]
    README.write_text(f"{before}{BEGIN}\n{text}\n{END}{after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 s per figure, short warm-up")
    parser.add_argument("--seconds", type=float, default=8.0, help="load time per figure")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured load first")
    parser.add_argument("--bcrypt-rounds", type=int, default=12)
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="a server where the run may create and drop a database of its own",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--no-readme", action="store_true", help="do not touch bench/README.md")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.warmup = 2.0, 0.5
    for tool in ("wrk", "hey"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} is not installed: run bench/ensure-tools")

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as work:
        options = Options(
            seconds=args.seconds,
            warmup=args.warmup,
            bcrypt_rounds=args.bcrypt_rounds,
            databases=args.databases.split(","),
            postgres_url=args.postgres_url,
            work=Path(work),
        )
        suite = Suite(options)
        suite.run()
    elapsed = time.monotonic() - started
    command = " ".join(["bench/run.py", *sys.argv[1:]])
    text = report(suite.figures, suite.notes, command, elapsed)
    print()
    print(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(f) for f in suite.figures], indent=1))
    if not args.no_readme:
        write_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

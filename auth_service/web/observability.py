"""JSON logs that carry the request id, the access log, and the Prometheus metrics."""

import asyncio
import json
import logging
import os
import sys
import time
import traceback
from contextvars import ContextVar
from json.encoder import encode_basestring_ascii as _json_string
from typing import IO, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)
# `*_created` series double the output and nobody reads them. (prometheus_client leaves
# these two functions unannotated.)
disable_created_metrics()  # type: ignore[no-untyped-call]


ACCESS_LOGGER = "auth_service.access"


class _Timestamps:
    """UTC timestamps with milliseconds; strftime, which costs more than the rest of an
    access line, runs once per second."""

    def __init__(self) -> None:
        self._second, self._second_text = -1, ""

    def __call__(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second, self._second_text = second, text
        return f"{self._second_text}.{int((created - second) * 1000):03d}Z"


class JSONFormatter(logging.Formatter):
    """One JSON object per line; `extra={...}` fields are included as keys."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
    _DROPPED = frozenset({"color_message"})  # uvicorn's terminal-coloured duplicate

    def __init__(self) -> None:
        super().__init__()
        self._timestamp = _Timestamps()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        request_id = request_id_var.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in self._STANDARD and key not in self._DROPPED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = "".join(traceback.format_exception(*record.exc_info)).strip()
        return json.dumps(entry, default=str)


def logging_config(level: str) -> dict[str, Any]:
    """A dictConfig for the service and uvicorn (every worker applies it)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JSONFormatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "uvicorn": {"level": level},
            "uvicorn.error": {"level": level},
            # We log each request ourselves, with its id and without the query string.
            "uvicorn.access": {"level": "WARNING"},
            "alembic.runtime.plugins": {"level": "WARNING"},
            # aiosqlite logs every statement with its parameters (hashes, emails) at DEBUG.
            "aiosqlite": {"level": "WARNING"},
        },
    }


class AccessLog:
    """One JSON line per request, recorded as the request ends and written after it.

    `record` only keeps the request's figures; the lines of every request that ended in one
    turn of the event loop are then formatted and written to stderr in one write, after
    their answers went out. Through the logging module (a LogRecord, the handler's lock, a
    Formatter building a dict for `json.dumps`, a write and flush per line) the access line
    cost more than the rest of a request to `/health/live`. The line has the shape of every
    other log line (`JSONFormatter`'s keys), and the level of the `auth_service.access`
    logger (`AUTH_LOG_LEVEL`) still decides whether it is written.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream  # None: sys.stderr as it is when the lines are written
        self._logger = logging.getLogger(ACCESS_LOGGER)
        self._timestamp = _Timestamps()
        self._pending: list[tuple[float, str, str, int, float, str, str, str | None]] = []

    def record(
        self,
        method: str,
        path: str,
        status: int,
        seconds: float,
        *,
        route: str,
        request_id: str,
        client_request_id: str | None,
    ) -> None:
        if not self._logger.isEnabledFor(logging.INFO):  # cached by the logging module
            return
        entry = (time.time(), method, path, status, seconds, route, request_id, client_request_id)
        self._pending.append(entry)
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:  # no event loop to write it later
                self.flush()

    def flush(self) -> None:
        """Write what has been recorded (also called when the app stops)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        lines = []
        for created, method, path, status, seconds, route, request_id, client_id in pending:
            # json.dumps of the same dict gives these bytes; the strings a client chose
            # (the path) are escaped as JSON, so a line cannot be split or forged.
            line = (
                f'{{"ts": "{self._timestamp(created)}", "level": "INFO", '
                f'"logger": "{ACCESS_LOGGER}", '
                f'"msg": {_json_string(f"{method} {path} {status}")}, '
                f'"request_id": "{request_id}", "status": {status}, '
                f'"duration_ms": {round(seconds * 1000, 2)!r}, "route": {_json_string(route)}'
            )
            if client_id is not None:  # of the safe form: letters, digits, . _ -
                line += f', "client_request_id": "{client_id}"'
            lines.append(line + "}\n")
        stream = self.stream or sys.stderr
        try:
            stream.write("".join(lines))
            stream.flush()
        except (OSError, ValueError):  # a closed or broken stderr must not fail requests
            pass


class Metrics:
    """The service's Prometheus metrics, on a registry of their own (one per app)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "auth_http_requests_total",
            "HTTP requests by route template, method and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "auth_http_request_duration_seconds",
            "HTTP request latency by route template.",
            ["method", "route"],
            registry=self.registry,
        )
        self.logins = Counter(
            "auth_logins_total",
            "Password grant attempts by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.token_requests = Counter(
            "auth_token_requests_total",
            "Token endpoint answers by grant type (`none`: unsupported or missing) and outcome.",
            ["grant_type", "outcome"],
            registry=self.registry,
        )

        # The labelled children, looked up once per label set (a bounded set: route
        # templates, methods, status codes) instead of on every request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def count_token_request(self, grant_type: str | None, outcome: str) -> None:
        """One answer of the token endpoint: `outcome` is success, an RFC 6749 §5.2 error
        code or busy; `grant_type` one the endpoint supports, or None."""
        self.token_requests.labels(grant_type or "none", outcome).inc()
        if grant_type == "password":
            self.logins.labels(outcome).inc()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        children = self._children.get((method, route, status))
        if children is None:
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[(method, route, status)] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            # `serve --workers N`: every worker writes its samples to files; add them up.
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

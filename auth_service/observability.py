"""JSON logs that carry the request id, and the Prometheus metrics."""

import json
import logging
import os
import time
import traceback
from contextvars import ContextVar
from typing import Any

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


class JSONFormatter(logging.Formatter):
    """One JSON object per line; `extra={...}` fields are included as keys."""

    _STANDARD = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}
    _DROPPED = frozenset({"color_message"})  # uvicorn's terminal-coloured duplicate

    def __init__(self) -> None:
        super().__init__()
        self._second, self._second_text = -1, ""

    def _timestamp(self, record: logging.LogRecord) -> str:
        # Formatting a time costs more than the rest of an access line: once per second.
        second = int(record.created)
        if second != self._second:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second, self._second_text = second, text
        return f"{self._second_text}.{int(record.msecs):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": self._timestamp(record),
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

        # The labelled children, looked up once per label set (a bounded set: route
        # templates, methods, status codes) instead of on every request.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

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

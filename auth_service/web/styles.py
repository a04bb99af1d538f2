"""Error style per route: a router declares once how its errors are answered.

`router(ErrorStyle.OAUTH, ...)` is an `APIRouter` whose routes carry that style; a plain
`APIRouter`'s routes answer in the API style. Once a request is routed, its route (which
FastAPI puts in `scope["route"]`, for a wrong method too) says the style. An answer built
before or without routing (no route, a body too large, the JSON 500, the server's own 503
and 408) takes the style of the route whose path template matches the path, from a table
built from the app's routes on first use; a path no styled route matches is API.
"""

import re
from collections.abc import Sequence
from functools import cached_property
from typing import Any, ClassVar

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute
from starlette.types import Scope

from auth_service.errors import Answer, ErrorStyle, ServiceError
from auth_service.web.pages import Pages

# Where the app's lifespan publishes its `ErrorStyles` for the server (`web/server.py`),
# which answers some requests before or without the app (ASGI lifespan state).
LIFESPAN_KEY = "auth_service.error_styles"


class StyledRoute(APIRoute):
    """A path operation that knows how its errors are answered."""

    error_style: ClassVar[ErrorStyle] = ErrorStyle.API


_ROUTE_CLASSES: dict[ErrorStyle, type[StyledRoute]] = {
    style: type(f"{style.name.title()}Route", (StyledRoute,), {"error_style": style})
    for style in ErrorStyle
}


def router(style: ErrorStyle, **options: Any) -> APIRouter:
    """An `APIRouter` (with `options`) whose every route answers its errors in `style`."""
    return APIRouter(route_class=_ROUTE_CLASSES[style], **options)


def style_of(route: object) -> ErrorStyle:
    """A route's error style: its own when it declares one, else API."""
    return getattr(route, "error_style", ErrorStyle.API)


class ErrorStyles:
    """Which style answers a request, and the answer in it (a page rendered by `pages`)."""

    def __init__(self, routes: Sequence[BaseRoute], pages: Pages) -> None:
        self._routes = routes  # the app's own list: routes added after this still count
        self.pages = pages

    @cached_property
    def _table(self) -> tuple[tuple[re.Pattern[str], ErrorStyle], ...]:
        """The path templates of the routes not in the API style, in the app's order (the
        order Starlette matches them in); built on first use, when every route is in."""
        return tuple(
            (route.path_regex, route.error_style)
            for route in self._routes
            if isinstance(route, StyledRoute) and route.error_style is not ErrorStyle.API
        )

    def style(self, scope: Scope) -> ErrorStyle:
        route = scope.get("route")
        if route is not None:
            return style_of(route)
        path = scope.get("path", "")
        for pattern, style in self._table:
            if pattern.match(path):
                return style
        return ErrorStyle.API

    def answer(self, error: ServiceError, scope: Scope) -> Answer:
        """`error` as the request in `scope` is answered: on the wire, or its page."""
        answer = error.answer(self.style(scope))
        return answer if isinstance(answer, Answer) else self.pages.error(answer)

"""HTML pages: the templates of `kit.templates` for routes, the error page, and each
capability's static files.

One `Pages` per app, made in `create_app`: the error styles render the error page with it,
and a route answers a page with its `templates.TemplateResponse(request, "login/x.html",
...)`. A router serves its capability's `static/` folder by adding `static_files("login")`
to its routes (`app.add_routes` takes the mount as it is).
"""

from pathlib import Path

from fastapi.templating import Jinja2Templates
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from auth_service.errors import Answer, ErrorPage
from auth_service.kit.templates import PACKAGE_DIR, environment

ERROR_PAGE = "web/error.html"
STATIC = "static"
HTML = "text/html; charset=utf-8"


class Pages:
    """The app's templates, loaded once (Jinja2 compiles each template on first use)."""

    def __init__(self, root: Path = PACKAGE_DIR) -> None:
        self.templates = Jinja2Templates(env=environment(root))

    def render(self, name: str, **context: object) -> bytes:
        return self.templates.env.get_template(name).render(**context).encode()

    def error(self, page: ErrorPage) -> Answer:
        """An error as the page a person in a browser is shown (the HTML error style)."""
        return Answer(page.status, self.render(ERROR_PAGE, page=page), page.headers, HTML)


def static_files(capability: str, *, root: Path = PACKAGE_DIR) -> Mount:
    """`auth_service/<capability>/static/` served at `/<capability>/static/`, named
    `<capability>:static` for `url_for`; a missing folder fails at start-up, not per request."""
    return Mount(
        f"/{capability}/{STATIC}",
        app=StaticFiles(directory=root / capability / STATIC),
        name=f"{capability}:{STATIC}",
    )

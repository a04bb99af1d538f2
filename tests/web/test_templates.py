"""Templates and static files live in their capability's folder (`kit/templates.py`): named
`<capability>/<file>`, escaped unless plain text, served and packed with the code."""

from pathlib import Path

import httpx
import jinja2
import pytest
from fastapi import APIRouter

from auth_service.app import add_routes, create_app
from auth_service.errors import ErrorPage
from auth_service.kit.templates import PACKAGE_DIR, environment
from auth_service.web.pages import Pages, static_files
from tests.helpers.app import make_settings


@pytest.fixture
def capabilities(tmp_path: Path) -> Path:
    """A package root with two capabilities' templates and one's static files."""
    (tmp_path / "login" / "templates").mkdir(parents=True)
    (tmp_path / "login" / "templates" / "hello.html").write_text("<p>Hello {{ name }}</p>")
    (tmp_path / "login" / "static").mkdir()
    (tmp_path / "login" / "static" / "site.css").write_text("body { margin: 0 }\n")
    (tmp_path / "mail" / "templates").mkdir(parents=True)
    (tmp_path / "mail" / "templates" / "hello.txt").write_text("Hello {{ name }}")
    (tmp_path / "mail" / "templates" / "hello.html").write_text("<b>{{ name }}</b>")
    (tmp_path / "kit").mkdir()  # a folder without templates is no capability of theirs
    return tmp_path


def test_a_template_is_named_by_its_capability(capabilities: Path) -> None:
    env = environment(capabilities)

    assert sorted(env.list_templates()) == ["login/hello.html", "mail/hello.html", "mail/hello.txt"]
    assert env.get_template("login/hello.html").render(name="Ada") == "<p>Hello Ada</p>"


def test_values_are_escaped_except_in_plain_text(capabilities: Path) -> None:
    env = environment(capabilities)
    name = "<script>alert(1)</script> & co"

    html = env.get_template("mail/hello.html").render(name=name)
    text = env.get_template("mail/hello.txt").render(name=name)

    assert html == "<b>&lt;script&gt;alert(1)&lt;/script&gt; &amp; co</b>"
    assert text == f"Hello {name}"


def test_a_misspelt_variable_fails_instead_of_rendering_nothing(capabilities: Path) -> None:
    template = environment(capabilities).get_template("login/hello.html")

    with pytest.raises(jinja2.UndefinedError):
        template.render(nmae="Ada")


def test_the_service_s_own_templates_are_found_where_the_package_is() -> None:
    assert "web/error.html" in environment().list_templates()
    assert (PACKAGE_DIR / "web" / "templates" / "error.html").is_file()


def test_the_error_page_escapes_what_it_shows() -> None:
    page = ErrorPage(400, "Bad Request", 'no "<b>" here', headers={"Allow": "GET"})

    answer = Pages().error(page)

    assert answer.status == 400
    assert answer.media_type == "text/html; charset=utf-8"
    assert answer.headers == {"Allow": "GET"}
    assert "<h1>Bad Request</h1>" in answer.body.decode()
    assert "no &#34;&lt;b&gt;&#34; here" in answer.body.decode()
    assert "<b>" not in answer.body.decode()


@pytest.mark.anyio
async def test_a_router_serves_its_capability_s_static_files(
    capabilities: Path, tmp_path: Path
) -> None:
    router = APIRouter()
    router.routes.append(static_files("login", root=capabilities))
    app = create_app(make_settings(f"sqlite:///{tmp_path / 'app.db'}"))
    add_routes(app, router)

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        found = await client.get("/login/static/site.css")
        missing = await client.get("/login/static/none.css")

    assert found.status_code == 200
    assert found.text == "body { margin: 0 }\n"
    assert found.headers["content-type"].startswith("text/css")
    assert missing.status_code == 404
    assert app.url_path_for("login:static", path="site.css") == "/login/static/site.css"


def test_a_capability_without_a_static_folder_fails_when_its_router_is_built(
    capabilities: Path,
) -> None:
    with pytest.raises(RuntimeError, match="does not exist"):
        static_files("mail", root=capabilities)

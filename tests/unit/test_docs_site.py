"""The README is a front page and the docs are a site: the README stays small and its links
resolve, the site builds strictly without fetching anything, and the generated references
cover every setting and command. No app, no database."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from auth_service.cli import _parser
from auth_service.config import Settings

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def _hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "docs" / "hooks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _try_it(text: str) -> str:
    return text.split("```sh\n", 1)[1].split("```", 1)[0]


def test_readme_is_a_front_page_of_at_most_8_kib() -> None:
    assert len(README.read_bytes()) <= 8192


def test_only_the_set_up_command_starts_with_make_test() -> None:
    # `make test` is one of the two set-up commands; no other README line may look like it.
    lines = [line for line in README.read_text().splitlines() if line.startswith("make test")]
    assert len(lines) == 1
    assert re.fullmatch(r"make test\s+#.*", lines[0])


def test_readme_links_resolve_to_files_that_exist() -> None:
    targets = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:", t)]
    assert local, "the README links to the docs"
    assert [t for t in local if t and not (ROOT / t).exists()] == []


def test_getting_started_tries_the_readmes_block() -> None:
    # tests/test_serve.py runs the README's block against a real server; the page shows the same.
    page = (ROOT / "docs" / "getting-started.md").read_text()
    readme = README.read_text().split("Try it:\n\n", 1)[1]
    assert _try_it(page.split("## Try it", 1)[1]) == _try_it(readme)


def test_every_setting_has_a_description() -> None:
    # The configuration reference is generated from these: a field without one is a blank row.
    assert [name for name, f in Settings.model_fields.items() if not f.description] == []


def test_settings_reference_names_every_variable_and_shows_no_secret() -> None:
    hook = _hook("settings_reference")
    text = hook.reference()
    rows = [line for line in text.splitlines() if line.startswith("| `AUTH_")]
    # Each once, in the groups' order (the declaring classes, in Settings' MRO).
    assert sorted(row.split("`")[1] for row in rows) == sorted(
        f"AUTH_{name.upper()}" for name in Settings.model_fields
    )
    secrets = [n for n, f in Settings.model_fields.items() if "SecretStr" in str(f.annotation)]
    assert secrets
    for name in secrets:
        (row,) = [r for r in rows if r.startswith(f"| `AUTH_{name.upper()}`")]
        assert row.split(" | ")[2] == "not set"


def test_settings_reference_groups_fields_by_the_class_that_declares_them() -> None:
    # Settings will be split into a class per capability: the generator must follow as it is.
    class Sessions(BaseSettings):
        """Sessions and refresh tokens.

        More text, not in the heading."""

        session_max_age_seconds: int = Field(default=60, ge=1, description="at most")

    class Keys(BaseSettings):
        """Signing keys."""

        signing_secret: SecretStr = Field(default=SecretStr("x"), description="a secret")

    class Split(Sessions, Keys):
        """Everything."""

        model_config = SettingsConfigDict(env_prefix="AUTH_")
        session_max_age_seconds: int = Field(default=90, description="redeclared here")

    hook = _hook("settings_reference")
    groups = [(heading, [name for name, _ in fields]) for heading, fields in hook.groups(Split)]
    assert groups == [
        ("Everything.", ["session_max_age_seconds"]),
        ("Signing keys.", ["signing_secret"]),
    ]
    text = hook.reference(Split)
    assert "| `AUTH_SIGNING_SECRET` | secret | not set |  | a secret |" in text
    assert "| `AUTH_SESSION_MAX_AGE_SECONDS` | integer | `90` |  | redeclared here |" in text


def test_cli_reference_has_every_command_and_option() -> None:
    text = _hook("cli_reference").reference()
    commands = re.findall(r"^## `([a-z-]+)`$", text, flags=re.MULTILINE)
    assert commands == [
        "serve",
        "migrate",
        "create-admin",
        "create-client",
        "rotate-keys",
        "openapi",
    ]
    for action in _parser()._actions:
        for option in action.option_strings:
            assert option in ("-h", "--help") or f"`{option}`" in text


def test_docs_build_strictly_and_fetch_nothing_from_elsewhere(tmp_path: Path) -> None:
    site = tmp_path / "site"
    built = subprocess.run(  # noqa: S603 (our own mkdocs.yml)
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=120,
        check=False,
    )
    assert built.returncode == 0, built.stderr

    pages = {p.relative_to(site).as_posix(): p.read_text() for p in site.rglob("*.html")}
    assert {"index.html", "reference/configuration.html", "guides/key-rotation.html"} <= set(pages)
    remote = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//")
    assert [name for name, html in pages.items() if remote.search(html)] == []
    # The generated references were filled in, and the snippets included.
    assert "AUTH_HTTP_MAX_CONNECTIONS" in pages["reference/configuration.html"]
    assert "create-client" in pages["reference/cli.html"]
    assert "InvalidGrant" in pages["reference/errors.html"]
    assert "Introspection mode" in pages["guides/protect-a-service.html"]
    assert "--8&lt;--" not in "".join(pages.values())

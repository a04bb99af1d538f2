"""Swagger UI and ReDoc render in a real headless browser, from a real `serve`, with no network.

The documents and pages themselves, in-process: tests/web/test_docs.py.
"""

import html
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers.app import (
    ADMIN_EMAIL,
    ADMIN_PASSWORD,
    BCRYPT_TEST_ROUNDS,
)
from tests.helpers.serve import free_port

pytestmark = pytest.mark.anyio

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    if os.environ.get("CI") == "true":  # .ci/run installs it: a skip there would hide a gap
        pytest.fail("Chromium is required in CI and is missing")
    pytest.skip("no Chromium on this machine (apt-get install chromium)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`auth-service serve` on a loopback port with a fresh SQLite database."""
    port = free_port()
    env = {
        **os.environ,
        "AUTH_DATABASE_URL": f"sqlite:///{tmp_path / 'served.db'}",
        "AUTH_SECRET_KEY": "browser test secret key",
        "AUTH_BCRYPT_ROUNDS": str(BCRYPT_TEST_ROUNDS),
        "AUTH_BOOTSTRAP_ADMIN_EMAIL": ADMIN_EMAIL,
        "AUTH_BOOTSTRAP_ADMIN_PASSWORD": ADMIN_PASSWORD,
    }
    log = (tmp_path / "serve.log").open("wb")
    command = [sys.executable, "-m", "auth_service", "serve", "--host", "127.0.0.1"]
    process = subprocess.Popen(  # noqa: S603 (our own command line)
        [*command, "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(f"{base}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()
            time.sleep(0.1)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _rendered_dom(browser: str, url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran, with every host but loopback unresolvable."""
    result = subprocess.run(  # noqa: S603 (a fixed command line)
        [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--no-default-browser-check",
            f"--user-data-dir={profile}",
            # Offline: a CDN (or any other host) cannot be reached from this page.
            "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
            "--virtual-time-budget=15000",
            "--dump-dom",
            url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def test_swagger_ui_and_redoc_render_in_a_browser_without_network(
    served: str, tmp_path: Path
) -> None:
    browser = _browser()
    document = httpx.get(f"{served}/openapi.json").json()

    swagger = _rendered_dom(browser, f"{served}/docs", tmp_path / "profile-docs")
    redoc = _rendered_dom(browser, f"{served}/redoc", tmp_path / "profile-redoc")

    # Swagger UI built the page from /openapi.json: every path, and the Authorize button.
    assert 'class="swagger-ui"' in swagger, swagger[:2000]
    assert "Failed to load API definition" not in swagger
    assert 'class="btn authorize' in swagger
    for path in document["paths"]:
        assert f'data-path="{path}"' in swagger, path
    # ReDoc too: it shows the operations' descriptions, which only /openapi.json holds.
    assert "Something went wrong" not in redoc
    description = document["paths"]["/oauth2/token"]["post"]["description"]
    assert html.escape(description[:40], quote=False) in redoc, redoc[:2000]
    assert "/admin/users/{user_id}" in redoc

"""`make bench` works: a short run of bench/run.py measures every figure without an error.

A smoke test only (one second per figure, bcrypt at the tests' cost): it proves the servers,
the baselines, the Lua scripts (a refresh grant whose every request presents an unspent
token among them) and the probe work together and that the table is produced.
It asserts nothing about speed; the figures themselves are `make bench`'s.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.app import BCRYPT_TEST_ROUNDS, DATABASES, POSTGRES_URL

ROOT = Path(__file__).resolve().parents[2]
MISSING = [tool for tool in ("wrk", "hey") if shutil.which(tool) is None]

pytestmark = pytest.mark.skipif(
    bool(MISSING) and os.environ.get("CI") != "true",
    reason=f"{', '.join(MISSING)} not installed (bench/ensure-tools installs them)",
)


def test_a_short_run_measures_every_figure_without_errors(tmp_path: Path) -> None:
    databases = "sqlite,postgresql" if "postgresql" in DATABASES else "sqlite"
    report = tmp_path / "figures.json"
    readme = (ROOT / "bench" / "README.md").read_text()

    done = subprocess.run(  # noqa: S603
        [sys.executable, str(ROOT / "bench" / "run.py"), "--seconds", "1", "--warmup", "0"]
        + ["--bcrypt-rounds", str(BCRYPT_TEST_ROUNDS), "--databases", databases]
        + ["--postgres-url", POSTGRES_URL, "--json", str(report), "--no-readme"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    figures = {figure["name"]: figure for figure in json.loads(report.read_text())}
    expected = {
        "FastAPI hello world (framework ceiling)",
        "GET /health/live",
        "GET /.well-known/jwks.json",
        "GET /.well-known/openid-configuration",
        "GET /users/me, SQLite",
        "POST /oauth2/introspect, SQLite",
        "client credentials grant, SQLite",
        "refresh grant, SQLite",
        "one SQLite primary-key SELECT (database ceiling)",
        "password grant",
        "GET /users/me at 100/s during the grant",
        "password grant meanwhile",
        "FastAPI hello world, 2 workers",
        "GET /users/me, SQLite, 2 workers",
        "downstream service's own hello world",
        "downstream GET with verifier.require(), local",
    }
    if "postgresql" in databases:
        expected |= {
            "GET /users/me, PostgreSQL",
            "POST /oauth2/introspect, PostgreSQL",
            "client credentials grant, PostgreSQL",
            "refresh grant, PostgreSQL",
            "one PostgreSQL primary-key SELECT (database ceiling)",
        }
    assert expected <= set(figures), sorted(figures)
    for name, figure in figures.items():
        assert figure["errors"] == 0, (name, figure)
        assert figure["rate"] > 0, (name, figure)
    for name in expected:  # every server's workers were found and read
        assert figures[name]["rss_mib"] > 0, name
    assert "| figure | req/s |" in done.stdout
    assert (ROOT / "bench" / "README.md").read_text() == readme  # --no-readme left it alone

"""Every query is a repository's (ARCHITECTURE.md): services, routers and the protocol call
their repositories and never the database session themselves."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "auth_service"
# What a database session does that only a repository (or kit's own mechanism) may do.
QUERIES = {"exec", "execute", "get", "add", "add_all", "delete", "flush", "refresh", "scalar"}


def _queries(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in QUERIES
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "db"
        ):
            found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} db.{node.func.attr}")
    return found


def test_no_query_outside_the_repositories() -> None:
    modules = [
        *PACKAGE.glob("*/service.py"),
        *PACKAGE.glob("*/router.py"),
        *PACKAGE.glob("oauth/**/*.py"),
        PACKAGE / "startup.py",
        PACKAGE / "cli.py",
    ]
    assert len(modules) > 10
    assert [query for path in sorted(modules) for query in _queries(path)] == []

"""MkDocs hook: the table of error classes, generated from `auth_service.errors`.

A page holding `<!-- errors-reference -->` gets one row per class of the error family (every
subclass of the module's root error, depth first, in the order they are defined): its HTTP
status, the `error` code it declares for an RFC 6749 §5.2 body (the classes without one use
their parent's), its RFC 6750 challenge code, and the first line of its docstring.
"""

import inspect
from typing import Any

from auth_service import errors

MARKER = "<!-- errors-reference -->"
ROOT = errors.ServiceError


def _family(cls: type[Any]) -> list[type[Any]]:
    found = [cls]
    for sub in cls.__subclasses__():
        if sub.__module__ == errors.__name__:
            found += _family(sub)
    return found


def _status(cls: type[Any]) -> str:
    if "status" in inspect.signature(cls.__init__).parameters:
        return "set when raised"
    return str(cls.status_code)


def _summary(cls: type[Any]) -> str:
    own = cls.__dict__.get("__doc__")
    return " ".join((own or "").split("\n\n", 1)[0].split()).replace("|", "\\|")


def reference() -> str:
    rows = [
        "| class | status | `error` in an OAuth body | `Bearer` challenge | what it is |",
        "|---|---|---|---|---|",
    ]
    for cls in _family(ROOT):
        challenge = getattr(cls, "error", None) if issubclass(cls, errors.BearerError) else None
        declared = "oauth_error" in cls.__dict__
        rows.append(
            f"| `{cls.__name__}` | {_status(cls)} | {f'`{cls.oauth_error}`' if declared else ''} "
            f"| {f'`{challenge}`' if challenge else ''} | {_summary(cls)} |"
        )
    return "\n".join(rows)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())

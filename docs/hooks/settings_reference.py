"""MkDocs hook: the configuration reference, generated from `auth_service.config.Settings`.

A page holding the line `<!-- settings-reference -->` gets, in its place, one table per class
that declares settings (walking `Settings.__mro__`, each class's docstring as the heading):
each field's `AUTH_*` name, type, default (a secret's as "not set"), range and description.
Nothing is written by hand, so the page cannot drift from the code.
"""

import inspect
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from auth_service.config import Settings

MARKER = "<!-- settings-reference -->"


def _type(annotation: Any) -> str:
    """The setting's type in words, as an environment variable spells it."""
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(f"`{value}`" for value in typing.get_args(annotation))
    if origin in (types.UnionType, typing.Union):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return " or ".join(_type(arg) for arg in inner)
    if origin is list:
        return "list (comma-separated, or a JSON list)"
    names = {
        bool: "boolean (`true`, `false`)",
        int: "integer",
        float: "number",
        str: "string",
        Path: "file path",
        SecretStr: "secret",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _default(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return "computed at start-up"
    value = field.default
    if value is None or value is PydanticUndefined:
        return "not set"
    if isinstance(value, SecretStr):
        return "not set"  # a secret's default is never shown
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, list):
        return ", ".join(f"`{item}`" for item in value) if value else "none"
    return f"`{value}`"


def _range(field: FieldInfo) -> str:
    bounds = []
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            bounds.append(f"≥ {item.ge}")
        elif isinstance(item, annotated_types.Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, annotated_types.Le):
            bounds.append(f"≤ {item.le}")
        elif isinstance(item, annotated_types.Lt):
            bounds.append(f"< {item.lt}")
        elif isinstance(item, annotated_types.MinLen):
            bounds.append(f"at least {item.min_length} entries")
    return ", ".join(bounds)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def groups(settings: type[BaseModel] = Settings) -> list[tuple[str, list[tuple[str, FieldInfo]]]]:
    """(heading, [(field name, field)]) for each class in the MRO that declares fields, the
    most derived first; a field belongs to the first class that declares it."""
    seen: set[str] = set()
    result = []
    for cls in settings.__mro__:
        declared = [
            name
            for name in inspect.get_annotations(cls)
            if name in settings.model_fields and name not in seen
        ]
        if not declared:
            continue
        seen.update(declared)
        heading = (inspect.getdoc(cls) or cls.__name__).split("\n\n", 1)[0]
        result.append(
            (" ".join(heading.split()), [(n, settings.model_fields[n]) for n in declared])
        )
    return result


def variable(name: str, settings: type[BaseModel] = Settings) -> str:
    prefix = str(settings.model_config.get("env_prefix", ""))
    return f"{prefix}{name}".upper()


def reference(settings: type[BaseModel] = Settings) -> str:
    """The reference as Markdown: a section and a table per declaring class."""
    parts = []
    for heading, fields in groups(settings):
        rows = [
            "| variable | type | default | range | description |",
            "|---|---|---|---|---|",
        ]
        for name, field in fields:
            rows.append(
                f"| `{variable(name, settings)}` | {_cell(_type(field.annotation))} "
                f"| {_cell(_default(field))} | {_cell(_range(field))} "
                f"| {_cell(field.description or '')} |"
            )
        parts.append(f"## {heading}\n\n" + "\n".join(rows))
    return "\n\n".join(parts)


def on_page_markdown(markdown: str, **_: Any) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, reference())

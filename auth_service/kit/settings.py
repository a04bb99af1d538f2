"""What settings are made of: list values written as `a,b` or as JSON."""

import json
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import NoDecode


def split_list(value: object) -> object:
    """Accept `a,b` and JSON-style `["a", "b"]` for list settings."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            return json.loads(text)
        return [item.strip() for item in text.split(",") if item.strip()]
    return value


# A list of strings from one variable: `a,b` or `["a", "b"]` (pydantic-settings' own JSON
# decoding is off, NoDecode, so both spellings reach `split_list`).
StrList = Annotated[list[str], NoDecode, BeforeValidator(split_list)]

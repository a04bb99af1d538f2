"""What request bodies are made of: strict inputs and the field types every form shares."""

import re
from typing import Annotated

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

# A hard ceiling, far above the policy's maximum: anything longer is refused while parsing,
# before any hashing or pattern matching; the policy then explains its own limit.
PASSWORD_HARD_LIMIT = 1024

Password = Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_HARD_LIMIT)]
# Printable text only, 422 otherwise: C0 and C1 controls and DEL (NUL above all: PostgreSQL
# text refuses it), and the bidirectional embeddings, overrides, isolates and marks
# (U+202A-E, U+2066-9, U+200E/F, U+061C) that make a name display as something else
# (CVE-2021-42574, "Trojan Source").
_CONTROLS = r"\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
PRINTABLE = f"^[^{_CONTROLS}]*$"
_UNPRINTABLE = re.compile(f"[{_CONTROLS}]")


def _printable_as_sent(value: object) -> object:
    # Before stripping: Unicode counts U+0085 (NEL, a C1 control) as white space, so the
    # strip would otherwise turn "\x85bob" into "bob" instead of a 422.
    if isinstance(value, str) and _UNPRINTABLE.search(value):
        raise PydanticCustomError("string_pattern_mismatch", "control or bidi character")
    return value


Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=PRINTABLE),
    BeforeValidator(_printable_as_sent),
]
Role = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.:-]{0,63}$")]


def _integral(value: object) -> object:
    return int(value) if type(value) is float and value.is_integer() else value


# JSON Schema's integer: a number with no fraction, which 60.0 is too; still never a string
# or a boolean (strict), and 1.5 is refused.
Integer = Annotated[int, BeforeValidator(_integral)]


class Input(BaseModel):
    """A request body: unknown fields refused, and no coercion (strict)."""

    # Strict: a flag is `true` or `false`, never 1 or "yes", as the OpenAPI document says.
    model_config = ConfigDict(extra="forbid", strict=True)

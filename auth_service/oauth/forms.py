"""`application/x-www-form-urlencoded` request bodies (RFC 6749 Appendix B), strictly UTF-8."""

import re
from urllib.parse import unquote_to_bytes

from auth_service.errors import InvalidRequest

Form = dict[str, list[str]]
FORM_TYPE = "application/x-www-form-urlencoded"
# A `%` that does not start a two-digit hex escape (WHATWG URL: such bytes are not decoded).
_BROKEN_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_CHARSET = re.compile(r"charset\s*=\s*\"?([^\";\s]*)", flags=re.IGNORECASE)


def _decode_part(raw: bytes) -> str:
    if _BROKEN_ESCAPE.search(raw):
        raise InvalidRequest("The form body has a malformed percent-escape.")
    try:
        return unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("The form body is not UTF-8.") from None


def parse(content_type: str, body: bytes) -> Form:
    """The form of a request with this `Content-Type` header and body.

    General-purpose parsers read raw bytes as Latin-1 and turn undecodable escapes into
    U+FFFD, so different bytes become one password. Here each name and value must be UTF-8
    after percent-decoding, or the request is refused: one password has one spelling.
    """
    media_type, _, parameters = content_type.partition(";")
    if media_type.strip().lower() != FORM_TYPE:
        raise InvalidRequest(f"The body must be {FORM_TYPE}.")
    charset = _CHARSET.search(parameters)
    if charset and charset.group(1).lower() not in ("utf-8", "utf8"):
        raise InvalidRequest("The form body must be UTF-8.")
    form: Form = {}
    for part in body.split(b"&"):
        if not part:
            continue
        name, _, value = part.partition(b"=")
        form.setdefault(_decode_part(name), []).append(_decode_part(value))
    return form


def optional(form: Form, name: str) -> str | None:
    """The parameter's value; None when it is absent or empty (RFC 6749 §3.1)."""
    values = form.get(name, [])
    # RFC 6749 §3.2: parameters must not be included more than once.
    if len(values) > 1:
        raise InvalidRequest(f"The parameter {name} is repeated.")
    return (values[0] or None) if values else None


def required(form: Form, name: str) -> str:
    value = optional(form, name)
    if value is None:
        raise InvalidRequest(f"The parameter {name} is missing.")
    return value

"""JSON documents served as they are: serialized once, with their entity tag (RFC 9110
§8.8.3), so a conditional GET costs a comparison."""

import hashlib
import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class JSONDocument:
    """A JSON document served as is: its bytes and their entity tag, computed once."""

    body: bytes
    etag: str

    @classmethod
    def of(cls, content: Any) -> "JSONDocument":
        body = json.dumps(content, separators=(",", ":")).encode()
        return cls(body=body, etag=f'"{hashlib.sha256(body).hexdigest()[:32]}"')

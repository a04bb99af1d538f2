"""The error bodies every API route shares."""

from pydantic import (
    BaseModel,
    Field,
)


class ErrorResponse(BaseModel):
    detail: str


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="Where: `body`, `query` or `path`, then the field.")
    msg: str
    type: str


class UnprocessableResponse(BaseModel):
    """Every 422: a request that parsed but says something the service refuses."""

    detail: str = Field(description="What was refused, naming the field.")
    rule: str | None = Field(
        default=None, description="The password policy's rule, when it refused the password."
    )
    errors: list[FieldError] | None = Field(
        default=None, description="Each invalid field, when the request failed validation."
    )

"""Every error renders its own answer, and the body's shape depends on the route's error style
alone: RFC 6749 §5.2 on the OAuth endpoints (never cached), `{"detail": ...}` on the API.
The redirect and HTML styles are in test_error_styles.py."""

import json

import pytest

from auth_service import errors

EXAMPLES: list[errors.ServiceError] = [
    errors.InvalidRequest("a form field is missing"),
    errors.InvalidClient("unknown client"),
    errors.InvalidGrant("wrong password"),
    errors.UnsupportedGrantType("only password"),
    errors.InvalidScope("not grantable"),
    errors.NotFound("no such user"),
    errors.EmailTaken(),
    errors.PasswordRejected("too_short", "too short"),
    errors.InvalidInput([{"loc": ["body", "email"], "msg": "not an email", "type": "value"}]),
    errors.HTTPError(413, "too large"),
    errors.HTTPError(405, "no such method", headers={"Allow": "POST"}),
    errors.RetryLater("busy", status=429, retry_after=1),
    errors.RetryLater("database down", status=503, retry_after=5),
]


@pytest.mark.parametrize("error", EXAMPLES, ids=lambda e: f"{type(e).__name__}-{e.status_code}")
def test_on_the_token_endpoint_every_error_is_a_token_error_response(
    error: errors.ServiceError,
) -> None:
    answer = error.answer(errors.ErrorStyle.OAUTH)

    assert answer.status == error.status_code
    assert json.loads(answer.body) == {
        "error": error.oauth_error,
        "error_description": error.description,
    }
    assert answer.headers["Cache-Control"] == "no-store"
    for name, value in error.headers().items():  # a Retry-After or an Allow stays
        assert answer.headers[name] == value


@pytest.mark.parametrize(
    "error",
    [e for e in EXAMPLES if not isinstance(e, errors.OAuth2Error)],
    ids=lambda e: f"{type(e).__name__}-{e.status_code}",
)
def test_elsewhere_an_error_is_its_detail(error: errors.ServiceError) -> None:
    answer = error.answer(errors.ErrorStyle.API)

    assert json.loads(answer.body)["detail"] == error.description
    assert "Cache-Control" not in answer.headers


def test_an_oauth2_error_keeps_its_shape_wherever_it_is_raised() -> None:
    answer = errors.InvalidClient("unknown client").answer(errors.ErrorStyle.API)

    assert json.loads(answer.body) == {
        "error": "invalid_client",
        "error_description": "unknown client",
    }
    assert answer.headers["WWW-Authenticate"] == 'Basic realm="auth-service"'  # RFC 6749 §5.2


def test_the_raw_headers_carry_the_body_type_and_length() -> None:
    answer = errors.RetryLater("busy", status=503, retry_after=1).answer(errors.ErrorStyle.API)

    raw = dict(answer.raw_headers())
    assert raw[b"content-type"] == b"application/json"
    assert raw[b"content-length"] == b"%d" % len(answer.body)
    assert raw[b"retry-after"] == b"1"


def test_a_page_is_titled_by_its_status_s_phrase() -> None:
    assert errors.NotFound("no such user").page().title == "Not Found"
    assert errors.HTTPError(499, "closed early").page().title == "Error"  # no phrase for 499

"""The OAuth 2.0 endpoints' protocol (RFC 6749): forms, client credentials, grants.

Framework-free: a router reads the request (its body, content type, `Authorization` header
and peer) and hands those over; what comes back is the response body, and what goes wrong
is an `errors.OAuth2Error` that renders its own RFC 6749 §5.2 answer.
"""

"""What the verifier raises: three families, because a caller answers each differently.

`InvalidTokenError`: the token is bad (401). `VerificationUnavailableError`: the token cannot
be verified now, for want of the auth service (503, retry later). `IssuerMismatchError`: this
service is configured with another issuer than the auth service names (500: an operator must
fix it, and no retry will). `VerificationError` is their base, for a caller that refuses the
token whatever the reason.
"""


class VerificationError(Exception):
    """The token was not verified; the subclass says whose problem that is."""


class InvalidTokenError(VerificationError):
    """The token is not acceptable; the message is safe to show to its bearer."""


class VerificationUnavailableError(VerificationError):
    """The token could not be verified now, for want of the auth service (retry later).

    Not a verdict on the token: `require` answers it with 503 and `Retry-After`, never 401.
    """


class KeysUnavailableError(VerificationUnavailableError):
    """The keys to verify the token with are not at hand now (retry later): no key set has
    been fetched yet, or the token names a key the set lacks and no fetch since the token
    came could look for it (the refetch interval had not passed, or the fetch failed).

    A failed refetch keeps the last good set in use for the keys it holds.
    """


class IntrospectionUnavailableError(VerificationUnavailableError):
    """Introspection mode: the auth service did not answer whether the token is active
    (down, too slow, an error, or it refused our client credentials); the token is refused
    for now, never taken as valid."""


class IssuerMismatchError(VerificationError):
    """The auth service's metadata names another issuer than the one this verifier was given
    (OpenID Connect Discovery 1.0 §4.3: they must be identical), so none of its keys or
    endpoints are trusted. A misconfiguration of this service, neither the token's fault nor
    transient: `require` answers 500, and the message names both URLs.

    The verifier's `issuer` must be the auth service's `AUTH_ISSUER` exactly, not the address
    it listens on (`http://localhost:8000` and `http://127.0.0.1:8000` are two issuers).
    """

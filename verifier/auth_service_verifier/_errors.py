"""The one exception the framework-free API raises, and its subclasses for "try again later"."""


class InvalidTokenError(Exception):
    """The token is not acceptable; the message is safe to show to its bearer."""


class VerificationUnavailableError(InvalidTokenError):
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

"""The one exception the framework-free API raises, and its one subclass."""


class InvalidTokenError(Exception):
    """The token is not acceptable; the message is safe to show to its bearer."""


class KeysUnavailableError(InvalidTokenError):
    """No key set has been fetched yet, so no token can be verified now (retry later).

    Once one key set has been fetched this is never raised: a failed refetch keeps the
    last good set in use.
    """

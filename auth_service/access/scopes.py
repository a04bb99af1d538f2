"""OAuth scopes (RFC 6749 §3.3): the ones this service grants, who may have them, and the one
policy every grant (and the consent screen, next) decides by: what a token request may be
granted through its client, for its user, and on a refresh."""

import re
from enum import StrEnum

from auth_service.errors import InvalidScope
from auth_service.models import ADMIN_ROLE


class Scope(StrEnum):
    OPENID = "openid"
    PROFILE = "profile"
    EMAIL = "email"
    ACCOUNT = "account"
    ADMIN_USERS = "admin:users"
    ADMIN_ROLES = "admin:roles"
    ADMIN_CLIENTS = "admin:clients"
    ADMIN_KEYS = "admin:keys"
    INTROSPECT = "introspect"


DESCRIPTIONS: dict[str, str] = {
    Scope.OPENID: "Sign in (OpenID Connect): your user id.",
    Scope.PROFILE: "Your name.",
    Scope.EMAIL: "Your email address and whether it is verified.",
    Scope.ACCOUNT: "Read and manage your own account.",
    Scope.ADMIN_USERS: "Manage all users (role admin).",
    Scope.ADMIN_ROLES: "Grant and remove roles; change admin accounts (role admin).",
    Scope.ADMIN_CLIENTS: "Manage OAuth clients (role admin).",
    Scope.ADMIN_KEYS: "Rotate and revoke the token signing keys (role admin).",
    Scope.INTROSPECT: "Introspect tokens (RFC 7662); for service clients only.",
}

# Scopes a role unlocks on top of the ones every user may have.
_ROLE_SCOPES: dict[str, frozenset[Scope]] = {
    ADMIN_ROLE: frozenset(
        {Scope.ADMIN_USERS, Scope.ADMIN_ROLES, Scope.ADMIN_CLIENTS, Scope.ADMIN_KEYS}
    )
}
_USER_SCOPES = frozenset({Scope.OPENID, Scope.PROFILE, Scope.EMAIL, Scope.ACCOUNT})
# Scopes that act for a user: never in a token a service client gets for itself (RFC 6749
# §4.4), where there is no user to hold them.
USER_SCOPES = _USER_SCOPES.union(*_ROLE_SCOPES.values())
# What Swagger UI's password flow offers: what a user may be granted.
USER_SCOPE_DESCRIPTIONS = {
    scope: text for scope, text in DESCRIPTIONS.items() if scope in USER_SCOPES
}
# Scopes only a service client may hold for itself; every other scope not in USER_SCOPES is
# one an admin named for services (`orders:read`), granted as a client's list allows.
CLIENT_ONLY_SCOPES = frozenset({Scope.INTROSPECT})


def allowed_for(roles: list[str]) -> frozenset[Scope]:
    allowed = set(_USER_SCOPES)
    for role in roles:
        allowed |= _ROLE_SCOPES.get(role, frozenset())
    return frozenset(allowed)


def format_scope(scopes: set[str] | frozenset[str]) -> str:
    """RFC 6749 §3.3: a space-delimited list (sorted, so it reads the same every time)."""
    return " ".join(sorted(scopes))


# RFC 6749 §3.3: scope = scope-token *( SP scope-token ), scope-token = 1*NQCHAR (printable
# ASCII but SP, '"' and backslash). One space exactly: no tab, NBSP or other whitespace.
_SCOPE = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+(?: [\x21\x23-\x5B\x5D-\x7E]+)*")


def split_scope(scope: str) -> set[str]:
    """The scope-tokens of an RFC 6749 §3.3 scope string; ValueError when it is not one."""
    if not _SCOPE.fullmatch(scope):
        raise ValueError("not an RFC 6749 scope")
    return set(scope.split(" "))


# --- the policy: what a token request may be granted (RFC 6749 §3.3, §4.4, §6) ----------


def parse_scope(requested: str | None) -> set[str] | None:
    """The requested scopes (None when none were asked for); RFC 6749 §3.3 syntax only:
    which of them may be granted is the grant's to decide, by its client and user."""
    if not requested:  # RFC 6749 §3.1: a parameter without a value counts as omitted
        return None
    try:
        return split_scope(requested)
    except ValueError:
        raise InvalidScope(
            "The scope must be scope names separated by single spaces (RFC 6749 §3.3)."
        ) from None


def within_client(requested: set[str] | None, client_scopes: frozenset[str]) -> None:
    """Refuse a scope the client may not ask for (`invalid_scope`, RFC 6749 §5.2)."""
    unknown = (requested or set()) - client_scopes
    if unknown:
        raise InvalidScope(f"Unknown scope for this client: {format_scope(unknown)}.")


def _for_user(scopes: set[str] | frozenset[str], roles: list[str]) -> set[str]:
    """Those of `scopes` a user with `roles` may hold: built-in user scopes by role, and the
    scopes an admin made for services (`orders:read`), which the client's list governs."""
    allowed = {str(s) for s in allowed_for(roles)}
    return {
        s for s in scopes if s in allowed or (s not in USER_SCOPES and s not in CLIENT_ONLY_SCOPES)
    }


def grant_scopes(
    requested: set[str] | None, *, roles: list[str], client_scopes: frozenset[str]
) -> set[str]:
    """RFC 6749 §3.3: the scopes to grant a user through a client.

    The grant has refused scopes outside the client's list (`within_client`) before the
    password work; one the user may not have is left out (the response's `scope` says what
    was granted); nothing requested means everything allowed.
    """
    granted = _for_user(client_scopes if requested is None else requested, roles)
    if not granted:
        raise InvalidScope("None of the requested scopes can be granted to this user.")
    return granted


def service_scopes(requested: set[str] | None, *, client_scopes: frozenset[str]) -> set[str]:
    """RFC 6749 §4.4: the scopes a client gets for itself: its own list, never a scope that
    acts for a user (there is none)."""
    own = client_scopes - USER_SCOPES
    within_client(requested, own)
    granted = set(own if requested is None else requested)
    if not granted:
        raise InvalidScope("This client has no scopes it may be granted for itself.")
    return granted


def within_granted(requested: set[str] | None, granted: str) -> set[str]:
    """The scopes of a refresh token's grant (`granted`); `invalid_scope` when `requested`
    asks for one beyond them (RFC 6749 §6)."""
    had = split_scope(granted)
    if requested is not None and not requested <= had:
        raise InvalidScope(
            f"A refresh cannot add scopes: {format_scope(requested - had)} was not granted."
        )
    return had


def refresh_scopes(
    requested: set[str] | None, *, granted: str, roles: list[str], client_scopes: frozenset[str]
) -> set[str]:
    """RFC 6749 §6: the scopes of a refresh, never wider than the token's own.

    Nothing requested means the token's scopes. Those the user or the client may no longer
    have (a role or a client scope taken away since) are left out, as at sign-in.
    """
    had = within_granted(requested, granted)
    scopes = _for_user((had if requested is None else requested) & client_scopes, roles)
    if not scopes:
        raise InvalidScope("None of the requested scopes can be granted to this user.")
    return scopes

"""OAuth scopes this service grants (RFC 6749 §3.3) and who may have them."""

import re
from enum import StrEnum

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

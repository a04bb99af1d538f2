"""The authorization server: its endpoints, with the grants it supports."""

from auth_service.oauth.grants.client_credentials import ClientCredentialsGrant
from auth_service.oauth.grants.password import PasswordGrant
from auth_service.oauth.grants.refresh_token import RefreshTokenGrant
from auth_service.oauth.introspection import IntrospectionEndpoint
from auth_service.oauth.revocation import RevocationEndpoint
from auth_service.oauth.token import TokenEndpoint

token_endpoint = TokenEndpoint(PasswordGrant(), RefreshTokenGrant(), ClientCredentialsGrant())
revocation_endpoint = RevocationEndpoint()
introspection_endpoint = IntrospectionEndpoint()

"""Garrison's own OAuth 2 / OpenID Connect / SMART on FHIR (App Launch 2) authorization server.

What the rest of Garrison uses (this package file imports nothing, because garrison.db.schema
imports `garrison.oauth.tables` while it loads):
- garrison.oauth.tokens: `validate_access_token(conn, token, settings) -> AccessTokenClaims`
  (raises garrison.oauth.errors.InvalidAccessToken, a 401), `revoke_tokens_for_session`,
  `revoke_tokens_for_account`, `revoke_tokens_for_client`
- garrison.oauth.model: `SignedInUser` (what the sign-in layer tells the consent page)
- garrison.oauth.keys: `rotate_signing_key`, `published_jwks`
- garrison.oauth.clients: the client registry (`register_client`, `list_clients`, ...)
- garrison.web.oauth: `oauth_routes(settings, engine, signed_in)`, the HTTP endpoints
"""

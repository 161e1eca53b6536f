"""auth.*: logins (password, API key, token), tokens, who am I, logout."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import Field

from middlewared_cc.auth import principals, sessions
from middlewared_cc.context import Call
from middlewared_cc.errors import FieldError, NotAuthenticated, ValidationErrors
from middlewared_cc.rpc.registry import MethodSet, Model

methods = MethodSet()
MECHANISMS = ["PASSWORD_PLAIN", "API_KEY_PLAIN", "TOKEN_PLAIN"]
# Tokens live in memory: their attributes are bounded so max_tokens bounds the memory they take.
MAX_TOKEN_ATTRS = 4096


@methods.method("auth.mechanism_choices", public=True)
async def mechanism_choices(call: Call) -> list[str]:
    """The login mechanisms auth.login_ex accepts."""
    return list(MECHANISMS)


@methods.method("auth.login", public=True)
async def login(call: Call, username: str, password: str, otp_token: str | None = None) -> bool:
    """Log in with a local user's password. False on failure; EBUSY once this account has failed too
    often from this source in the last minute."""
    principal = await principals.by_password(call, username, password)
    if principal is None:
        principals.failed(call, "PASSWORD_PLAIN")
        return False
    principals.succeeded(call, principal)
    return True


@methods.method("auth.login_with_api_key", public=True)
async def login_with_api_key(call: Call, api_key: str) -> bool:
    """Log in with an API key ``<id>-<64 letters/digits>``; it acts with its user's roles."""
    principal = await principals.by_api_key(call, api_key)
    if principal is None:
        principals.failed(call, "API_KEY_PLAIN")
        return False
    principals.succeeded(call, principal)
    return True


class PasswordPlain(Model):
    mechanism: Literal["PASSWORD_PLAIN"]
    username: str
    password: str
    login_options: dict[str, Any] = Field(default_factory=dict)


class ApiKeyPlain(Model):
    mechanism: Literal["API_KEY_PLAIN"]
    username: str
    api_key: str
    login_options: dict[str, Any] = Field(default_factory=dict)


class TokenPlain(Model):
    mechanism: Literal["TOKEN_PLAIN"]
    token: str
    login_options: dict[str, Any] = Field(default_factory=dict)


LoginData = Annotated[PasswordPlain | ApiKeyPlain | TokenPlain, Field(discriminator="mechanism")]


@methods.method("auth.login_ex", public=True, schema="auth_login_ex")
async def login_ex(call: Call, data: LoginData) -> dict[str, Any]:
    """Log in with one of auth.mechanism_choices; answers response_type SUCCESS or AUTH_ERR."""
    if isinstance(data, PasswordPlain):
        principal = await principals.by_password(call, data.username, data.password)
    elif isinstance(data, ApiKeyPlain):
        principal = await principals.by_api_key(call, data.api_key, data.username)
    else:
        principal = await principals.by_token(call, data.token, bind=True)
    if principal is None:
        principals.failed(call, data.mechanism)
        return {"response_type": "AUTH_ERR"}
    principals.succeeded(call, principal)
    return {"response_type": "SUCCESS", "user_info": principals.user_info(principal),
            "authenticator": "LEVEL_1", "reconnect_token": None}


@methods.method("auth.generate_token")
async def generate_token(call: Call, ttl: Annotated[int, Field(ge=1, le=86400)] = 600,
                         attrs: dict[str, Any] = {}, match_origin: bool = True,  # noqa: B006 - a schema default, never mutated
                         single_use: bool = False) -> str:
    """A token for TOKEN_PLAIN logins as the caller, valid ``ttl`` seconds (only from this source
    when ``match_origin``). At use it logs in as the caller's user or key as they are then: a revoked
    or deleted key, or a deleted or locked user, ends it; a changed user's roles apply. auth.logout on
    this connection, or on any connection that logged in with the token, ends it too. EBUSY past
    max_tokens_per_user outstanding tokens for one user, or max_tokens in all."""
    if len(orjson.dumps(attrs)) > MAX_TOKEN_ATTRS:
        raise ValidationErrors([FieldError("auth_generate_token.attrs",
                                           f"At most {MAX_TOKEN_ATTRS} bytes of JSON")])
    key_hash = await principals.key_hash_of(call, call.principal)
    principal = await principals.current(call, call.principal, key_hash, call.principal.mechanism)
    if principal is None:  # the login's key or user went away while this call ran
        raise NotAuthenticated()
    origin = call.session.source if match_origin else None
    return call.services.auth.tokens.issue(principal, key_hash, ttl, single_use, origin, attrs, call.session.id)


@methods.method("auth.me")
async def me(call: Call) -> dict[str, Any]:
    """Who the caller is logged in as, with its roles."""
    return principals.user_info(call.principal)


@methods.method("auth.logout")
async def logout(call: Call) -> bool:
    """End this connection's login: its subscriptions, the login tokens it generated and the token it
    logged in with (auth.generate_token) end too. Closing the connection instead keeps the tokens to
    their ttl, so a page that reloads stays logged in."""
    sessions.log_out(call.services, call.session)
    return True

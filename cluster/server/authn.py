"""Who is calling: tokens from gRPC metadata, passwords, and the proposer's side of auth requests.

etcd reads the caller from the `token` metadata (or `authorization`, which its grpc-gateway sets)
on every request while auth is enabled (etcdserver AuthInfoFromCtx): a simple token must name an
Authenticate entry this member has applied (the member waits for that index, as etcd's indexWaiter)
and be alive; a JWT must verify. Anything else is "etcdserver: invalid auth token". No token at all
means an anonymous caller, refused later with "etcdserver: user name is empty".

Callers look at `AuthStore.enabled` first, so none of this runs while auth is disabled. *Departure*:
etcd also rejects an unknown token sent to a member with auth disabled; Quorum ignores it then.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import grpc

from cluster.api import errors
from cluster.auth.store import AuthStore
from cluster.auth.tokens import (
    JwtTokens,
    SimpleTokens,
    TokenInfo,
    TokenOptionsError,
    VerifyOnlyError,
    parse_token_options,
)
from cluster.server.urls import parse_duration

log = logging.getLogger("quorum.auth")

TOKEN_KEYS = ("token", "authorization")
BCRYPT_MAX_BYTES = 72


def new_token_provider(auth_token: str, ttl_s: float) -> SimpleTokens | JwtTokens:
    """The provider `--auth-token` names (etcd's NewTokenProvider); TokenOptionsError if unusable."""
    kind, options = parse_token_options(auth_token)
    if kind == "simple":
        log.warning("simple token is not cryptographically signed")
        return SimpleTokens(ttl_s)
    if kind == "jwt":
        ttl = options.get("ttl")
        try:
            jwt_ttl = parse_duration(ttl) if ttl else 300.0
        except ValueError as exc:
            raise TokenOptionsError(str(exc)) from None
        return JwtTokens(options, jwt_ttl)
    raise TokenOptionsError(f"unknown token type: {kind!r}")


def hash_password(password: str, cost: int) -> str:
    """bcrypt, as etcd hashes a new password (blocking: tens of milliseconds at cost 10)."""
    import bcrypt

    raw = password.encode("utf-8", "surrogateescape")
    if len(raw) > BCRYPT_MAX_BYTES:
        raise errors.EtcdError(grpc.StatusCode.UNKNOWN, "bcrypt: password length exceeds 72 bytes")
    return bcrypt.hashpw(raw, bcrypt.gensalt(rounds=cost)).decode("ascii")


def password_matches(password: str, hashed: bytes) -> bool:
    import bcrypt

    raw = password.encode("utf-8", "surrogateescape")
    if len(raw) > BCRYPT_MAX_BYTES or not hashed:
        return False
    try:
        return bool(bcrypt.checkpw(raw, hashed))
    except ValueError:
        return False


class Authenticator:
    """Turns a call's metadata into a TokenInfo, and issues tokens for applied Authenticate entries."""

    def __init__(
        self,
        store: AuthStore,
        tokens: SimpleTokens | JwtTokens,
        wait_applied: Callable[[int], Awaitable[None]],
        timeout: float,
    ) -> None:
        self.store = store
        self.tokens = tokens
        self._wait_applied = wait_applied
        self._timeout = timeout

    async def caller(self, metadata: Iterable[tuple[str, Any]] | None) -> TokenInfo | None:
        """The caller named by the call's token; None without a token. Raises INVALID_AUTH_TOKEN."""
        token = None
        for key, value in metadata or ():
            if key in TOKEN_KEYS:
                token = value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
                break
        if token is None:
            return None
        tokens = self.tokens
        if isinstance(tokens, JwtTokens):
            info = tokens.info(token)
        else:
            info = await self._simple_info(tokens, token)
        if info is None:
            log.warning("invalid auth token", extra={"token": token})
            raise errors.INVALID_AUTH_TOKEN()
        return info

    async def _simple_info(self, tokens: SimpleTokens, token: str) -> TokenInfo | None:
        index = tokens.index_of(token)
        if index is None:
            return None
        try:
            await asyncio.wait_for(self._wait_applied(index), self._timeout)
        except TimeoutError:
            return None
        username = tokens.lookup(token)
        return None if username is None else TokenInfo(username, self.store.revision)

    def issue(self, username: str, revision: int, simple_token: str) -> str:
        """The token of an applied Authenticate: the simple token registered at apply, or a new JWT."""
        if isinstance(self.tokens, JwtTokens):
            try:
                return self.tokens.sign(username, revision)
            except VerifyOnlyError:
                raise errors.VERIFY_ONLY() from None
        return simple_token

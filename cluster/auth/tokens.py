"""Auth tokens as etcd 3.4 issues them: `--auth-token simple` or `jwt,...` (auth/simple_token.go, jwt.go).

* **simple**: `<16 random letters>.<raft index of the Authenticate entry>`. The letters are drawn by the
  member that proposes the Authenticate request; every member registers the token when it applies the
  entry, so a token works on every member once that member has applied its index. A token lives
  `--auth-token-ttl` seconds after its last use; deleting a user or changing its password drops its
  tokens, disabling auth drops them all.
* **jwt**: signed by the member asked (PyJWT) with claims `username`, `revision` (the auth revision at
  Authenticate) and `exp`; any member holding the key verifies it. A JWT is never revoked: an auth
  change makes its revision old instead (etcd's ErrAuthOldRevision at the permission check).

Options are etcd's: `jwt,pub-key=<file>,priv-key=<file>,sign-method=<alg>[,ttl=<duration>]`; an HMAC
method takes its secret from priv-key; with only pub-key the member verifies but cannot sign.
"""

from __future__ import annotations

import secrets
import string
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

LETTERS = string.ascii_lowercase + string.ascii_uppercase
SIMPLE_TOKEN_LENGTH = 16
DEFAULT_JWT_TTL_S = 300.0
SWEEP_INTERVAL_S = 1.0

JWT_METHODS = frozenset(f"{family}{bits}" for family in ("HS", "RS", "PS", "ES") for bits in (256, 384, 512))


class TokenOptionsError(ValueError):
    """`--auth-token` cannot be used (etcd refuses to start with ErrInvalidAuthOpts and friends)."""


class VerifyOnlyError(Exception):
    """A JWT provider with only a public key was asked to sign (etcd's ErrVerifyOnly)."""

    message = "auth: token signing attempted with verify-only key"


@dataclass(frozen=True, slots=True)
class TokenInfo:
    """Who a token speaks for, and the auth revision its permissions are checked at."""

    username: str
    revision: int


def parse_token_options(text: str) -> tuple[str, dict[str, str]]:
    """Split `--auth-token` into its type and options (etcd's decomposeOpts)."""
    kind, *rest = text.split(",")
    options: dict[str, str] = {}
    for item in rest:
        pair = item.split("=")
        if len(pair) != 2 or pair[0] in options:
            raise TokenOptionsError(f"invalid auth token option: {text}")
        options[pair[0]] = pair[1]
    return kind, options


class SimpleTokens:
    """Random tokens registered at apply time, with a sliding TTL (etcd's tokenSimple)."""

    kind = "simple"

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s if ttl_s > 0 else 300.0
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, tuple[str, float]] = {}
        self._enabled = False
        self._next_sweep = 0.0

    @staticmethod
    def gen_prefix() -> str:
        return "".join(secrets.choice(LETTERS) for _ in range(SIMPLE_TOKEN_LENGTH))

    @staticmethod
    def index_of(token: str) -> int | None:
        """The raft index a well-formed simple token was issued at (None: not a simple token)."""
        parts = token.split(".")
        if len(parts) != 2 or not parts[1].isdigit():
            return None
        return int(parts[1])

    def assign(self, username: str, prefix: str, index: int) -> str:
        """Register the token of an applied Authenticate entry (on every member)."""
        token = f"{prefix}.{index}"
        with self._lock:
            if self._enabled:
                self._tokens[token] = (username, self._clock() + self.ttl_s)
        return token

    def lookup(self, token: str) -> str | None:
        """The user of a live token, extending its life (None: unknown or expired)."""
        now = self._clock()
        with self._lock:
            if now >= self._next_sweep:
                self._sweep(now)
            entry = self._tokens.get(token)
            if entry is None:
                return None
            username, deadline = entry
            if now >= deadline:
                del self._tokens[token]
                return None
            self._tokens[token] = (username, now + self.ttl_s)
            return username

    def _sweep(self, now: float) -> None:
        self._next_sweep = now + SWEEP_INTERVAL_S
        expired = [t for t, (_, deadline) in self._tokens.items() if now >= deadline]
        for t in expired:
            del self._tokens[t]

    def invalidate_user(self, username: str) -> None:
        with self._lock:
            for t in [t for t, (u, _) in self._tokens.items() if u == username]:
                del self._tokens[t]

    def enable(self) -> None:
        with self._lock:
            self._enabled = True

    def disable(self) -> None:
        with self._lock:
            self._enabled = False
            self._tokens.clear()

    def __len__(self) -> int:
        return len(self._tokens)


class JwtTokens:
    """Signed tokens (PyJWT); nothing is kept per token."""

    kind = "jwt"

    def __init__(
        self,
        options: dict[str, str],
        ttl_s: float = DEFAULT_JWT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`options` as parsed from `--auth-token`; `ttl_s` is its `ttl` (parsed by the caller)."""
        import jwt  # imported here: members with simple tokens never need PyJWT

        self._jwt = jwt
        self._clock = clock
        method = options.get("sign-method", "")
        if method not in JWT_METHODS:
            raise TokenOptionsError("auth: invalid auth signature method")
        self.method = method
        self.ttl_s = ttl_s
        private = _read(options.get("priv-key", ""))
        public = _read(options.get("pub-key", ""))
        self._sign_key: Any
        self._verify_key: Any
        if method.startswith("HS"):
            if not private:
                raise TokenOptionsError("auth: missing key data")
            self._sign_key = self._verify_key = private
            return
        from cryptography.hazmat.primitives import serialization

        try:
            priv = serialization.load_pem_private_key(private, password=None) if private else None
            pub = serialization.load_pem_public_key(public) if public else None
        except ValueError as exc:
            raise TokenOptionsError(f"invalid JWT key: {exc}") from None
        if priv is None and pub is None:
            raise TokenOptionsError("auth: missing key data")
        self._sign_key = priv
        self._verify_key = priv.public_key() if priv is not None else pub

    def sign(self, username: str, revision: int) -> str:
        if self._sign_key is None:
            raise VerifyOnlyError(VerifyOnlyError.message)
        claims = {"username": username, "revision": revision, "exp": int(self._clock() + self.ttl_s)}
        return str(self._jwt.encode(claims, self._sign_key, algorithm=self.method))

    def info(self, token: str) -> TokenInfo | None:
        """Verify a token: signature, algorithm, expiry and claims (None: invalid)."""
        try:
            claims = self._jwt.decode(token, self._verify_key, algorithms=[self.method],
                                      options={"verify_exp": True})
        except Exception:
            return None
        username, revision = claims.get("username"), claims.get("revision")
        if not isinstance(username, str) or not isinstance(revision, (int, float)) or revision < 0:
            return None
        return TokenInfo(username, int(revision))


def _read(path: str) -> bytes:
    if not path:
        return b""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise TokenOptionsError(f"open {path}: {exc.strerror}") from None


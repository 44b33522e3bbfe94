"""JWT verification that follows RFC 8725: pinned algorithms, required claims, local keys only.

Every failure, whatever its kind (bad base64, wrong key type, an exception
inside the crypto library), becomes ``UnauthenticatedError``: a forged token
must never turn into a 500. Keys come from config or a local JWKS file; the
``jku`` / ``x5u`` / ``jwk`` headers are never followed (SSRF, key injection).

Verified tokens are kept in a bounded LRU until they expire (``exp`` plus the
leeway; not before ``nbf``), since an HTTP client sends the same token many
times and PyJWT's checks cost several times the rest of a request. A cached
token is still refused once it expires, and the ``revoked`` check runs on
every request, cached or not.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization

from organelle.errors import ConfigError, UnauthenticatedError

__all__ = ["ASYMMETRIC", "HMAC", "JwtVerifier"]

HMAC = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MAX_TOKEN_BYTES = 8192
MIN_SECRET_BYTES = 32  # RFC 8725 §3.5: HMAC keys need real entropy
CACHE_SIZE = 10_000


class JwtVerifier:
    """Verifies bearer tokens and returns their claims.

    Args:
        algorithms: the allow-list; never ``none``, never HMAC mixed with
            asymmetric algorithms (key confusion).
        secret: the HMAC secret (at least 32 bytes), for ``HS*``.
        public_key: a PEM public key, for asymmetric algorithms.
        jwks: a JWKS document (``{"keys": [...]}``); the token's ``kid`` picks the key.
        issuer: required ``iss``.
        audience: required ``aud`` (one of).
        leeway_s: clock skew allowed on ``exp`` / ``nbf`` / ``iat``.
        require: claims that must be present (``exp`` always is).
        typ: required ``typ`` header (e.g. ``"at+jwt"``), compared case-insensitively.
        cache_size: how many verified tokens to keep (least recently used go first);
            0 verifies every token every time.
        revoked: ``revoked(claims) -> bool``, asked on every request (a ``jti``
            deny-list, a logout time per user); a revoked token is refused even
            when it is cached.
    """

    def __init__(
        self,
        *,
        algorithms: Iterable[str],
        secret: str | bytes | None = None,
        public_key: str | bytes | None = None,
        jwks: Mapping[str, Any] | None = None,
        issuer: str | None = None,
        audience: str | Iterable[str] | None = None,
        leeway_s: float = 30.0,
        require: Iterable[str] = ("exp",),
        typ: str | None = None,
        cache_size: int = CACHE_SIZE,
        revoked: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        self.algorithms = frozenset(algorithms)
        if cache_size < 0:
            raise ConfigError("auth.jwt.cache_size must be 0 or more")
        _check_algorithms(self.algorithms)
        if not 0 <= leeway_s <= 300:  # noqa: PLR2004 - RFC 7519: "a few minutes" at most
            raise ConfigError("auth.jwt.leeway_s must be between 0 and 300 seconds")
        self.issuer = issuer
        self.audience = [audience] if isinstance(audience, str) else audience and list(audience)
        self.leeway_s = leeway_s
        self.require = sorted({"exp", *require})
        self.typ = typ.lower() if typ else None
        self._key: Any = None
        self._jwks: dict[str | None, jwt.PyJWK] = {}
        if self.algorithms <= HMAC:
            self._key = _secret(secret)
        elif jwks is not None:
            self._jwks = _load_jwks(jwks, self.algorithms)
        elif public_key is not None:
            self._key = _public_key(public_key)
        else:
            raise ConfigError("auth.jwt: asymmetric algorithms need public_key or jwks_file")
        self._allowed = sorted(self.algorithms)
        self.cache_size = cache_size
        self.revoked = revoked
        # token -> (claims, not before, expires); insertion order is recency order
        self._cache: dict[str, tuple[dict[str, Any], float, float]] = {}

    @classmethod
    def from_jwks_file(cls, path: str | Path, **options: Any) -> JwtVerifier:
        """Build a verifier from a local JWKS file (never fetched over the network)."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"auth.jwt.jwks_file: cannot read {path}: {exc}") from None
        return cls(jwks=data, **options)

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token.

        Raises:
            UnauthenticatedError: for any problem with the token.
        """
        hit = self._cache.pop(token, None)
        if hit is not None:
            claims, not_before, expires = hit
            if not_before <= time.time() < expires:
                self._cache[token] = hit  # most recently used: last
                self._check_revoked(claims)
                return claims
        try:
            claims = self._decode(token)
        except UnauthenticatedError:
            raise
        except jwt.ExpiredSignatureError:
            raise UnauthenticatedError("token expired") from None
        except Exception as exc:  # any failure of any kind is a bad token, never a 500
            raise UnauthenticatedError(f"invalid token: {_reason(exc)}") from None
        self._check_revoked(claims)
        if self.cache_size:
            self._remember(token, claims)
        return claims

    def _check_revoked(self, claims: Mapping[str, Any]) -> None:
        if self.revoked is not None and self.revoked(claims):
            raise UnauthenticatedError("token revoked")

    def _decode(self, token: str) -> dict[str, Any]:
        if not isinstance(token, str) or len(token) > MAX_TOKEN_BYTES:
            raise UnauthenticatedError("invalid token: too long")
        if self._jwks:  # the key depends on the header's kid: read it first
            header = jwt.get_unverified_header(token)
            alg = header.get("alg")
            if not isinstance(alg, str) or alg not in self.algorithms:
                raise UnauthenticatedError("invalid token: algorithm not allowed")
            key, allowed = self._key_for(header, alg), [alg]
        else:  # one key: PyJWT pins the algorithm and parses the token once
            key, allowed = self._key, self._allowed
        decoded = jwt.decode_complete(
            token,
            key,
            algorithms=allowed,
            audience=self.audience,
            issuer=self.issuer,
            leeway=self.leeway_s,
            options={"require": self.require, "verify_aud": self.audience is not None},
        )
        header = decoded["header"]
        if "crit" in header:
            raise UnauthenticatedError("invalid token: unsupported critical header")
        if self.typ is not None and _typ(header.get("typ")) != self.typ:
            raise UnauthenticatedError("invalid token: wrong type")
        claims: dict[str, Any] = decoded["payload"]
        return claims

    def _key_for(self, header: Mapping[str, Any], alg: str) -> Any:
        if not self._jwks:
            return self._key
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise UnauthenticatedError("invalid token: bad key id")
        jwk = self._jwks.get(kid) or (self._jwks.get(None) if kid is None else None)
        if jwk is None:
            raise UnauthenticatedError("invalid token: unknown key id")
        if jwk.algorithm_name != alg:  # a key is bound to one algorithm (GHSA-jq35-7prp-9v3f)
            raise UnauthenticatedError("invalid token: algorithm does not match the key")
        return jwk.key

    def _remember(self, token: str, claims: dict[str, Any]) -> None:
        exp, nbf = claims.get("exp"), claims.get("nbf")
        if not isinstance(exp, (int, float)):
            return
        cache = self._cache
        while len(cache) >= self.cache_size:
            del cache[next(iter(cache))]  # the least recently used
        start = nbf - self.leeway_s if isinstance(nbf, (int, float)) else float("-inf")
        self._cache[token] = (claims, start, exp + self.leeway_s)


def _check_algorithms(algorithms: frozenset[str]) -> None:
    if not algorithms:
        raise ConfigError("auth.jwt.algorithms: list at least one algorithm")
    unknown = algorithms - HMAC - ASYMMETRIC
    if unknown:
        raise ConfigError(f"auth.jwt.algorithms: not allowed: {', '.join(sorted(unknown))}")
    if algorithms & HMAC and algorithms & ASYMMETRIC:
        raise ConfigError(
            "auth.jwt.algorithms: do not mix HMAC and asymmetric algorithms (key confusion)"
        )


def _secret(secret: str | bytes | None) -> bytes:
    if secret is None:
        raise ConfigError("auth.jwt: HMAC algorithms need a secret")
    raw = secret.encode() if isinstance(secret, str) else bytes(secret)
    if len(raw) < MIN_SECRET_BYTES:
        raise ConfigError(f"auth.jwt.secret: use at least {MIN_SECRET_BYTES} bytes")
    if b"-----BEGIN" in raw or raw.lstrip().startswith((b"{", b"ssh-")):
        raise ConfigError("auth.jwt.secret: looks like a public key; use public_key for those")
    return raw


def _public_key(pem: str | bytes) -> Any:
    raw = pem.encode() if isinstance(pem, str) else pem
    try:
        return serialization.load_pem_public_key(raw)
    except ValueError as exc:
        raise ConfigError(f"auth.jwt.public_key: not a PEM public key: {exc}") from None


def _load_jwks(data: Mapping[str, Any], algorithms: frozenset[str]) -> dict[str | None, jwt.PyJWK]:
    try:
        keys = jwt.PyJWKSet.from_dict(dict(data)).keys
    except jwt.PyJWTError as exc:
        raise ConfigError(f"auth.jwt.jwks: {exc}") from None
    found: dict[str | None, jwt.PyJWK] = {}
    for key in keys:
        if key.algorithm_name not in algorithms:
            continue  # a key for an algorithm we do not accept can never be used
        if key.key_id in found:
            raise ConfigError(f"auth.jwt.jwks: two keys have the kid {key.key_id!r}")
        found[key.key_id] = key
    if not found:
        raise ConfigError("auth.jwt.jwks: no key matches the allowed algorithms")
    return found


def _typ(value: object) -> str | None:
    if not isinstance(value, str):
        return None
    return value.lower().removeprefix("application/")


def _reason(exc: Exception) -> str:
    if isinstance(exc, jwt.PyJWTError):
        return str(exc) or type(exc).__name__
    return "malformed token"

"""Principal factories: who is calling, from a request's credentials.

A factory returns a ``Principal``, ``None`` (no credentials of its kind: the
caller is anonymous as far as it knows) or raises ``UnauthenticatedError``
(credentials were presented and are bad: never fall back to anonymous).
``principal_factory(AuthConfig)`` builds the chain a gateway uses from config:
JWT bearer tokens, API keys, then an optional custom callable.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from organelle.auth.api_keys import ApiKeys
from organelle.auth.base import Principal
from organelle.auth.rbac import Rbac
from organelle.config import import_object
from organelle.errors import ConfigError, UnauthenticatedError

__all__ = [
    "ApiKeyPrincipals",
    "AuthConfig",
    "ChainPrincipals",
    "Credentials",
    "JwtConfig",
    "JwtPrincipals",
    "PrincipalFactory",
    "RbacConfig",
    "principal_factory",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Credentials:
    """What a request presents: ``Authorization``, an API key, headers and the client address."""

    authorization: str | None = None
    api_key: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    client: str | None = None


class PrincipalFactory(Protocol):
    """Builds the caller's principal, or ``None``; raises ``UnauthenticatedError`` on bad input."""

    def __call__(self, credentials: Credentials, /) -> Awaitable[Principal | None]:
        """Authenticate ``credentials``."""
        ...


class JwtPrincipals:
    """Principals from ``Authorization: Bearer <jwt>``; claims name the id and roles.

    The verifier is asked on every request (expiry, revocation); when it hands
    back the very claims object it returned last time for that token (its
    cache), the principal built from them then is reused too.
    """

    def __init__(
        self,
        verifier: Any,
        *,
        id_claim: str = "sub",
        roles_claim: str = "roles",
        principal_type: str = "user",
    ) -> None:
        self.verifier = verifier
        self.id_claim = id_claim
        self.roles_claim = roles_claim
        self.principal_type = principal_type
        self._built: dict[str, tuple[Mapping[str, Any], Principal]] = {}
        self._max = max(0, int(getattr(verifier, "cache_size", 0)))

    async def __call__(self, credentials: Credentials, /) -> Principal | None:
        """Verify the bearer token, if any."""
        auth = credentials.authorization
        if auth is None:
            return None
        return self.principal(auth)

    def principal(self, authorization: str) -> Principal | None:
        """The principal of an ``Authorization`` header value (``None``: not a bearer token)."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        token = token.strip()
        claims = self.verifier.verify(token)
        built = self._built.get(token)
        if built is not None and built[0] is claims:
            return built[1]
        principal = self._build(claims)
        if self._max:
            if len(self._built) >= self._max:
                del self._built[next(iter(self._built))]
            self._built[token] = (claims, principal)
        return principal

    def _build(self, claims: Mapping[str, Any]) -> Principal:
        ident = claims.get(self.id_claim)
        if not isinstance(ident, str) or not ident:
            raise UnauthenticatedError(f"invalid token: no {self.id_claim!r} claim")
        raw = claims.get(self.roles_claim, ())
        roles = raw.split() if isinstance(raw, str) else raw
        if not isinstance(roles, list | tuple):
            roles = ()
        return Principal(
            id=ident,
            type=self.principal_type,
            roles=frozenset(r for r in roles if isinstance(r, str)),
            claims=claims,
        )


class ApiKeyPrincipals:
    """Principals from ``X-API-Key: <key>`` (or ``Authorization: ApiKey <key>``)."""

    def __init__(self, keys: ApiKeys) -> None:
        self.keys = keys

    async def __call__(self, credentials: Credentials, /) -> Principal | None:
        """Look the key up; an unknown key is an error, not anonymity."""
        key = credentials.api_key
        auth = credentials.authorization
        if key is None and auth is not None:
            scheme, _, rest = auth.partition(" ")
            if scheme.lower() == "apikey":
                key = rest.strip()
        if key is None:
            return None
        principal = self.keys.lookup(key)
        if principal is None:
            raise UnauthenticatedError("invalid API key")
        return principal


class ChainPrincipals:
    """Tries factories in order; the first principal (or error) wins."""

    def __init__(self, *factories: PrincipalFactory) -> None:
        self.factories = factories

    async def __call__(self, credentials: Credentials, /) -> Principal | None:
        """Return the first principal any factory builds."""
        for factory in self.factories:
            principal = await factory(credentials)
            if principal is not None:
                return principal
        return None


class _Callable:
    """Adapts a user callable (sync or async) to the factory protocol."""

    def __init__(self, fn: Callable[[Credentials], Any]) -> None:
        self.fn = fn

    async def __call__(self, credentials: Credentials, /) -> Principal | None:
        result = self.fn(credentials)
        if inspect.isawaitable(result):
            result = await result
        if result is not None and not isinstance(result, Principal):
            raise TypeError(f"principal factory returned {type(result).__name__}, not Principal")
        return result


class JwtConfig(BaseModel):
    """``[modules.gateway.auth.jwt]``: verification is pinned, keys are local."""

    model_config = ConfigDict(extra="forbid")

    algorithms: list[str] = Field(min_length=1)
    secret: SecretStr | None = None
    """HMAC key; a ``SecretStr`` so config dumps, logs and the dashboard mask it."""
    public_key: str | None = None
    public_key_file: str | None = None
    jwks_file: str | None = None
    issuer: str | None = None
    audience: str | list[str] | None = None
    leeway_s: float = Field(default=30.0, ge=0, le=300)
    require: list[str] = Field(default_factory=lambda: ["exp"])
    typ: str | None = None
    id_claim: str = "sub"
    roles_claim: str = "roles"
    cache_size: int = Field(default=10_000, ge=0)
    """Verified tokens kept until they expire (LRU); 0 verifies every request."""
    revoked: str | None = None
    """``"package.module:callable"``: ``revoked(claims) -> bool``, asked on every request."""


class RbacConfig(BaseModel):
    """``[modules.gateway.rbac]``: role → permission patterns, and role inheritance."""

    model_config = ConfigDict(extra="forbid")

    roles: dict[str, list[str]] = Field(default_factory=dict)
    inherits: dict[str, list[str]] = Field(default_factory=dict)

    def build(self) -> Rbac:
        """The policy object."""
        return Rbac(self.roles, self.inherits)


class AuthConfig(BaseModel):
    """``[modules.gateway.auth]``: which credentials are accepted."""

    model_config = ConfigDict(extra="forbid")

    jwt: JwtConfig | None = None
    api_keys: dict[str, dict[str, Any]] = Field(default_factory=dict)
    api_key_header: str = "x-api-key"
    factory: str | None = None
    """``"package.module:callable"``: a custom factory tried after JWT and API keys."""


def principal_factory(config: AuthConfig, base: Path | None = None) -> PrincipalFactory | None:
    """Build the factory chain described by ``config`` (``None`` when nothing is configured).

    Raises:
        ConfigError: bad keys, algorithms or files.
    """
    chain: list[PrincipalFactory] = []
    if config.jwt is not None:
        chain.append(_jwt(config.jwt, base or Path()))
    if config.api_keys:
        chain.append(ApiKeyPrincipals(ApiKeys(config.api_keys)))
    if config.factory:
        fn = import_object(config.factory, where="auth.factory")
        if not callable(fn):
            raise ConfigError(f"auth.factory: {config.factory!r} is not callable")
        chain.append(_Callable(fn))
    if not chain:
        return None
    return chain[0] if len(chain) == 1 else ChainPrincipals(*chain)


def _jwt(cfg: JwtConfig, base: Path) -> JwtPrincipals:
    from organelle.auth.jwt import JwtVerifier

    options: dict[str, Any] = {
        "algorithms": cfg.algorithms,
        "issuer": cfg.issuer,
        "audience": cfg.audience,
        "leeway_s": cfg.leeway_s,
        "require": cfg.require,
        "typ": cfg.typ,
        "cache_size": cfg.cache_size,
    }
    if cfg.revoked:
        revoked = import_object(cfg.revoked, where="auth.jwt.revoked")
        if not callable(revoked):
            raise ConfigError(f"auth.jwt.revoked: {cfg.revoked!r} is not callable")
        options["revoked"] = revoked
    if cfg.jwks_file:
        verifier = JwtVerifier.from_jwks_file(base / cfg.jwks_file, **options)
    else:
        public_key = cfg.public_key
        if cfg.public_key_file:
            try:
                public_key = (base / cfg.public_key_file).read_text()
            except OSError as exc:
                raise ConfigError(f"auth.jwt.public_key_file: {exc}") from None
        secret = None if cfg.secret is None else cfg.secret.get_secret_value()
        verifier = JwtVerifier(secret=secret, public_key=public_key, **options)
    return JwtPrincipals(verifier, id_claim=cfg.id_claim, roles_claim=cfg.roles_claim)

"""The ``users`` module: accounts in its own Store namespace, passwords hashed with argon2id."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import msgspec
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel, Field, SecretStr, field_validator

from organelle import Module, rpc
from organelle.errors import (
    ConflictError,
    NotFoundError,
    UnauthenticatedError,
    ValidationError,
)
from organelle.plugins import Manifest
from organelle_users._tokens import ACCESS_TYP, REFRESH_TYP, Issuer

MIN_SECRET = 32  # bytes of HMAC key: RFC 8725 §3.5, and organelle's JwtVerifier refuses less
BAD_LOGIN = "wrong email or password"  # one message for both: no account probing


class User(msgspec.Struct, frozen=True):
    """A user as other modules see it (never the password hash)."""

    id: str
    email: str
    name: str
    roles: list[str]
    created: float


class Tokens(msgspec.Struct, frozen=True):
    """What ``login`` and ``refresh`` return (the OAuth 2 token response's fields)."""

    access_token: str
    refresh_token: str
    expires_in: int
    token_type: str = "Bearer"  # noqa: S105 - the OAuth 2 token type, not a secret


class _Record(msgspec.Struct):
    id: str
    email: str
    name: str
    hash: str
    roles: list[str]
    created: float

    def public(self) -> User:
        return User(self.id, self.email, self.name, list(self.roles), self.created)


class Users(Module):
    """Registration, login, refresh and roles (see the package docstring)."""

    name = "users"
    version = "0.1.0"
    manifest = Manifest(kernel=">=0.1,<1", emit=("users.>",))

    class Config(BaseModel):
        secret: SecretStr
        issuer: str = "organelle-users"
        audience: str = "organelle"
        access_ttl_s: float = Field(900.0, gt=0)
        refresh_ttl_s: float = Field(30 * 24 * 3600.0, gt=0)
        default_roles: list[str] = Field(default_factory=lambda: ["user"])
        admins: list[str] = Field(default_factory=list)
        """Emails that get the ``admin`` role when they register (the first administrators)."""
        min_password_length: int = Field(10, ge=8)
        # argon2id cost (argon2-cffi's defaults: RFC 9106's low-memory profile).
        argon2_time_cost: int = Field(3, ge=1)
        argon2_memory_kib: int = Field(65536, ge=8)
        argon2_parallelism: int = Field(4, ge=1)

        @field_validator("secret")
        @classmethod
        def _long_enough(cls, value: SecretStr) -> SecretStr:
            if len(value.get_secret_value().encode()) < MIN_SECRET:
                raise ValueError(f"the JWT secret needs at least {MIN_SECRET} bytes")
            return value

    config: Config

    async def on_load(self) -> None:
        self._dummy: str | None = None

    # helpers -------------------------------------------------------------
    @property
    def _hasher(self) -> PasswordHasher:
        c = self.config
        return PasswordHasher(
            time_cost=c.argon2_time_cost,
            memory_cost=c.argon2_memory_kib,
            parallelism=c.argon2_parallelism,
        )

    @property
    def _issuer(self) -> Issuer:
        c = self.config
        return Issuer(
            c.secret.get_secret_value(), c.issuer, c.audience, c.access_ttl_s, c.refresh_ttl_s
        )

    async def _load(self, user_id: str) -> _Record:
        entry = await self.store.get(f"user:{user_id}", type=_Record)
        if entry is None:
            raise NotFoundError(f"no user {user_id!r}")
        record: _Record = entry.value
        return record

    async def _tokens(self, record: _Record, family: str) -> Tokens:
        issuer = self._issuer
        refresh, jti = issuer.refresh(record.id, family)
        await self.store.put(
            f"refresh:{jti}", {"user": record.id, "family": family}, ttl_s=issuer.refresh_ttl_s
        )
        return Tokens(
            access_token=issuer.access(record.id, record.roles),
            refresh_token=refresh,
            expires_in=int(issuer.access_ttl_s),
        )

    async def _verify_password(self, stored: str | None, password: str) -> bool:
        """argon2 in a thread (it is meant to be slow); an unknown user costs the same."""
        hasher = self._hasher
        if stored is None:
            if self._dummy is None:
                self._dummy = await asyncio.to_thread(hasher.hash, uuid.uuid4().hex)
            stored = self._dummy
        try:
            return await asyncio.to_thread(hasher.verify, stored, password)
        except (VerificationError, InvalidHashError):
            return False

    # RPC -----------------------------------------------------------------
    @rpc
    async def register(self, email: str, password: str, name: str = "") -> User:
        """Create a user with the default roles; ``ConflictError`` if the email is taken."""
        email = _email(email)
        if len(password) < self.config.min_password_length:
            message = f"at least {self.config.min_password_length} characters"
            raise ValidationError(
                f"password: {message}", errors=[{"field": "password", "message": message}]
            )
        digest = await asyncio.to_thread(self._hasher.hash, password)
        roles = list(self.config.default_roles)
        if email in {_email(a) for a in self.config.admins}:
            roles.append("admin")
        record = _Record(uuid.uuid4().hex, email, name, digest, sorted(set(roles)), time.time())
        try:  # the email key is the uniqueness check: created once, by one caller
            await self.store.compare_and_set(f"email:{email}", record.id, revision=None)
        except ConflictError:
            raise ConflictError(f"email {email!r} is already registered") from None
        await self.store.put(f"user:{record.id}", record)
        await self.emit("users.registered", {"id": record.id, "email": email})
        return record.public()

    @rpc
    async def login(self, email: str, password: str) -> Tokens:
        """Tokens for a correct email and password; ``UnauthenticatedError`` otherwise."""
        entry = await self.store.get(f"email:{_email(email)}")
        record = None if entry is None else await self._load(entry.value)
        stored = None if record is None else record.hash
        if not await self._verify_password(stored, password) or record is None:
            raise UnauthenticatedError(BAD_LOGIN)
        if self._hasher.check_needs_rehash(record.hash):  # the cost was raised since
            record.hash = await asyncio.to_thread(self._hasher.hash, password)
            await self.store.put(f"user:{record.id}", record)
        return await self._tokens(record, uuid.uuid4().hex)

    @rpc
    async def refresh(self, refresh_token: str) -> Tokens:
        """New tokens for a refresh token, which is spent; a reused one revokes its family."""
        claims = self._issuer.read(refresh_token, REFRESH_TYP)
        family = str(claims.get("fam", ""))
        if await self.store.get(f"revoked:{family}") is not None:
            raise UnauthenticatedError("refresh token revoked")
        # delete() is atomic: of two refreshes with one token, one wins.
        if not await self.store.delete(f"refresh:{claims['jti']}"):
            await self._revoke(family)
            raise UnauthenticatedError("refresh token already used; its session is revoked")
        return await self._tokens(await self._load(str(claims["sub"])), family)

    @rpc
    async def logout(self, refresh_token: str) -> None:
        """End the session of ``refresh_token`` (its family can no longer refresh)."""
        claims = self._issuer.read(refresh_token, REFRESH_TYP)
        await self._revoke(str(claims.get("fam", "")))

    async def _revoke(self, family: str) -> None:
        await self.store.put(
            f"revoked:{family}", {"at": time.time()}, ttl_s=self.config.refresh_ttl_s
        )

    @rpc
    async def verify(self, access_token: str) -> dict[str, Any]:
        """The claims of a valid access token (for modules that get one outside the gateway)."""
        return self._issuer.read(access_token, ACCESS_TYP)

    @rpc
    async def get(self, user_id: str) -> User:
        """A user by id."""
        return (await self._load(user_id)).public()

    @rpc(roles=("admin",))
    async def grant_role(self, user_id: str, role: str) -> User:
        """Give ``role`` to a user (in tokens issued from now on); admins only."""
        return await self._set_role(user_id, role, add=True)

    @rpc(roles=("admin",))
    async def revoke_role(self, user_id: str, role: str) -> User:
        """Take ``role`` from a user (in tokens issued from now on); admins only."""
        return await self._set_role(user_id, role, add=False)

    async def _set_role(self, user_id: str, role: str, *, add: bool) -> User:
        if not role or not role.replace("-", "").replace("_", "").isalnum():
            raise ValidationError(
                f"bad role {role!r}", errors=[{"field": "role", "message": "letters, digits, -, _"}]
            )
        record = await self._load(user_id)
        roles = set(record.roles)
        roles = roles | {role} if add else roles - {role}
        record.roles = sorted(roles)
        await self.store.put(f"user:{user_id}", record)
        await self.emit(
            "users.role_granted" if add else "users.role_revoked", {"id": user_id, "role": role}
        )
        return record.public()


def _email(raw: str) -> str:
    email = raw.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email:
        raise ValidationError(
            f"bad email {raw!r}", errors=[{"field": "email", "message": "not an email address"}]
        )
    return email

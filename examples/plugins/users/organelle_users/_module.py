"""The ``users`` module: accounts in its own Store namespace, passwords hashed with argon2id."""

from __future__ import annotations

import asyncio
import contextlib
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
    TransactionUnsupportedError,
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

        @field_validator("admins")
        @classmethod
        def _emails(cls, value: list[str]) -> list[str]:
            """Each an email, as ``register`` reads one: a typo here would grant no one."""
            normal = [_normal_email(raw) for raw in value]
            bad = [raw for raw, email in zip(value, normal, strict=True) if email is None]
            if bad:
                raise ValueError(f"not an email address: {bad[0]!r}")
            return [email for email in normal if email is not None]

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
        if email in self.config.admins:  # normalised when the config loaded
            roles.append("admin")
        record = _Record(uuid.uuid4().hex, email, name, digest, sorted(set(roles)), time.time())
        try:
            await self._create(record)
        except ConflictError:
            raise ConflictError(f"email {email!r} is already registered") from None
        return record.public()

    async def _create(self, record: _Record) -> None:
        """Write the user, claim its email and emit ``users.registered``, all or nothing.

        In one Store transaction (the event through its outbox) where the Store
        has them. Where it has none (NATS KV, Redis) the order does it: the
        user record first, reachable only once the claim that follows is made,
        so a crash between the two leaves the email free (and an unreachable
        record); the event is then sent after both.
        """
        event = {"id": record.id, "email": record.email}
        entered = False
        try:
            async with self.transaction() as tx:
                entered = True
                await self._write(record)
                await tx.emit("users.registered", event)
        except TransactionUnsupportedError:
            if entered:
                raise
        else:
            return
        await self._write(record)
        await self.emit("users.registered", event)

    async def _write(self, record: _Record) -> None:
        await self.store.put(f"user:{record.id}", record)
        try:
            await self._claim(record.email, record.id)
        except ConflictError:
            await self.store.delete(f"user:{record.id}")  # in a transaction: the rollback's too
            raise

    async def _claim(self, email: str, user_id: str) -> None:
        """Point ``email`` at ``user_id``: the uniqueness check, made once, by one caller.

        A claim whose user record is missing was left by a register that died
        between its writes (before they were made in this order): it is taken over.
        """
        key = f"email:{email}"
        try:
            await self.store.compare_and_set(key, user_id, revision=None)
        except ConflictError:
            held = await self.store.get(key)
            if held is None or await self.store.get(f"user:{held.value}") is not None:
                raise
            await self.store.compare_and_set(key, user_id, revision=held.revision)

    @rpc
    async def login(self, email: str, password: str) -> Tokens:
        """Tokens for a correct email and password; ``UnauthenticatedError`` otherwise.

        A malformed email is one more wrong email (same error, same hash check).
        """
        normal = _normal_email(email)
        entry = None if normal is None else await self.store.get(f"email:{normal}")
        user = None if entry is None else await self.store.get(f"user:{entry.value}", type=_Record)
        stored = None if user is None else user.value.hash
        if not await self._verify_password(stored, password) or user is None:
            raise UnauthenticatedError(BAD_LOGIN)
        record: _Record = user.value
        if self._hasher.check_needs_rehash(record.hash):  # made with other argon2 parameters
            record.hash = await asyncio.to_thread(self._hasher.hash, password)
            with contextlib.suppress(ConflictError):  # changed meanwhile: the next login does it
                await self.store.compare_and_set(
                    f"user:{record.id}", record, revision=user.revision
                )
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


def _normal_email(raw: str) -> str | None:
    """``raw`` trimmed and lowercased, or ``None`` if it is not an email address."""
    email = raw.strip().lower()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or " " in email:
        return None
    return email


def _email(raw: str) -> str:
    email = _normal_email(raw)
    if email is None:
        raise ValidationError(
            f"bad email {raw!r}", errors=[{"field": "email", "message": "not an email address"}]
        )
    return email

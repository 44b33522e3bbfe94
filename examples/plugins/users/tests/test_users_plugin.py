"""The users plugin in a real kernel: registration, argon2, JWT login, refresh, roles, manifest."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest
from organelle_users import Tokens, User, Users

from organelle import Kernel
from organelle.auth.base import Principal
from organelle.auth.jwt import JwtVerifier
from organelle.errors import (
    ConfigError,
    ConflictError,
    ForbiddenError,
    InternalError,
    UnauthenticatedError,
    ValidationError,
)
from organelle.gateway import Gateway
from organelle.plugins import Manifest
from organelle.storage import NamespacedStore
from organelle.testing import capture, eventually
from organelle.testing.plugins import check_plugin
from organelle.testing.servers import RedisServer, shared_redis

SECRET = "s3cret-s3cret-s3cret-s3cret-0123456789"
USERS = {
    "secret": SECRET,
    "admins": ["root@example.com"],
    # cheap argon2id for tests; the defaults are RFC 9106's low-memory profile
    "argon2_time_cost": 1,
    "argon2_memory_kib": 1024,
    "argon2_parallelism": 1,
}
CONFIG: dict[str, Any] = {"kernel": {"storage": "memory://"}, "modules": {"users": USERS}}
ADMIN = Principal(id="ops", roles=frozenset({"admin"}))


@pytest.fixture
async def kernel() -> AsyncIterator[Kernel]:
    async with Kernel([Users], CONFIG) as k:
        yield k


def verifier() -> JwtVerifier:
    """organelle's own verifier, as the gateway's [auth.jwt] would build it."""
    return JwtVerifier(
        algorithms=["HS256"],
        secret=SECRET,
        issuer="organelle-users",
        audience="organelle",
        typ="at+jwt",
    )


async def test_register_hashes_with_argon2id_and_refuses_duplicates(kernel: Kernel) -> None:
    seen = capture(kernel, "users.>")
    user = await kernel.call("users.register", email=" Ann@Example.com", password="correct horse")
    await kernel.drain()
    assert isinstance(user, User)
    assert (user.email, user.roles) == ("ann@example.com", ["user"])
    stored = await kernel.store_for("users").get(f"user:{user.id}")
    assert stored is not None
    assert stored.value["hash"].startswith("$argon2id$")
    assert "correct horse" not in str(stored.value)

    def registered() -> None:  # sent by the outbox once the register committed
        assert seen == [("users.registered", {"id": user.id, "email": "ann@example.com"})]

    await eventually(registered)
    with pytest.raises(ConflictError, match="already registered"):
        await kernel.call("users.register", email="ann@example.com", password="another one!")
    with pytest.raises(ValidationError, match="at least 10 characters"):
        await kernel.call("users.register", email="bob@example.com", password="short")
    with pytest.raises(ValidationError, match="bad email"):
        await kernel.call("users.register", email="bob", password="long enough!")


async def test_login_issues_tokens_the_gateway_accepts(kernel: Kernel) -> None:
    user = await kernel.call("users.register", email="ann@example.com", password="correct horse")
    tokens = await kernel.call("users.login", email="ANN@example.com", password="correct horse")
    assert isinstance(tokens, Tokens)
    assert (tokens.token_type, tokens.expires_in) == ("Bearer", 900)
    claims = verifier().verify(tokens.access_token)
    assert (claims["sub"], claims["roles"]) == (user.id, ["user"])
    assert (await kernel.call("users.verify", access_token=tokens.access_token))["sub"] == user.id
    with pytest.raises(UnauthenticatedError):  # a refresh token is not an access token
        verifier().verify(tokens.refresh_token)
    with pytest.raises(UnauthenticatedError, match="wrong kind"):
        await kernel.call("users.verify", access_token=tokens.refresh_token)


async def test_a_bad_login_says_the_same_whatever_was_wrong(kernel: Kernel) -> None:
    await kernel.call("users.register", email="ann@example.com", password="correct horse")
    messages = []
    wrong = [
        ("ann@example.com", "wrong horse!"),
        ("nobody@example.com", "x" * 12),
        ("not an email", "correct horse"),  # malformed: no ValidationError to tell it apart
        ("", "correct horse"),
    ]
    for email, password in wrong:
        with pytest.raises(UnauthenticatedError) as caught:
            await kernel.call("users.login", email=email, password=password)
        messages.append(str(caught.value))
    assert messages == ["wrong email or password"] * len(wrong)


async def test_refresh_rotates_and_a_reused_token_revokes_the_session(kernel: Kernel) -> None:
    await kernel.call("users.register", email="ann@example.com", password="correct horse")
    first = await kernel.call("users.login", email="ann@example.com", password="correct horse")
    second = await kernel.call("users.refresh", refresh_token=first.refresh_token)
    assert second.refresh_token != first.refresh_token
    verifier().verify(second.access_token)
    with pytest.raises(UnauthenticatedError, match="already used"):
        await kernel.call("users.refresh", refresh_token=first.refresh_token)
    with pytest.raises(UnauthenticatedError, match="revoked"):  # the thief's reuse ends it all
        await kernel.call("users.refresh", refresh_token=second.refresh_token)
    other = await kernel.call("users.login", email="ann@example.com", password="correct horse")
    await kernel.call("users.logout", refresh_token=other.refresh_token)
    with pytest.raises(UnauthenticatedError, match="revoked"):
        await kernel.call("users.refresh", refresh_token=other.refresh_token)
    with pytest.raises(UnauthenticatedError, match="wrong kind"):
        await kernel.call("users.refresh", refresh_token=other.access_token)


async def test_roles_are_granted_by_admins_only(kernel: Kernel) -> None:
    root = await kernel.call("users.register", email="root@example.com", password="correct horse")
    assert root.roles == ["admin", "user"]
    ann = await kernel.call("users.register", email="ann@example.com", password="correct horse")
    with pytest.raises((ForbiddenError, UnauthenticatedError)):
        await kernel.call("users.grant_role", user_id=ann.id, role="editor")
    ann_principal = Principal(id=ann.id, roles=frozenset({"user"}))
    with pytest.raises(ForbiddenError):
        await kernel.call_with(
            "users.grant_role", {"user_id": ann.id, "role": "editor"}, principal=ann_principal
        )
    updated = await kernel.call_with(
        "users.grant_role", {"user_id": ann.id, "role": "editor"}, principal=ADMIN
    )
    assert updated.roles == ["editor", "user"]
    tokens = await kernel.call("users.login", email="ann@example.com", password="correct horse")
    assert verifier().verify(tokens.access_token)["roles"] == ["editor", "user"]
    revoked = await kernel.call_with(
        "users.revoke_role", {"user_id": ann.id, "role": "editor"}, principal=ADMIN
    )
    assert revoked.roles == ["user"]


async def test_the_plugin_keeps_to_its_manifest() -> None:
    found = await check_plugin(Users, config=CONFIG)
    assert found.name == "users"
    assert found.manifest.emit == ("users.>",)
    assert found.warnings == ()


def test_a_short_secret_is_refused_at_load() -> None:
    config = {**CONFIG, "modules": {"users": {**USERS, "secret": "too short"}}}
    with pytest.raises(ConfigError, match="at least 32 bytes"):
        Kernel([Users], config)


@pytest.mark.parametrize("admin", ["root", "root@localhost", "ro ot@example.com", ""])
def test_an_admin_that_is_not_an_email_is_refused_at_load(admin: str) -> None:
    config = {**CONFIG, "modules": {"users": {**USERS, "admins": ["ok@example.com", admin]}}}
    with pytest.raises(ConfigError, match=r"admins.*not an email address"):
        Kernel([Users], config)


async def test_admins_are_read_as_register_reads_emails() -> None:
    config = {**CONFIG, "modules": {"users": {**USERS, "admins": ["  Root@Example.COM "]}}}
    async with Kernel([Users], config) as k:
        root = await k.call("users.register", email="root@example.com", password="correct horse")
    assert root.roles == ["admin", "user"]


class CrashingStore(NamespacedStore):
    """The users namespace of the kernel's Store whose ``crash_at``-th write from now raises.

    A crash between the two writes of a register, whichever order they come in.
    """

    crash_at: ClassVar[int | None] = None
    writes: ClassVar[int] = 0

    def _write(self) -> None:
        type(self).writes += 1
        if type(self).writes == type(self).crash_at:
            raise ConnectionResetError("the process died here")

    async def put(self, key: str, value: Any, *, ttl_s: float | None = None) -> int:
        self._write()
        return await super().put(key, value, ttl_s=ttl_s)

    async def compare_and_set(
        self, key: str, value: Any, *, revision: int | None, ttl_s: float | None = None
    ) -> int:
        self._write()
        return await super().compare_and_set(key, value, revision=revision, ttl_s=ttl_s)


class CrashingUsers(Users):
    """``users`` on a ``CrashingStore`` (its manifest lets it reach the kernel's whole Store)."""

    manifest = Manifest(kernel=">=0.1,<1", emit=("users.>",), storage=("*",))

    @property
    def store(self) -> NamespacedStore:
        return CrashingStore(self.kernel.store, self.name)


@pytest.fixture
def redis() -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    pytest.importorskip("redis")
    with shared_redis() as server:
        yield server


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    """A Store with transactions (memory) and one without (Redis: the write order does it)."""
    if request.param == "memory":
        return "memory://"
    server: RedisServer = request.getfixturevalue("redis")
    return f"{server.url}?prefix=users-{uuid.uuid4().hex[:8]}"


async def test_a_register_that_dies_between_its_writes_can_be_done_again(storage: str) -> None:
    config = {"kernel": {"storage": storage}, "modules": {"users": USERS}}
    async with Kernel([CrashingUsers], config) as k:
        CrashingStore.writes, CrashingStore.crash_at = 0, 2
        with pytest.raises(InternalError, match="the process died here"):
            await k.call("users.register", email="ann@example.com", password="correct horse")
        CrashingStore.crash_at = None
        ann = await k.call("users.register", email="ann@example.com", password="correct horse")
        tokens = await k.call("users.login", email="ann@example.com", password="correct horse")
        assert verifier().verify(tokens.access_token)["sub"] == ann.id
        users = (await k.store_for("users").scan("user:")).items
        if storage == "memory://":  # one transaction: nothing of the crashed one is left
            assert [u.value["id"] for u in users] == [ann.id]


async def test_an_email_claimed_by_a_user_never_written_is_taken_over(kernel: Kernel) -> None:
    # What a register that died between its writes left before they came in this order.
    await kernel.store_for("users").put("email:ann@example.com", "lost")
    ann = await kernel.call("users.register", email="ann@example.com", password="correct horse")
    await kernel.call("users.login", email="ann@example.com", password="correct horse")
    with pytest.raises(ConflictError, match="already registered"):
        await kernel.call("users.register", email="ann@example.com", password="correct horse")
    assert (await kernel.call("users.get", user_id=ann.id)).email == "ann@example.com"


async def test_a_good_login_rehashes_when_the_argon2_parameters_differ(tmp_path: Path) -> None:
    def config(**cost: int) -> dict[str, Any]:
        return {
            "kernel": {"storage": f"sqlite:///{tmp_path}/users.db"},
            "modules": {"users": {**USERS, **cost}},
        }

    async def stored_hash(k: Kernel, user_id: str) -> str:
        entry = await k.store_for("users").get(f"user:{user_id}")
        assert entry is not None
        return str(entry.value["hash"])

    async with Kernel([Users], config()) as k:
        ann = await k.call("users.register", email="ann@example.com", password="correct horse")
        assert "t=1," in await stored_hash(k, ann.id)
    for cost in (2, 1):  # raised, then lowered: either way the hash follows the config
        async with Kernel([Users], config(argon2_time_cost=cost)) as k:
            with pytest.raises(UnauthenticatedError):  # a wrong password changes nothing
                await k.call("users.login", email="ann@example.com", password="wrong horse!")
            assert f"t={3 - cost}," in await stored_hash(k, ann.id)
            await k.call("users.login", email="ann@example.com", password="correct horse")
            assert f"t={cost}," in await stored_hash(k, ann.id)


async def test_over_the_gateway_a_login_token_opens_admin_routes() -> None:
    gateway = {
        "port": 0,
        "expose": ["users.*"],
        "auth": {
            "jwt": {
                "algorithms": ["HS256"],
                "secret": SECRET,
                "issuer": "organelle-users",
                "audience": "organelle",
                "typ": "at+jwt",
            }
        },
    }
    gw = Gateway()
    config = {**CONFIG, "modules": {"users": USERS, "gateway": gateway}}
    async with Kernel([Users, gw], config), httpx.AsyncClient(base_url=gw.url, timeout=10) as http:
        root = {"email": "root@example.com", "password": "correct horse"}
        ann = {"email": "ann@example.com", "password": "battery staple"}
        assert (await http.post("/api/users/register", json=root)).status_code == 200
        ann_id = (await http.post("/api/users/register", json=ann)).json()["id"]
        root_token = (await http.post("/api/users/login", json=root)).json()["access_token"]
        ann_tokens = (await http.post("/api/users/login", json=ann)).json()
        grant = {"user_id": ann_id, "role": "editor"}
        assert (await http.post("/api/users/grant_role", json=grant)).status_code == 401
        as_ann = {"authorization": f"Bearer {ann_tokens['access_token']}"}
        assert (
            await http.post("/api/users/grant_role", json=grant, headers=as_ann)
        ).status_code == 403
        as_refresh = {"authorization": f"Bearer {ann_tokens['refresh_token']}"}
        assert (
            await http.post("/api/users/grant_role", json=grant, headers=as_refresh)
        ).status_code == 401
        as_root = {"authorization": f"Bearer {root_token}"}
        r = await http.post("/api/users/grant_role", json=grant, headers=as_root)
        assert r.status_code == 200, r.text
        assert r.json()["roles"] == ["editor", "user"]

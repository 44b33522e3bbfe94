"""The users plugin in a real kernel: registration, argon2, JWT login, refresh, roles, manifest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

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
    UnauthenticatedError,
    ValidationError,
)
from organelle.gateway import Gateway
from organelle.testing import capture
from organelle.testing.plugins import check_plugin

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
    assert seen == [("users.registered", {"id": user.id, "email": "ann@example.com"})]
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
    for email, password in (("ann@example.com", "wrong horse!"), ("nobody@example.com", "x" * 12)):
        with pytest.raises(UnauthenticatedError) as caught:
            await kernel.call("users.login", email=email, password=password)
        messages.append(str(caught.value))
    assert messages == ["wrong email or password"] * 2


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

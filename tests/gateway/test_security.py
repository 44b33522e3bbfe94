"""Security over HTTP: forged tokens are 401 (never 500), roles are 403 on every call path."""

from __future__ import annotations

import time
from typing import Any

import pytest

from organelle import ForbiddenError, UnauthenticatedError
from organelle.auth import Principal
from organelle.auth.api_keys import hash_key
from organelle.testing import eventually
from tests.auth.test_jwt import FORGED
from tests.gateway.apps import RBAC, RS256_AUTH, Things, bearer, rs256, serve

pytestmark = pytest.mark.timeout(60)
GATEWAY: dict[str, Any] = {
    "auth": {**RS256_AUTH, "api_keys": {hash_key("key-ci"): {"id": "ci", "roles": ["writer"]}}},
    "rbac": RBAC,
    "expose": ["things.*"],
}


async def test_every_forged_token_is_401_never_500() -> None:
    async with serve(Things, gateway=GATEWAY) as (_, client):
        for name, make in FORGED.items():
            for path in ("/whoami", "/things/1"):  # a guarded route and an open one
                r = await client.get(path, headers={"authorization": f"Bearer {make()}".strip()})
                assert r.status_code == 401, (name, path, r.text)
                assert r.json()["error"]["code"] == "organelle.unauthenticated"
                assert r.headers["www-authenticate"].startswith("Bearer")
        for header in (b"Bearer", b"Basic dXNlcjpwYXNz", b"Bearer a b c", b"Bearer \xe9t\xe9"):
            r = await client.get("/whoami", headers={b"authorization": header})
            assert r.status_code == 401, header


async def test_valid_token_then_roles_and_permissions() -> None:
    async with serve(Things, gateway=GATEWAY) as (_, client):
        assert (await client.get("/whoami")).status_code == 401
        assert (await client.get("/whoami", headers=bearer(rs256()))).status_code == 200
        r = await client.get("/whoami", headers=bearer(rs256(roles=["guest"])))
        assert r.status_code == 403
        assert r.json()["error"]["code"] == "organelle.forbidden"
        # inheritance: admin includes reader
        assert (
            await client.get("/whoami", headers=bearer(rs256(roles=["admin"])))
        ).status_code == 200
        # permissions: only admin's "*" grants things.delete
        writer = bearer(rs256(roles=["writer"]))
        assert (await client.delete("/things/1", headers=writer)).status_code == 403
        r = await client.delete("/things/1", headers=bearer(rs256(roles=["admin"])))
        assert r.status_code == 200


async def test_rpc_roles_hold_on_exposed_methods_and_direct_calls() -> None:
    async with serve(Things, gateway=GATEWAY) as (kernel, client):
        assert (await client.post("/api/things/secret")).status_code == 401
        r = await client.post("/api/things/secret", headers=bearer(rs256(roles=["writer"])))
        assert r.status_code == 403
        r = await client.post("/api/things/secret", headers=bearer(rs256(roles=["admin"])))
        assert r.json() == "s3cret"
        reader = Principal(id="r", roles=frozenset({"reader"}))
        with pytest.raises(ForbiddenError):
            await kernel.call_with("things.secret", principal=reader)
        with pytest.raises(ForbiddenError):
            await kernel.call_with("things.remove", {"id": 1}, principal=reader)
        with pytest.raises(UnauthenticatedError):
            await kernel.call("things.whoami")
        admin = Principal(id="a", roles=frozenset({"admin"}))
        assert await kernel.call_with("things.secret", principal=admin) == "s3cret"


async def test_api_keys_authenticate_and_unknown_keys_are_401() -> None:
    async with serve(Things, gateway=GATEWAY) as (_, client):
        r = await client.get("/whoami", headers={"x-api-key": "key-ci"})
        assert r.status_code == 200
        assert r.json()["id"] == "ci"
        r = await client.get("/whoami", headers={"authorization": "ApiKey key-ci"})
        assert r.status_code == 200
        assert (await client.get("/whoami", headers={"x-api-key": "nope"})).status_code == 401


async def test_custom_factory_callable() -> None:
    from organelle.auth.factory import Credentials

    async def from_header(creds: Credentials) -> Principal | None:
        user = creds.headers.get("x-user")
        return None if user is None else Principal(id=user, roles=frozenset({"reader"}))

    async with serve(Things, gateway={"rbac": RBAC}, factory=from_header) as (_, client):
        r = await client.get("/whoami", headers={"x-user": "linus"})
        assert r.json()["id"] == "linus"
        assert (await client.get("/whoami")).status_code == 401


REVOKED: set[str] = set()


def is_revoked(claims: Any) -> bool:
    """The deny-list the gateway below names in config."""
    return claims.get("jti") in REVOKED


async def test_a_revoked_or_expired_token_is_401_although_it_was_cached() -> None:
    jwt_config = {**RS256_AUTH["jwt"], "revoked": "tests.gateway.test_security:is_revoked"}
    async with serve(Things, gateway={"auth": {"jwt": jwt_config}}) as (_, client):
        token = bearer(rs256(jti="http-1"))
        for _ in range(3):  # verified once, then from the cache
            assert (await client.get("/whoami", headers=token)).status_code == 200
        REVOKED.add("http-1")
        r = await client.get("/whoami", headers=token)
        assert r.status_code == 401, r.text
        assert "revoked" in r.json()["error"]["message"]
        short = bearer(rs256(jti="http-2", exp=int(time.time()) + 1))  # leeway_s is 5
        assert (await client.get("/whoami", headers=short)).status_code == 200

        async def refused() -> None:
            assert (await client.get("/whoami", headers=short)).status_code == 401

        await eventually(refused, timeout_s=10, interval_s=0.2)

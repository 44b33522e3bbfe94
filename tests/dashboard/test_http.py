"""The JSON API behind the gateway's auth: roles like the event stream, typed errors on bad input."""

from __future__ import annotations

from typing import Any

import pytest

from organelle.auth.api_keys import hash_key
from organelle.dashboard import API_VIEWS
from tests.auth.test_jwt import FORGED
from tests.dashboard.apps import API, Calc, serve
from tests.gateway.apps import RBAC, RS256_AUTH, bearer, rs256

pytestmark = pytest.mark.timeout(30)
GATEWAY: dict[str, Any] = {
    "auth": {
        **RS256_AUTH,
        "api_keys": {
            hash_key("key-ops"): {"id": "ops-bot", "roles": ["ops"]},
            hash_key("key-guest"): {"id": "guest", "roles": ["guest"]},
        },
    },
    "rbac": {
        "roles": {**RBAC["roles"], "ops": [], "guest": []},
        "inherits": {**RBAC["inherits"], "admin": ["writer", "ops"]},
    },
}
GUARDED = {"enabled": True, "roles": ["ops"]}


async def test_every_view_needs_a_dashboard_role() -> None:
    async with serve(Calc, dashboard=GUARDED, gateway=GATEWAY) as (_, client):
        for name in ("", *API_VIEWS):
            path = f"{API}/{name}".rstrip("/")
            r = await client.get(path)
            assert r.status_code == 401, (path, r.text)
            assert r.json()["error"]["code"] == "organelle.unauthenticated"
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert r.headers["cache-control"] == "no-store"
            r = await client.get(path, headers=bearer(rs256(roles=["reader"])))
            assert r.status_code == 403, (path, r.text)
            assert r.json()["error"]["code"] == "organelle.forbidden"
            assert "ops" in r.json()["error"]["message"]
            r = await client.get(path, headers=bearer(rs256(roles=["ops"])))
            assert r.status_code == 200, (path, r.text)


async def test_rbac_inheritance_and_api_keys_count_like_on_routes() -> None:
    async with serve(Calc, dashboard=GUARDED, gateway=GATEWAY) as (_, client):
        admin = bearer(rs256(roles=["admin"]))  # admin inherits ops
        assert (await client.get(f"{API}/overview", headers=admin)).status_code == 200
        r = await client.get(f"{API}/modules", headers={"x-api-key": "key-ops"})
        assert r.status_code == 200
        r = await client.get(f"{API}/modules", headers={"authorization": "ApiKey key-ops"})
        assert r.status_code == 200
        r = await client.get(f"{API}/modules", headers={"x-api-key": "key-guest"})
        assert r.status_code == 403
        r = await client.get(f"{API}/modules", headers={"x-api-key": "wrong"})
        assert r.status_code == 401


async def test_forged_tokens_are_401_never_500() -> None:
    async with serve(Calc, dashboard=GUARDED, gateway=GATEWAY) as (_, client):
        for name, make in FORGED.items():
            r = await client.get(
                f"{API}/config", headers={"authorization": f"Bearer {make()}".strip()}
            )
            assert r.status_code == 401, (name, r.text)


async def test_the_page_itself_is_open_its_data_is_not() -> None:
    async with serve(Calc, dashboard=GUARDED, gateway=GATEWAY) as (_, client):
        page = await client.get("/_dashboard")
        assert page.status_code == 200
        assert "hunter2" not in page.text
        assert "calc" not in page.text  # the page carries no data, only the API does


async def test_without_roles_the_api_is_open_but_bad_credentials_still_fail() -> None:
    async with serve(Calc, dashboard={"enabled": True}, gateway=GATEWAY) as (_, client):
        assert (await client.get(f"{API}/overview")).status_code == 200
        r = await client.get(f"{API}/overview", headers=bearer("not-a-jwt"))
        assert r.status_code == 401


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("limit=0", "limit"),
        ("limit=501", "limit"),
        ("limit=ten", "limit"),
        ("limit=-1", "limit"),
        ("offset=-5", "offset"),
        ("offset=1e3", "offset"),
    ],
)
async def test_bad_query_parameters_are_422_with_the_field(query: str, field: str) -> None:
    async with serve(Calc, dashboard={"enabled": True}) as (_, client):
        r = await client.get(f"{API}/jobs/dead?{query}")
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "organelle.validation"
    assert error["details"]["errors"][0]["field"] == field

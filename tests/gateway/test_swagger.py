"""``/docs``: Swagger UI and its files served by the gateway itself, nothing from elsewhere."""

from __future__ import annotations

import re
import sys

import httpx
import pytest
from starlette.applications import Starlette

from organelle import Kernel
from organelle.gateway import Gateway
from organelle.gateway._swagger import swagger_routes
from tests.dashboard.apps import Calc

pytestmark = pytest.mark.timeout(30)


async def test_the_page_and_its_files_come_from_the_gateway() -> None:
    gw = Gateway()
    config = {"kernel": {"storage": "memory://"}, "modules": {"gateway": {"port": 0}}}
    async with Kernel([Calc, gw], config), httpx.AsyncClient(base_url=gw.url) as client:
        page = await client.get("/docs")
        files = {
            src: await client.get(src)
            for src in re.findall(r'(?:src|href)="(/docs/[^"]+)"', page.text)
        }
        spec = await client.get(page.text.split('data-spec="')[1].split('"')[0])
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp
    assert "default-src 'none'" in csp
    assert not re.search(r"https?://", page.text)
    assert set(files) == {
        "/docs/swagger-ui.css",
        "/docs/swagger-ui-bundle.js",
        "/docs/docs.js",
        "/docs/favicon-32x32.png",
    }
    for src, r in files.items():
        assert r.status_code == 200, src
        assert len(r.content) > 0
    assert files["/docs/swagger-ui-bundle.js"].headers["content-type"].startswith("text/javascript")
    assert b"SwaggerUIBundle" in files["/docs/swagger-ui-bundle.js"].content
    assert b"validatorUrl: null" in files["/docs/docs.js"].content  # no call to an online validator
    assert spec.json()["openapi"] == "3.1.0"


async def test_without_the_bundle_the_page_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "swagger_ui_bundle", None)  # as if not installed
    app = Starlette(routes=swagger_routes("shop <api>"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        page = await client.get("/docs")
        bundle = await client.get("/docs/swagger-ui-bundle.js")
    assert page.status_code == 200
    assert "pip install 'organelle[gateway]'" in page.text
    assert "shop &lt;api&gt;" in page.text
    assert bundle.status_code == 404

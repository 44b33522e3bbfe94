"""The page and its assets: served with the right types and headers, only when enabled."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from organelle import ConfigError
from organelle.dashboard import API_VIEWS
from tests.dashboard.apps import API, ON, Calc, serve

pytestmark = pytest.mark.timeout(30)
ROOT = Path(__file__).resolve().parents[2]


async def test_page_and_assets_have_their_content_types_and_no_outside_sources() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        page = await client.get("/_dashboard")
        slash = await client.get("/_dashboard/")
        script = await client.get("/_dashboard/dashboard.js")
        charts = await client.get("/_dashboard/charts.js")
        style = await client.get("/_dashboard/dashboard.css")
        head = await client.head("/_dashboard/dashboard.js")
    assert page.status_code == slash.status_code == 200
    assert page.text == slash.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert script.headers["content-type"] == "text/javascript; charset=utf-8"
    assert charts.headers["content-type"] == "text/javascript; charset=utf-8"
    assert style.headers["content-type"] == "text/css; charset=utf-8"
    for r in (page, script, charts, style):
        assert r.headers["x-content-type-options"] == "nosniff"
        assert int(r.headers["content-length"]) == len(r.content) > 0
    assert (head.status_code, head.content) == (200, b"")
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    # Self-contained: no CDN, no inline script, the assets under the configured path.
    svg_ns = "http://www.w3.org/2000/svg"  # a name, not a place: nothing is fetched from it
    assert not re.search(r"https?://", page.text + script.text + charts.text.replace(svg_ns, ""))
    assert '<script src="/_dashboard/charts.js" defer></script>' in page.text
    assert '<script src="/_dashboard/dashboard.js" defer></script>' in page.text
    assert 'href="/_dashboard/dashboard.css"' in page.text
    assert 'data-base="/_dashboard" data-refresh-ms="2000"' in page.text
    assert "innerHTML" not in script.text.replace("(never innerHTML)", "") + charts.text
    sections = ("overview", "modules", "rpc", "events", "jobs", "streams", "nodes", "config")
    for section in (*sections, "charts", "topology", "tail", "flags", "sagas"):
        assert f'<section id="{section}">' in page.text


async def test_custom_path_and_refresh_reach_the_page_and_the_api() -> None:
    dashboard = {"enabled": True, "path": "/ops/board", "refresh_s": 5}
    async with serve(Calc, dashboard=dashboard) as (_, client):
        page = await client.get("/ops/board")
        assert 'data-base="/ops/board" data-refresh-ms="5000"' in page.text
        index = (await client.get("/ops/board/api")).json()
        assert index["views"] == {name: f"/ops/board/api/{name}" for name in API_VIEWS}
        for name in API_VIEWS:
            r = await client.get(f"/ops/board/api/{name}")
            assert r.status_code == 200, (name, r.text)
            assert r.headers["content-type"] == "application/json"
            assert r.headers["cache-control"] == "no-store"
        overview = (await client.get("/ops/board/api/overview")).json()
        assert overview["refresh_s"] == 5
        assert (await client.get("/_dashboard")).status_code == 404


async def test_absent_unless_enabled() -> None:
    for dashboard in (None, {"enabled": False, "roles": ["ops"]}):
        async with serve(Calc, dashboard=dashboard) as (kernel, client):
            for path in ("/_dashboard", "/_dashboard/", "/_dashboard/dashboard.js", f"{API}/rpc"):
                r = await client.get(path)
                assert r.status_code == 404, path
                assert r.json()["error"]["code"] == "organelle.not_found"
            assert kernel.call_stats is None  # nothing switched on behind the user's back


async def test_unknown_views_and_other_methods_get_the_gateway_errors() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        r = await client.get(f"{API}/nope")
        assert (r.status_code, r.json()["error"]["code"]) == (404, "organelle.not_found")
        r = await client.post(f"{API}/overview", json={})
        assert (r.status_code, r.json()["error"]["code"]) == (405, "organelle.method_not_allowed")
        r = await client.delete("/_dashboard")
        assert r.status_code == 405


@pytest.mark.parametrize(
    "bad",
    [{"path": "_dashboard"}, {"path": "/a/"}, {"path": "/a b"}, {"path": "/<x>"}, {"refresh_s": 0}],
)
async def test_bad_dashboard_config_is_refused_before_start(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError) as info:
        async with serve(Calc, dashboard={"enabled": True, **bad}):
            pass
    assert "dashboard" in str(info.value)


async def test_the_shop_example_turns_it_on() -> None:
    text = (ROOT / "examples" / "shop" / "http.toml").read_text()
    assert "[modules.gateway.dashboard]" in text
    assert re.search(r"(?m)^enabled = true$", text)


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed")
@pytest.mark.parametrize("name", ["dashboard.js", "charts.js"])
def test_the_scripts_parse(name: str) -> None:
    script = ROOT / "src" / "organelle" / "dashboard" / "static" / name
    done = subprocess.run(
        ["node", "--check", str(script)], capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr


async def test_the_page_names_the_event_socket_only_when_some_topic_streams() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):  # no topic allowed: no live tail
        assert 'data-events-ws=""' in (await client.get("/_dashboard")).text
    streaming = {"stream": {"topics": ["calc.*"], "websocket_path": "/ws"}}
    async with serve(Calc, dashboard=ON, gateway=streaming) as (_, client):
        assert 'data-events-ws="/ws"' in (await client.get("/_dashboard")).text

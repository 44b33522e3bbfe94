"""The dashboard and /docs in headless Chromium: no console error, live data, actions end to end.

Playwright drives the system's ``chromium`` (Debian's package, which
``.ci/run`` installs when absent) through ``executable_path``: no browser is
downloaded. Without chromium the tests skip, except in CI (``CI`` set), where
they fail: there the browser is part of the setup.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from pydantic import BaseModel

from organelle import Kernel, Module, job, rpc
from organelle.auth.api_keys import hash_key
from organelle.gateway import Gateway
from organelle.testing import eventually

pytestmark = pytest.mark.timeout(60)
playwright = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    if os.environ.get("CI"):
        pytest.fail("chromium is missing in CI: .ci/run installs it", pytrace=False)
    pytest.skip("no chromium on PATH (apt-get install chromium)", allow_module_level=True)

WAIT_MS = 10_000
KEY = "ApiKey key-ops"


class Order(BaseModel):
    """An order line, to show as a component schema."""

    sku: str
    qty: int = 1


class Desk(Module):
    """RPC to chart, a job that fails until fixed, flags to change."""

    name = "desk"
    broken = True

    class Flags(BaseModel):
        discount_pct: int = 0
        new_checkout: bool = False

    @rpc
    async def ping(self, n: int) -> int:
        return n

    @rpc
    async def quote(self, order: Order) -> float:
        return order.qty * 2.5

    @job(max_attempts=1)
    async def sync(self, order: str) -> str:
        if type(self).broken:
            raise ConnectionError(f"upstream refused {order}")
        return order


class Front(Module):
    name = "front"
    requires = ("desk",)


def _config() -> dict[str, Any]:
    return {
        "kernel": {"storage": "memory://", "jobs": "memory://"},
        "modules": {
            "gateway": {
                "port": 0,
                "expose": ["desk.*"],
                "auth": {"api_keys": {hash_key("key-ops"): {"id": "ops-bot", "roles": ["ops"]}}},
                "stream": {"topics": [">"]},
                "dashboard": {"enabled": True, "roles": ["ops"], "refresh_s": 0.25},
            }
        },
    }


@asynccontextmanager
async def browsing() -> AsyncIterator[tuple[Kernel, Gateway, Any, list[str]]]:
    """A running app, and a signed-in page that records every console error."""
    Desk.broken = True
    gw = Gateway()
    async with Kernel([Desk, Front, gw], _config()) as kernel, playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = await browser.new_context()
            await context.add_init_script(
                f"sessionStorage.setItem('organelle.dashboard.authorization', '{KEY}')"
            )
            page = await context.new_page()
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield kernel, gw, page, errors
        finally:
            await browser.close()


async def test_every_section_fills_with_live_data_and_no_console_error() -> None:
    async with browsing() as (kernel, gw, page, errors):
        await page.goto(f"{gw.url}/_dashboard")
        await page.wait_for_selector("#modules-table td:text-is('desk')")
        await page.wait_for_selector("#state.s-serving")
        for i in range(20):
            await kernel.call("desk.ping", n=i)
        # the RPC chart draws a line once two samples saw calls between them
        await page.wait_for_selector("#chart-rate svg polyline", state="attached")
        await page.wait_for_selector("#rpc-table td:text-is('desk.ping')")
        await page.wait_for_selector("#topology-graph g[data-module='front']")
        await page.wait_for_selector("#topology-graph line.edge", state="attached")
        await page.wait_for_selector("#flags-table td:text-is('desk.discount_pct')")
        # the live tail: an event emitted now shows up in the page
        for attempt in range(50):  # the socket subscribes just after the page loads
            await kernel.emit("desk.opened", {"attempt": attempt})
            if await page.locator("#tail-list li").count():
                break
            await page.wait_for_timeout(100)
        await page.wait_for_selector("#tail-list li strong:text-is('desk.opened')")
        assert await page.locator("#problem").is_hidden()
    assert errors == []


async def test_a_dead_job_is_retried_from_the_page() -> None:
    async with browsing() as (kernel, gw, page, errors):
        job_id = await kernel.enqueue("desk.sync", order="A-1")
        await kernel.drain_jobs(timeout_s=10)
        assert (await kernel.jobs.get(job_id)).state == "dead"
        Desk.broken = False
        await page.goto(f"{gw.url}/_dashboard#jobs")
        row = page.locator("#jobs-dead tr", has_text=job_id)
        await row.get_by_role("button", name="Retry").click()
        await page.wait_for_selector("#confirm[open]")
        assert job_id in (await page.locator("#confirm-text").text_content() or "")
        await page.click("#confirm-ok")
        await page.wait_for_selector("#notice:not([hidden]):text-matches('^Done')")
        await kernel.drain_jobs(timeout_s=10)
        assert (await kernel.jobs.get(job_id)).state == "succeeded"
        await page.wait_for_selector("#jobs-dead p.empty")  # gone from the dead letters
    assert errors == []


async def test_a_flag_is_changed_from_the_page_and_a_cancel_changes_nothing() -> None:
    async with browsing() as (kernel, gw, page, errors):
        desk: Any = kernel.module("desk")
        await page.goto(f"{gw.url}/_dashboard#flags")
        row = page.locator("#flags-table tr", has_text="desk.discount_pct")
        await row.get_by_role("button", name="Change…").click()
        await page.fill("#flag-value", "25")
        await page.click("#flag-save")
        await page.wait_for_selector("#confirm[open]")
        await page.click("#confirm-cancel")  # asked, and said no
        await page.wait_for_timeout(300)
        assert desk.flags.discount_pct == 0
        await row.get_by_role("button", name="Change…").click()
        await page.fill("#flag-value", "not json")
        await page.click("#flag-save")
        await page.wait_for_selector("#flag-error:not([hidden])")  # stays open, says why
        await page.fill("#flag-value", "25")
        await page.click("#flag-save")
        await page.click("#confirm-ok")
        await page.wait_for_selector("#flags-table tr:has-text('desk.discount_pct') .changed")
        await page.wait_for_function(
            "[...document.querySelectorAll('#flags-table .changed')]"
            ".some((e) => e.textContent === '25')"
        )
        # The page reads the Store; the module's cache follows its watch a moment later.
        await eventually(lambda: desk.flags.discount_pct == 25, timeout_s=5)
    assert errors == []


async def test_swagger_ui_shows_the_operations_and_component_schemas() -> None:
    async with browsing() as (_, gw, page, errors):
        await page.goto(f"{gw.url}/docs")
        await page.wait_for_selector(".swagger-ui .info .title")
        await page.wait_for_selector(".swagger-ui section.models")
        await page.wait_for_selector(".swagger-ui section.models :text-is('Order')")  # a component
        assert await page.locator(".swagger-ui .opblock").count() > 0
    assert errors == []

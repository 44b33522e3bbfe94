"""The dashboard's sagas view in headless Chromium: a stuck saga shown, retried and aborted.

Same conventions as ``test_browser.py``: the system's ``chromium`` through
``executable_path``, skipped without it, except in CI (``CI`` set), where it
fails. Sagas run on sqlite jobs and storage, as in ``test_sagas.py``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar

import pytest

from organelle import Kernel, Module, rpc
from organelle.auth.api_keys import hash_key
from organelle.dashboard import _sagas as dashboard_sagas
from organelle.gateway import Gateway
from organelle.sagas import Saga, Step
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
SECRET = "pw-in-clear-1"  # noqa: S105 - a test value the page must never show


class Shop(Module):
    """Sagas that get stuck (refund fails while the bank is down), complete, or wait to pack."""

    name = "shop"
    bank_up = False
    packing: ClassVar[asyncio.Event]
    parcel: ClassVar[asyncio.Event]

    @rpc
    async def charge(self, password: str) -> None:
        return None

    @rpc
    async def refund(self, password: str) -> None:
        if not type(self).bank_up:
            raise RuntimeError("bank down")

    @rpc
    async def ship(self, password: str) -> None:
        raise RuntimeError("no truck")

    @rpc
    async def pack(self, password: str) -> None:
        """Hold the saga running until the test hands over the parcel (bounded)."""
        type(self).packing.set()
        async with asyncio.timeout(20):
            await type(self).parcel.wait()

    checkout = Saga(
        "checkout",
        steps=[
            Step("charge", action="shop.charge", compensate="shop.refund", compensate_attempts=1),
            Step("ship", action="shop.ship", max_attempts=1),
        ],
    )
    quick = Saga("quick", steps=[Step("charge", action="shop.charge")])
    slow = Saga(
        "slow",
        steps=[
            Step("charge", action="shop.charge", compensate="shop.refund", compensate_attempts=1),
            Step("pack", action="shop.pack", max_attempts=1),
            Step("ship", action="shop.ship", max_attempts=1),
        ],
    )


def _config(tmp_path: Path) -> dict[str, Any]:
    return {
        "kernel": {"storage": f"sqlite:///{tmp_path}/s.db", "jobs": f"sqlite:///{tmp_path}/j.db"},
        "modules": {
            "gateway": {
                "port": 0,
                "auth": {"api_keys": {hash_key("key-ops"): {"id": "ops-bot", "roles": ["ops"]}}},
                "dashboard": {"enabled": True, "roles": ["ops"], "refresh_s": 0.25},
            }
        },
    }


@asynccontextmanager
async def browsing(tmp_path: Path) -> AsyncIterator[tuple[Kernel, Gateway, Any, list[str]]]:
    """A running app, and a signed-in page that records every console error."""
    Shop.bank_up = False
    Shop.packing, Shop.parcel = asyncio.Event(), asyncio.Event()
    gw = Gateway()
    async with (
        Kernel([Shop, gw], _config(tmp_path)) as kernel,
        playwright.async_playwright() as p,
    ):
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
            Shop.parcel.set()  # a pack still waiting ends now, not at its timeout
            await browser.close()


async def test_a_stuck_saga_is_shown_masked_and_retried_from_the_page(tmp_path: Path) -> None:
    async with browsing(tmp_path) as (kernel, gw, page, errors):
        stuck = await kernel.sagas.start("shop.checkout", {"password": SECRET})
        done = await kernel.sagas.start("shop.quick", {"password": SECRET})
        await kernel.drain_jobs(timeout_s=10)
        assert (await kernel.sagas.get(stuck)).state == "stuck"
        assert (await kernel.sagas.get(done)).state == "completed"

        await page.goto(f"{gw.url}/_dashboard#sagas")
        row = page.locator("#sagas-table tbody tr", has_text=stuck)
        await row.wait_for()
        assert await page.locator("#sagas-table tbody tr").count() == 1  # not the completed one
        assert await row.get_attribute("class") == "bad"
        cells = [(await c.text_content() or "") for c in await row.locator("td").all()]
        name, sid, state, _updated, steps, error, _button = cells
        assert (name, sid, state) == ("shop.checkout", stuck, "stuck")
        assert await row.locator(".badge.s-stuck").count() == 1
        assert steps.startswith("charge: done (compensation: ")
        assert "bank down" in steps
        assert "ship: failed (" in steps
        assert "no truck" in steps
        assert error.startswith("compensating charge: ")
        assert "bank down" in error
        assert SECRET not in await page.content()
        assert SECRET not in await page.evaluate("document.body.innerText")
        assert await row.get_by_role("button", name="Abort").count() == 0  # stuck: retry only
        assert await page.locator("#sagas-more").is_hidden()  # all of them are listed

        Shop.bank_up = True
        await row.get_by_role("button", name="Retry").click()
        await page.wait_for_selector("#confirm[open]")
        assert stuck in (await page.locator("#confirm-text").text_content() or "")
        await page.click("#confirm-ok")
        await page.wait_for_selector("#notice:not([hidden]):text-matches('^Done')")
        await kernel.drain_jobs(timeout_s=10)
        rec = await kernel.sagas.get(stuck)
        assert rec.state == "compensated"
        assert [s.state for s in rec.steps] == ["compensated", "failed"]
        # finished: gone from the unfinished sagas
        await page.wait_for_selector("#sagas-table p.empty:text-is('no unfinished sagas')")
    assert errors == []


async def test_a_running_saga_is_aborted_from_the_page(tmp_path: Path) -> None:
    async with browsing(tmp_path) as (kernel, gw, page, errors):
        Shop.bank_up = True
        sid = await kernel.sagas.start("shop.slow", {"password": SECRET})
        await eventually(Shop.packing.is_set, timeout_s=10)  # held in its second step

        await page.goto(f"{gw.url}/_dashboard#sagas")
        row = page.locator("#sagas-table tbody tr", has_text=sid)
        await row.locator(".badge.s-running").wait_for()
        assert await row.get_by_role("button", name="Retry").count() == 0  # running: abort only
        await row.get_by_role("button", name="Abort").click()
        await page.wait_for_selector("#confirm[open]")
        await page.click("#confirm-cancel")  # asked, and said no
        await page.wait_for_selector("#confirm[open]", state="detached")
        assert not (await kernel.sagas.get(sid)).aborted
        await row.get_by_role("button", name="Abort").click()
        await page.wait_for_selector("#confirm[open]")
        assert sid in (await page.locator("#confirm-text").text_content() or "")
        await page.click("#confirm-ok")
        await page.wait_for_selector("#notice:not([hidden]):text-matches('^Done')")
        rec = await kernel.sagas.get(sid)
        assert (rec.state, rec.aborted) == ("running", True)  # the step in flight finishes first
        # aborted: the page offers no second abort while the step finishes
        await row.get_by_role("button", name="Abort").wait_for(state="detached")
        assert await row.locator(".badge.s-running").count() == 1

        Shop.parcel.set()
        await kernel.drain_jobs(timeout_s=10)
        rec = await kernel.sagas.get(sid)
        assert rec.state == "compensated"
        assert [s.state for s in rec.steps] == ["compensated", "compensated", "pending"]
        assert rec.error == "aborted"
        await page.wait_for_selector("#sagas-table p.empty:text-is('no unfinished sagas')")
        assert SECRET not in await page.content()
    assert errors == []


async def test_a_capped_list_says_there_are_more(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(dashboard_sagas, "MAX_SAGAS", 1)
    async with browsing(tmp_path) as (kernel, gw, page, errors):
        first = await kernel.sagas.start("shop.checkout", {"password": SECRET})
        await kernel.sagas.start("shop.checkout", {"password": SECRET})
        await kernel.drain_jobs(timeout_s=10)
        await page.goto(f"{gw.url}/_dashboard#sagas")
        await page.locator("#sagas-table tbody tr", has_text=first).wait_for()
        assert await page.locator("#sagas-table tbody tr").count() == 1
        more = page.locator("#sagas-more")
        await more.wait_for()
        assert (await more.text_content() or "").startswith("The 1 oldest unfinished sagas")
    assert errors == []

"""Jobs on the dashboard: types with their cron, backlog, worker counters and dead letters."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from organelle.config.secrets import MASK
from tests.dashboard.apps import API, ON, Calc, Mail, serve

pytestmark = pytest.mark.timeout(30)


async def view(client: httpx.AsyncClient, path: str) -> Any:
    r = await client.get(f"{API}/{path}")
    assert r.status_code == 200, r.text
    return r.json()


async def test_job_types_backlog_and_dead_letters_follow_the_queue() -> None:
    async with serve(Mail, dashboard=ON, jobs="memory://", job_worker=False) as (k, client):
        first = await view(client, "jobs")
        await k.enqueue("mail.send", to="ada@example.com")
        await k.enqueue("mail.send", to="bob@example.com")
        waiting = await view(client, "jobs")
    assert first["enabled"] is True
    assert first["worker"] is None  # this node only enqueues
    assert (first["dead"], first["backlog"]) == (0, {})
    types = {t["name"]: t for t in first["types"]}
    assert set(types) == {"mail.send", "mail.bounce", "mail.digest"}
    assert types["mail.digest"]["cron"] == "0 3 * * * (UTC)"
    assert types["mail.send"]["cron"] is None
    assert (types["mail.send"]["max_attempts"], types["mail.bounce"]["max_attempts"]) == (3, 1)
    assert waiting["backlog"] == {"mail.send": 2}
    assert {t["name"]: t["backlog"] for t in waiting["types"]}["mail.send"] == 2


async def test_a_job_that_fails_for_good_is_listed_with_its_error_and_masked_params() -> None:
    async with serve(Mail, dashboard=ON, jobs="memory://") as (k, client):
        ok = await k.enqueue("mail.send", to="ada@example.com")
        dead_id = await k.enqueue(
            "mail.bounce",
            to="bob@example.com",
            password="pw-123",  # noqa: S106 - a test value the dashboard must mask
        )
        await k.drain_jobs(timeout_s=10)
        jobs = await view(client, "jobs")
        dead = await view(client, "jobs/dead")
        page = await view(client, "jobs/dead?limit=1&offset=1")
        assert (await k.jobs.get(ok)).state == "succeeded"
    assert (jobs["dead"], jobs["dead_capped"]) == (1, False)
    worker = jobs["worker"]
    assert (worker["succeeded"], worker["dead"], worker["in_flight"]) == (1, 1, 0)
    assert jobs["backlog"] == {}
    assert (dead["enabled"], dead["limit"], dead["offset"]) == (True, 50, 0)
    (item,) = dead["items"]
    assert (item["id"], item["name"]) == (dead_id, "mail.bounce")
    assert (item["attempts"], item["max_attempts"]) == (1, 1)
    assert item["error_type"] == "ConnectionError"
    assert item["error"] == "smtp refused bob@example.com"
    assert item["params"] == {"to": "bob@example.com", "password": MASK}
    assert item["updated_at"] >= item["created_at"] > 0
    assert page["items"] == []  # past the only dead job


async def test_a_node_without_a_job_queue_says_so() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        jobs = await view(client, "jobs")
        dead = await view(client, "jobs/dead")
    assert jobs["enabled"] is False
    assert "no job queue" in jobs["reason"]
    assert (dead["enabled"], dead["items"]) == (False, [])

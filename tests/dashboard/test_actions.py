"""Dashboard actions: behind action_roles, typed errors, and each one changes the real thing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from organelle import Kernel, Module, job
from organelle.auth.api_keys import hash_key
from organelle.dashboard import ACTIONS
from organelle.gateway import Gateway
from organelle.jobs.worker import Worker
from organelle.testing import capture, eventually
from tests.dashboard.apps import API, ON, Audit, Calc, Mail, serve
from tests.dashboard.test_sagas import Pay

pytestmark = pytest.mark.timeout(30)
KEYS = {"x-api-key": "key-ops"}
GATEWAY: dict[str, Any] = {
    "auth": {
        "api_keys": {
            hash_key("key-ops"): {"id": "ops-bot", "roles": ["ops"]},
            hash_key("key-viewer"): {"id": "watcher", "roles": ["viewer"]},
        }
    }
}
GUARDED = {"enabled": True, "roles": ["ops", "viewer"]}


class Flaky(Module):
    """A job that fails while ``broken``: dead first, then succeeds once retried."""

    name = "flaky"
    broken = True
    runs = 0

    @job(max_attempts=1)
    async def sync(self, n: int) -> None:
        type(self).runs += 1
        if type(self).broken:
            raise ConnectionError("upstream down")


class Shop(Module):
    name = "shop"

    class Flags(BaseModel):
        new_checkout: bool = False
        discount_pct: int = 0


async def act(
    client: httpx.AsyncClient, name: str, body: Any = None, headers: dict[str, str] | None = None
) -> httpx.Response:
    return await client.post(
        f"{API}/actions/{name}", json=body or {}, headers=KEYS if headers is None else headers
    )


def error(r: httpx.Response, status: int) -> str:
    assert r.status_code == status, r.text
    code: str = r.json()["error"]["code"]
    return code


async def test_reading_roles_do_not_act_and_every_action_needs_an_action_role() -> None:
    async with serve(Calc, dashboard=GUARDED, gateway=GATEWAY) as (_, client):
        watcher = {"x-api-key": "key-viewer"}
        assert (await client.get(f"{API}/modules", headers=watcher)).status_code == 200
        for name in ACTIONS:
            r = await act(client, name, {}, headers={})
            assert error(r, 401) == "organelle.unauthenticated", name
            r = await act(client, name, {}, headers=watcher)
            assert error(r, 403) == "organelle.forbidden", name
            assert "ops" in r.json()["error"]["message"]
        r = await act(client, "modules/reload", {"module": "calc"})
        assert r.status_code == 200, r.text
        index = (await client.get(API, headers=KEYS)).json()
        assert index["actions"] == {n: f"{API}/actions/{n}" for n in ACTIONS}


async def test_action_roles_from_config_replace_ops() -> None:
    dashboard = {**GUARDED, "action_roles": ["viewer"]}
    async with serve(Calc, dashboard=dashboard, gateway=GATEWAY) as (_, client):
        r = await act(client, "modules/reload", {"module": "calc"})
        assert error(r, 403) == "organelle.forbidden"
        r = await act(client, "modules/reload", {"module": "calc"}, {"x-api-key": "key-viewer"})
        assert r.status_code == 200, r.text


async def test_bodies_are_json_objects_with_the_fields_each_action_needs() -> None:
    async with serve(Calc, dashboard=ON, gateway=GATEWAY) as (_, client):
        url = f"{API}/actions/modules/reload"
        text = {**KEYS, "content-type": "text/plain"}
        json = {**KEYS, "content-type": "application/json"}
        r = await client.post(url, content=b"module=calc", headers=text)
        assert error(r, 422) == "organelle.validation"
        assert "application/json" in r.json()["error"]["message"]
        r = await client.post(url, content=b"[1]", headers=json)
        assert error(r, 422) == "organelle.validation"
        r = await client.post(url, content=b"{", headers=json)
        assert error(r, 422) == "organelle.validation"
        r = await act(client, "modules/reload", {"module": 3})
        assert r.json()["error"]["details"]["errors"] == [
            {"field": "module", "message": "a non-empty string"}
        ]
        r = await act(client, "modules/reload", {"module": "nope"})
        assert error(r, 404) == "organelle.not_found"
        r = await client.get(url)
        assert r.status_code == 405


async def test_retry_runs_a_dead_job_again_and_refuses_one_that_is_not_dead() -> None:
    Flaky.broken, Flaky.runs = True, 0
    async with serve(Flaky, dashboard=ON, gateway=GATEWAY, jobs="memory://") as (k, client):
        job_id = await k.enqueue("flaky.sync", n=1)
        await k.drain_jobs(timeout_s=10)
        assert (await k.jobs.get(job_id)).state == "dead"
        Flaky.broken = False
        r = await act(client, "jobs/retry", {"id": job_id})
        assert r.json() == {"ok": True, "result": {"retried": job_id}}
        await k.drain_jobs(timeout_s=10)
        assert (await k.jobs.get(job_id)).state == "succeeded"
        assert Flaky.runs == 2
        r = await act(client, "jobs/retry", {"id": job_id})
        assert error(r, 409) == "organelle.storage.conflict"
        assert "not dead" in r.json()["error"]["message"]
        r = await act(client, "jobs/retry", {"id": "no-such-job"})
        assert error(r, 404) == "organelle.jobs.not_found"


async def test_purge_deletes_only_dead_jobs_one_or_all() -> None:
    async with serve(Mail, dashboard=ON, gateway=GATEWAY, jobs="memory://") as (k, client):
        dead = [await k.enqueue("mail.bounce", to=f"u{i}@example.com") for i in range(3)]
        done = await k.enqueue("mail.send", to="ada@example.com")
        await k.drain_jobs(timeout_s=10)
        r = await act(client, "jobs/purge", {"ids": [dead[0], done, "gone-already"]})
        assert r.json()["result"] == {"purged": 1}
        assert (await k.jobs.get(done)).state == "succeeded"  # not dead: left alone
        assert len(await k.jobs.dead_letters.list()) == 2
        r = await act(client, "jobs/purge", {"ids": []})
        assert error(r, 422) == "organelle.validation"
        r = await act(client, "jobs/purge", {})
        assert r.json()["result"] == {"purged": 2}
        assert await k.jobs.dead_letters.list() == []


async def test_reload_module_swaps_the_instance_and_reload_config_reports_the_diff() -> None:
    async with serve(Calc, Audit, dashboard=ON, gateway=GATEWAY) as (k, client):
        old = k.module("calc")
        r = await act(client, "modules/reload", {"module": "calc"})
        assert r.json()["result"] == {"reloaded": "calc", "state": "active"}
        assert k.module("calc") is not old
        assert await k.call("calc.add", a=1, b=2) == 3
        r = await act(client, "modules/reload", {"module": "gateway"})
        assert error(r, 409) == "organelle.storage.conflict"
        assert "serves this dashboard" in r.json()["error"]["message"]
        r = await act(client, "config/reload")  # built from a dict: nothing to re-read
        assert error(r, 409) == "organelle.config"
        assert "no config source" in r.json()["error"]["message"]


async def test_reload_config_rereads_the_file_and_reports_what_changed(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    keys = hash_key("key-ops")
    head = f"""
[kernel]
storage = "memory://"
[modules.gateway]
port = 0
[modules.gateway.dashboard]
enabled = true
[modules.gateway.auth.api_keys.{keys}]
id = "ops-bot"
roles = ["ops"]
[modules.calc]
"""
    app.write_text(head + "precision = 2\n")
    gw = Gateway()
    async with Kernel.from_config(app, modules=[Calc, gw]) as k:
        async with httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
            app.write_text(head + "precision = 5\n")
            r = await act(client, "config/reload")
            assert r.json()["result"]["changed"] == ["calc"], r.text
            assert r.json()["result"]["diff"] == [
                {"key": "modules.calc.precision", "old": 2, "new": 5}
            ]
            calc: Any = k.module("calc")
            assert calc.config.precision == 5
            app.write_text(head + 'precision = "many"\n')
            r = await act(client, "config/reload")
            assert error(r, 409) == "organelle.config"
            assert calc.config.precision == 5


async def test_saga_retry_and_abort_reach_the_saga_engine(tmp_path: Path) -> None:
    jobs, storage = f"sqlite:///{tmp_path}/j.db", f"sqlite:///{tmp_path}/s.db"
    async with serve(Pay, dashboard=ON, gateway=GATEWAY, jobs=jobs, storage=storage) as (k, client):
        sid = await k.sagas.start("pay.checkout", {"password": "pw-1"})
        await k.drain_jobs(timeout_s=10)
        assert (await k.sagas.get(sid)).state == "stuck"
        r = await act(client, "sagas/abort", {"id": sid})  # stuck: nothing to abort
        assert r.json()["result"] == {"aborted": sid}
        r = await act(client, "sagas/retry", {"id": sid})
        assert r.json()["result"] == {"retried": sid}
        await k.drain_jobs(timeout_s=10)
        rec = await k.sagas.get(sid)
        assert rec.state == "stuck"  # the refund still fails: stuck again, tried once more
        assert rec.steps[0].compensate_attempts == 1
        r = await act(client, "sagas/retry", {"id": "nope"})
        assert error(r, 404) == "organelle.saga.not_found"


async def test_flags_are_listed_changed_and_audited_with_who_changed_them() -> None:
    async with serve(Shop, Calc, dashboard=ON, gateway=GATEWAY) as (k, client):
        audit = capture(k, "kernel.flags.changed")
        listed = (await client.get(f"{API}/flags", headers=KEYS)).json()
        assert listed["enabled"] is True
        assert [(f["name"], f["type"], f["effective"]) for f in listed["flags"]] == [
            ("new_checkout", "bool", False),
            ("discount_pct", "int", 0),
        ]
        r = await act(client, "flags/set", {"flag": "shop.discount_pct", "value": 15})
        assert r.json()["result"]["value"] == 15
        assert r.json()["result"]["by"] == "dashboard:ops-bot"
        rules = [{"value": True, "roles": ["beta"]}]
        r = await act(client, "flags/rules", {"flag": "shop.new_checkout", "rules": rules})
        assert r.json()["result"]["rules"] == rules
        shop: Any = k.module("shop")
        await eventually(lambda: shop.flags.discount_pct == 15, timeout_s=5)
        listed = (await client.get(f"{API}/flags", headers=KEYS)).json()
        flags = {f["name"]: f for f in listed["flags"]}
        assert (flags["discount_pct"]["effective"], flags["discount_pct"]["overridden"]) == (
            15,
            True,
        )
        assert flags["new_checkout"]["rules"] == rules
        await eventually(lambda: len(audit) >= 2, timeout_s=5)
        assert {p["by"] for _, p in audit} == {"dashboard:ops-bot"}
        r = await act(client, "flags/set", {"flag": "shop.discount_pct", "value": "lots"})
        assert error(r, 422) == "organelle.flags.invalid"
        r = await act(client, "flags/set", {"flag": "shop.nope", "value": 1})
        assert error(r, 404) == "organelle.flags.not_found"
        r = await act(client, "flags/set", {"flag": "shop.discount_pct"})
        assert error(r, 422) == "organelle.validation"
        r = await act(client, "flags/rules", {"flag": "shop.new_checkout", "rules": [{"x": 1}]})
        assert error(r, 422) == "organelle.flags.invalid"
        r = await act(client, "flags/reset", {"flag": "shop.discount_pct"})
        assert r.json()["result"]["rules"] == []
        assert "value" not in r.json()["result"]


async def test_an_app_without_flags_lists_none() -> None:
    async with serve(Calc, dashboard=ON) as (_, client):
        listed = (await client.get(f"{API}/flags")).json()
    assert listed == {"enabled": False, "flags": []}


CAN_PAUSE = callable(getattr(Worker, "pause", None))


@pytest.mark.skipif(CAN_PAUSE, reason="this job worker can pause: see the test below")
async def test_pause_is_refused_where_the_worker_cannot_pause() -> None:
    async with serve(Mail, dashboard=ON, gateway=GATEWAY, jobs="memory://") as (_, client):
        r = await act(client, "jobs/pause", {"names": ["mail.send"]})
        assert error(r, 409) == "organelle.storage.conflict"
        assert "cannot pause" in r.json()["error"]["message"]
        jobs = (await client.get(f"{API}/jobs", headers=KEYS)).json()
        assert jobs["worker"]["paused"] is None  # the page shows no pause button


@pytest.mark.skipif(not CAN_PAUSE, reason="this job worker has no pause / resume")
async def test_a_paused_job_waits_until_resumed() -> None:
    async with serve(Mail, dashboard=ON, gateway=GATEWAY, jobs="memory://") as (k, client):
        r = await act(client, "jobs/pause", {"names": ["mail.send"]})
        assert r.json()["result"] == {"paused": ["mail.send"]}
        jobs = (await client.get(f"{API}/jobs", headers=KEYS)).json()
        assert jobs["worker"]["paused"] == ["mail.send"]
        job_id = await k.enqueue("mail.send", to="ada@example.com")
        with pytest.raises(TimeoutError):
            await k.drain_jobs(timeout_s=0.5)
        assert (await k.jobs.get(job_id)).state == "queued"
        r = await act(client, "jobs/resume", {})
        assert r.json()["result"] == {"paused": []}
        await k.drain_jobs(timeout_s=10)
        assert (await k.jobs.get(job_id)).state == "succeeded"
        r = await act(client, "jobs/pause", {"names": "mail.send"})
        assert error(r, 422) == "organelle.validation"


async def test_pause_needs_a_worker_on_this_node() -> None:
    async with serve(Mail, dashboard=ON, gateway=GATEWAY, jobs="memory://", job_worker=False) as (
        _,
        client,
    ):
        r = await act(client, "jobs/pause", {})
        assert error(r, 409) == "organelle.storage.conflict"
        assert "no job worker" in r.json()["error"]["message"]

"""The management API over HTTP: roles (401/403/200), every area, typed errors, OpenAPI."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from pydantic import BaseModel

from organelle import Kernel, Module, consume, job, rpc
from organelle.auth.api_keys import hash_key
from organelle.ops import Ops
from organelle.ops._manage_routes import ROUTES, openapi

pytestmark = pytest.mark.timeout(60)

OPS_KEY = "ops-key-123"
READER_KEY = "reader-key-456"


class Mailer(Module):
    name = "mailer"
    version = "1.2.0"

    @rpc
    async def ping(self) -> str:
        return "pong"

    @job(max_attempts=1)
    async def send(self, to: str) -> None:
        raise RuntimeError(f"no route to {to}")

    @job(max_attempts=1)
    async def later(self, to: str) -> None:
        """Enqueued with a delay: waits, so it can be cancelled."""


class Extra(Module):
    name = "extra"
    requires = ("mailer",)


def _config() -> dict[str, Any]:
    return {
        "kernel": {"storage": "memory://", "jobs": "memory://"},
        "ops": {
            "auth": {
                "api_keys": {
                    hash_key(OPS_KEY): {"id": "alice", "roles": ["ops"]},
                    hash_key(READER_KEY): {"id": "bob", "roles": ["reader"]},
                }
            }
        },
    }


@pytest.fixture
async def app() -> AsyncIterator[tuple[Kernel, httpx.AsyncClient]]:
    kernel = Kernel([Mailer, Extra], _config())
    async with Ops(kernel, port=0) as ops, kernel:
        base = f"http://127.0.0.1:{ops.port}"
        async with httpx.AsyncClient(base_url=base, headers={"x-api-key": OPS_KEY}) as client:
            yield kernel, client


async def test_roles_401_403_200(app: tuple[Kernel, httpx.AsyncClient]) -> None:
    _, client = app
    anonymous = await client.get("/manage/modules", headers={"x-api-key": ""})
    assert anonymous.status_code == 401
    assert anonymous.json()["code"] == "organelle.unauthenticated"
    bad_key = await client.get("/manage/modules", headers={"x-api-key": "nope"})
    assert bad_key.status_code == 401
    reader = await client.get("/manage/modules", headers={"x-api-key": READER_KEY})
    assert reader.status_code == 403
    assert reader.json()["code"] == "organelle.forbidden"
    ok = await client.get("/manage/modules")
    assert ok.status_code == 200
    by_name = {m["name"]: m for m in ok.json()}
    assert by_name["mailer"]["version"] == "1.2.0"
    assert by_name["mailer"]["state"] == "active"
    assert by_name["mailer"]["node"]
    # the probes stay open; the document holds no data
    assert (await client.get("/health/live", headers={"x-api-key": ""})).status_code == 200
    assert (await client.get("/manage/openapi.json", headers={"x-api-key": ""})).status_code == 200


async def test_no_auth_configured_refuses_everyone() -> None:
    kernel = Kernel([Mailer], {"kernel": {"storage": "memory://", "jobs": "memory://"}})
    async with Ops(kernel, port=0) as ops, kernel:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}") as client:
            got = await client.get("/manage/modules", headers={"x-api-key": OPS_KEY})
    assert got.status_code == 401
    assert "[ops.auth]" in got.json()["message"]


async def test_modules_unload_restart_reload_load(app: tuple[Kernel, httpx.AsyncClient]) -> None:
    kernel, client = app
    refused = await client.delete("/manage/modules/mailer")
    assert (refused.status_code, refused.json()["code"]) == (400, "organelle.dependency")
    removed = await client.delete("/manage/modules/mailer", params={"cascade": "true"})
    assert removed.json() == {"removed": ["extra", "mailer"]}
    missing = await client.post("/manage/modules/mailer/restart")
    assert (missing.status_code, missing.json()["code"]) == (404, "organelle.not_found")
    bad_path = await client.post("/manage/modules", json={"path": "not a path"})
    assert (bad_path.status_code, bad_path.json()["code"]) == (400, "organelle.config")
    gone = await client.post("/manage/modules", json={"path": "tests.nowhere:Nothing"})
    assert (gone.status_code, gone.json()["code"]) == (400, "organelle.config")
    loaded = await client.post(
        "/manage/modules", json={"path": "tests.ops.test_manage_http:Mailer"}
    )
    assert loaded.status_code == 200, loaded.text
    assert loaded.json()["state"] == "active"
    assert await kernel.call("mailer.ping") == "pong"
    first = kernel.module("mailer")
    assert (await client.post("/manage/modules/mailer/restart")).status_code == 200
    assert kernel.module("mailer") is not first
    reloaded = await client.post("/manage/modules/mailer/reload")
    assert reloaded.status_code == 200, reloaded.text
    assert await kernel.call("mailer.ping") == "pong"


async def test_jobs_dead_retry_cancel_purge_pause(app: tuple[Kernel, httpx.AsyncClient]) -> None:
    kernel, client = app
    dead_id = await kernel.enqueue("mailer.send", to="ada")
    await kernel.drain_jobs(timeout_s=10)
    listed = await client.get("/manage/jobs", params={"state": "dead"})
    assert [j["id"] for j in listed.json()] == [dead_id]
    shown = (await client.get(f"/manage/jobs/{dead_id}")).json()
    assert shown["errors"][0]["type"] == "RuntimeError"
    assert shown["errors"][0]["message"] == "no route to ada"
    unknown = await client.get("/manage/jobs/nope")
    assert (unknown.status_code, unknown.json()["code"]) == (404, "organelle.jobs.not_found")
    bad_state = await client.get("/manage/jobs", params={"state": "zombie"})
    assert (bad_state.status_code, bad_state.json()["code"]) == (422, "organelle.validation")
    # pause: a retried job waits in the queue until resumed
    paused = await client.post("/manage/queues/pause", json={"names": ["mailer.send"]})
    assert paused.json()["paused"] == ["mailer.send"]
    retried = await client.post(f"/manage/jobs/{dead_id}/retry")
    assert retried.json()["state"] == "queued"
    await kernel.drain_jobs(timeout_s=10)
    queues = (await client.get("/manage/queues")).json()
    assert queues["backlog"] == {"mailer.send": 1}
    assert queues["paused"] == ["mailer.send"]
    assert (await client.post("/manage/queues/resume", json={})).json()["paused"] == []
    await kernel.drain_jobs(timeout_s=10)
    assert (await client.get(f"/manage/jobs/{dead_id}")).json()["state"] == "dead"
    # cancel a waiting job; a dead one cannot be cancelled
    later_id = await kernel.enqueue("mailer.later", to="bob", delay_s=3600)
    assert (await client.get(f"/manage/jobs/{later_id}")).json()["state"] == "scheduled"
    cancelled = await client.post(f"/manage/jobs/{later_id}/cancel")
    assert cancelled.json() == {"cancelled": later_id}
    no = await client.post(f"/manage/jobs/{dead_id}/cancel")
    assert (no.status_code, no.json()["code"]) == (409, "organelle.jobs.state")
    purged = await client.post("/manage/jobs/purge-dead", json={})
    assert purged.json() == {"purged": 1}
    assert (await client.get("/manage/jobs", params={"state": "dead"})).json() == []


async def test_jobs_name_filter_pages_through_that_name_only(
    app: tuple[Kernel, httpx.AsyncClient],
) -> None:
    kernel, client = app
    ids: dict[str, list[str]] = {"mailer.later": [], "mailer.send": []}
    for n, name in enumerate(["mailer.later", "mailer.send"] * 3):  # interleaved, all waiting
        ids[name].append(await kernel.enqueue(name, to=f"u{n}", delay_s=3600))

    async def listed(**params: Any) -> list[str]:
        got = await client.get("/manage/jobs", params=params)
        assert got.status_code == 200, got.text
        return [j["id"] for j in got.json()]

    assert await listed(name="mailer.later") == ids["mailer.later"]
    assert await listed(name="mailer.send", state="scheduled") == ids["mailer.send"]
    # a page past the other name's jobs holds only this name's
    assert await listed(name="mailer.send", limit=1) == ids["mailer.send"][:1]
    assert await listed(name="mailer.send", limit=1, offset=2) == ids["mailer.send"][2:]
    assert await listed(name="mailer.send", state="dead") == []
    assert await listed(name="mailer.nothing") == []
    assert len(await listed()) == 6  # no filter: both names


async def test_kv_config_health(app: tuple[Kernel, httpx.AsyncClient]) -> None:
    _, client = app
    put = await client.put("/manage/kv/entry", params={"key": "a/1"}, json={"value": {"n": 1}})
    assert put.status_code == 200, put.text
    await client.put("/manage/kv/entry", params={"key": "a/2"}, json={"value": 2})
    got = (await client.get("/manage/kv/entry", params={"key": "a/1"})).json()
    assert got["value"] == {"n": 1}
    page = (await client.get("/manage/kv", params={"prefix": "a/", "limit": 1})).json()
    assert [i["key"] for i in page["items"]] == ["a/1"]
    rest = (
        await client.get("/manage/kv", params={"prefix": "a/", "cursor": page["cursor"]})
    ).json()
    assert [i["key"] for i in rest["items"]] == ["a/2"]
    deleted = await client.delete("/manage/kv/entry", params={"key": "a/1"})
    assert deleted.json()["deleted"] is True
    absent = await client.get("/manage/kv/entry", params={"key": "a/1"})
    assert absent.status_code == 404
    unknown_param = await client.get("/manage/kv", params={"prefx": "a"})
    assert unknown_param.status_code == 422
    config = (await client.get("/manage/config")).json()
    assert config["ops"]["auth"]["api_keys"]  # hashes only, shown as written
    diff = await client.get("/manage/config/diff")
    assert diff.status_code == 400  # built in code: no file to re-read
    assert diff.json()["code"] == "organelle.config"
    health = (await client.get("/manage/health")).json()
    assert health["ready"] is True
    assert health["checks"]["module:mailer"]["status"] == "healthy"


def test_openapi_document_is_valid_and_covers_every_route() -> None:
    document = openapi()
    validate(document)  # raises on an invalid OpenAPI 3.1 document
    operations = {op["operationId"] for path in document["paths"].values() for op in path.values()}
    assert operations == {route.op for route in ROUTES}


class Ledger(Module):
    name = "ledger"

    @consume("payments", max_attempts=1)
    async def book(self, record: dict[str, Any]) -> None:
        if record.get("bad"):
            raise ValueError("cannot book a bad payment")


async def test_streams_info_seek_dead_letters() -> None:
    config = _config()
    config["kernel"]["streams"] = "memory://"
    kernel = Kernel([Ledger], config)
    async with Ops(kernel, port=0) as ops, kernel:
        headers = {"x-api-key": OPS_KEY}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}", headers=headers) as client:  # fmt: skip
            await kernel.append("payments", {"amount": 1})
            await kernel.append("payments", {"bad": True})
            await kernel.drain_streams(timeout_s=10)
            assert (await client.get("/manage/streams")).json() == ["payments"]
            info = (await client.get("/manage/streams/payments")).json()
            last = info["partitions"][0]["last"]
            assert [(g["group"], g["next_offset"], g["lag"]) for g in info["groups"]] == [("ledger", last + 1, 0)]  # fmt: skip
            dead = (await client.get("/manage/streams/payments/groups/ledger/dead")).json()
            assert [d["offset"] for d in dead] == [last]
            assert "cannot book a bad payment" in str(dead[0]["error"])
            replay = await client.post(
                "/manage/streams/payments/groups/ledger/seek", json={"to": "earliest"}
            )
            assert replay.status_code == 200, replay.text
            await kernel.drain_streams(timeout_s=10)
            bad_to = await client.post("/manage/streams/payments/groups/ledger/seek", json={"to": "soon"})  # fmt: skip
            assert (bad_to.status_code, bad_to.json()["code"]) == (422, "organelle.validation")
            missing = await client.get("/manage/streams/nowhere")
            assert (missing.status_code, missing.json()["code"]) == (404, "organelle.stream.not_found")  # fmt: skip


class Tuned(Module):
    """A module whose config section a reload changes."""

    name = "tuned"

    class Config(BaseModel):
        batch: int = 1

    @rpc
    async def batch(self) -> int:
        return int(self.config.batch)


async def test_config_diff_then_reload_applies_the_file(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    head = f"""
[kernel]
storage = "memory://"
jobs = "memory://"
[ops.auth.api_keys.{hash_key(OPS_KEY)}]
id = "alice"
roles = ["ops"]
[modules.tuned]
"""
    app.write_text(head + "batch = 2\n")
    kernel = Kernel.from_config(app, modules=[Tuned], environ={})
    async with Ops(kernel, port=0) as ops, kernel:
        headers = {"x-api-key": OPS_KEY}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ops.port}", headers=headers) as client:  # fmt: skip
            unchanged = await client.get("/manage/config/diff")
            assert unchanged.status_code == 200, unchanged.text
            assert unchanged.json() == {"changed": [], "diff": [], "restart_required": []}
            app.write_text(head + "batch = 7\n")
            diff = await client.get("/manage/config/diff")
            assert diff.status_code == 200, diff.text
            change = {"key": "modules.tuned.batch", "old": 2, "new": 7}
            assert diff.json() == {"changed": ["tuned"], "diff": [change], "restart_required": []}
            assert await kernel.call("tuned.batch") == 2  # a diff applies nothing
            reloaded = await client.post("/manage/config/reload")
            assert reloaded.status_code == 200, reloaded.text
            assert reloaded.json()["changed"] == ["tuned"]
            assert reloaded.json()["diff"] == [change]
            assert await kernel.call("tuned.batch") == 7
            config = (await client.get("/manage/config")).json()
            assert config["modules"]["tuned"]["batch"] == 7
            after = (await client.get("/manage/config/diff")).json()
            assert after["diff"] == []  # the file and the kernel agree again

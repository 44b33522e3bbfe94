"""The management commands as a subprocess against running apps: the shop on NATS, a SQLite app."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from organelle.testing import eventually
from organelle.testing.servers import NatsServer
from tests.cli.proc import ROOT, run_once, spawn

pytestmark = pytest.mark.timeout(120)

SHOP = "examples/shop/app.toml"


@pytest.fixture(autouse=True)
def _this_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    # the child processes import organelle from this checkout, as the tests do
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT / "examples")]))


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with NatsServer() as server:
        yield server


def _sets(url: str, prefix: str, tmp: Path) -> list[str]:
    return [
        *("--set", f"kernel.transport={url}"),
        *("--set", f"kernel.transport_options.prefix={prefix}"),
        *("--set", "kernel.transport_options.heartbeat_s=0.2"),
        *("--set", f"kernel.storage=sqlite:///{tmp}/store.db"),
        *("--set", f"kernel.jobs=sqlite:///{tmp}/jobs.db"),
        *("--set", "kernel.drain_timeout_s=2"),
    ]


def _chores_app(tmp: Path, *, kick: bool = False) -> str:
    app = tmp / "chores.toml"
    app.write_text(
        "[kernel]\n"
        f'pythonpath = ["{ROOT}"]\n'
        'modules = ["tests.ops.manage_app:Chores"]\n'
        f"[modules.chores]\nkick_on_start = {'true' if kick else 'false'}\n"
    )
    return str(app)


async def test_call_modules_and_errors_against_the_shop_on_nats(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    sets = _sets(nats_server.url, f"s{uuid.uuid4().hex[:8]}", tmp_path)
    async with spawn("run", SHOP, *sets) as shop:
        await shop.wait_for(r"modules? active", timeout_s=30)
        code, out, err = await run_once(
            "call", "inventory.restock", "sku=kiwi", "qty=3", "--app", SHOP, *sets
        )
        assert (code, out.strip()) == (0, "3"), err
        code, out, err = await run_once(
            "call", "inventory.restock", "sku=kiwi", "qty=-2", "--app", SHOP, *sets
        )
        assert code == 1
        assert out == ""
        assert "error: organelle.validation:" in err
        assert "qty" in err
        code, out, err = await run_once("call", "nowhere.at_all", "--app", SHOP, *sets, "--timeout", "1")  # fmt: skip
        assert code == 1, err
        assert err.startswith("error: organelle.")
        code, out, err = await run_once(
            "emit", "inventory.low_stock", "sku=durian", "available=1", "threshold=5",
            "--app", SHOP, *sets,
        )  # fmt: skip
        assert code == 0, err
        await shop.wait_for(r"reorder durian: 1 left \(threshold 5\)", timeout_s=20)
        code, out, err = await run_once("modules", "--app", SHOP, "--json", *sets)
        assert code == 0, err
        (node,) = json.loads(out)
        names = {m["name"] for m in node["result"]}
        assert names == {"pricing", "inventory", "orders", "notifications", "demo", "ops"}
        code, out, err = await run_once("health", "--app", SHOP, "--json", *sets)
        assert code == 0, err
        assert json.loads(out)[0]["result"]["ready"] is True


async def test_dead_job_retried_from_the_cli_on_nats(
    nats_server: NatsServer, tmp_path: Path
) -> None:
    app = _chores_app(tmp_path)
    sets = _sets(nats_server.url, f"j{uuid.uuid4().hex[:8]}", tmp_path)
    async with spawn("run", app, *sets) as child:
        await child.wait_for(r"modules? active", timeout_s=30)
        code, out, err = await run_once("call", "chores.kick", "note=hall", "--app", app, *sets)
        assert code == 0, err
        job_id = json.loads(out)

        async def dead() -> None:
            code, out, err = await run_once("jobs", "--state", "dead", "--json", "--app", app, *sets)  # fmt: skip
            assert code == 0, err
            assert [j["id"] for j in json.loads(out)] == [job_id]

        await eventually(dead, timeout_s=20, interval_s=0.2)
        code, out, err = await run_once("jobs", "retry", job_id, "--app", app, *sets)
        assert code == 0, err

        async def succeeded() -> None:
            code, out, err = await run_once("jobs", "show", job_id, "--json", "--app", app, *sets)
            assert code == 0, err
            assert json.loads(out)["state"] == "succeeded"

        await eventually(succeeded, timeout_s=20, interval_s=0.2)
        code, out, err = await run_once("jobs", "pause", "--json", "--app", app, *sets)
        assert code == 0, err
        assert json.loads(out)[0]["result"]["paused"] == ["chores.sweep"]


async def test_sqlite_app_reached_through_its_files(tmp_path: Path) -> None:
    app = _chores_app(tmp_path, kick=True)
    sets = [
        *("--set", f"kernel.storage=sqlite:///{tmp_path}/store.db"),
        *("--set", f"kernel.jobs=sqlite:///{tmp_path}/jobs.db"),
        *("--set", f"kernel.streams=sqlite:///{tmp_path}/streams.db"),
    ]
    async with spawn("run", app, *sets) as child:
        await child.wait_for(r"modules? active", timeout_s=30)
        await child.wait_for(r"log entry 2", timeout_s=20)

        async def one_dead() -> str:
            code, out, err = await run_once("jobs", "--state", "dead", "--json", "--app", app, *sets)  # fmt: skip
            assert code == 0, err
            (job,) = json.loads(out)
            assert job["errors"][0]["message"] == "the broom broke on start"
            return str(job["id"])

        job_id = await eventually(one_dead, timeout_s=20, interval_s=0.2)
        code, out, err = await run_once("jobs", "retry", job_id, "--app", app, *sets)
        assert code == 0, err

        async def succeeded() -> None:
            code, out, err = await run_once("jobs", "show", job_id, "--json", "--app", app, *sets)
            assert code == 0, err
            assert json.loads(out)["state"] == "succeeded", out

        await eventually(succeeded, timeout_s=20, interval_s=0.2)
        code, out, err = await run_once("modules", "--app", app, *sets)
        assert code == 2
        assert "needs the app's cluster" in err
        code, out, err = await run_once("call", "chores.kick", "note=x", "--app", app, *sets)
        assert code == 2
        code, out, err = await run_once("kv", "put", "notes/a", '{"n": 1}', "--app", app, *sets)
        assert code == 0, err
        code, out, err = await run_once("kv", "get", "notes/a", "--app", app, *sets)
        assert (code, json.loads(out)) == (0, {"n": 1})
        code, out, err = await run_once("jobs", "--app", app, *sets)  # a table for people
        assert code == 0, err
        assert job_id in out
        assert "succeeded" in out
        code, out, err = await run_once("jobs", "show", "nope", "--app", app, *sets)
        assert code == 1
        assert "error: organelle.jobs.not_found:" in err
        # replay the stream to its group, following the lag until it is 0
        code, out, err = await run_once(
            "streams", "seek", "chores-log", "--group", "chores", "--to", "earliest",
            "--wait", "20", "--json", "--app", app, *sets,
        )  # fmt: skip
        assert code == 0, err
        (group,) = json.loads(out)["groups"]
        assert (group["group"], group["lag"]) == ("chores", 0)
        await child.wait_for(r"log entry 0", timeout_s=10)  # the replay ran it again
        code, out, err = await run_once("streams", "info", "chores-log", "--app", app, *sets)
        assert code == 0, err
        assert "chores" in out


async def test_usage_errors_and_openapi_export(tmp_path: Path) -> None:
    code, out, err = await run_once("call", "inventory.restock", "sku", "--app", SHOP)
    assert code == 2
    assert "expected NAME=VALUE" in err
    assert out == ""
    code, out, err = await run_once("modules")
    assert out == ""
    assert code == 2
    assert "ORGANELLE_APP" in err
    target = tmp_path / "manage.json"
    code, _, err = await run_once("openapi", "-o", str(target))
    assert code == 0, err
    assert json.loads(target.read_text())["openapi"] == "3.1.0"

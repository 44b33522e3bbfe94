"""The management commands as a subprocess against running apps: the shop on NATS, a SQLite app."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from organelle.jobs import open_queue
from organelle.jobs.base import AttemptError, NewJob
from organelle.streams.sqlite import SqliteStreamLog
from organelle.testing import eventually
from organelle.testing.servers import NatsServer
from tests.cli.proc import ROOT, Child, run_once, spawn

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
        # else the streams default, organelle-streams.db, lands in the working directory
        *("--set", f"kernel.streams=sqlite:///{tmp}/streams.db"),
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


# -- one running app (the chores app on NATS) shared by the tests below ----------------------

shared = pytest.mark.asyncio(loop_scope="module")


@dataclass(slots=True)
class Running:
    """The shared app: its config file, the ``--set`` options that reach it, its output."""

    app: str
    sets: list[str]
    tmp: Path
    child: Child

    async def cli(self, *args: str, code: int = 0) -> tuple[str, str]:
        """``organelle ARGS --app APP --set …``: stdout and stderr, the exit code checked."""
        got, out, err = await run_once(*args, "--app", self.app, *self.sets)
        assert got == code, f"exit {got}:\n{out}\n{err}"
        return out, err

    async def json(self, *args: str) -> Any:
        out, _ = await self.cli(*args, "--json")
        return json.loads(out)

    def count(self, pattern: str) -> int:
        """How many lines of the app's output so far match ``pattern``."""
        return sum(1 for line in self.child.lines if re.search(pattern, line))


async def _drain(child: Child) -> None:
    """Keep reading the app's output so a full pipe never stalls it; tests read ``lines``."""
    assert child.proc.stdout is not None
    while raw := await child.proc.stdout.readline():
        child.lines.append(raw.decode(errors="replace").rstrip("\n"))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def running(
    nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Running]:
    tmp = tmp_path_factory.mktemp("chores")
    app = _chores_app(tmp)
    sets = _sets(nats_server.url, f"r{uuid.uuid4().hex[:8]}", tmp)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT / "src"), str(ROOT / "examples")]))
        async with spawn("run", app, *sets) as child:
            await child.wait_for(r"modules? active", timeout_s=30)
            reader = asyncio.create_task(_drain(child))
            try:
                yield Running(app=app, sets=sets, tmp=tmp, child=child)
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader


@shared
async def test_nodes_lists_the_cluster_as_json_with_app_or_its_variable(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = await running.json("nodes")
    assert set(node["modules"]) == {"chores", "ops"}
    assert node["modules"]["chores"]["version"] == "1.0.0"
    assert "kick" in node["modules"]["chores"]["methods"]
    assert node["pid"] == running.child.proc.pid
    monkeypatch.setenv("ORGANELLE_APP", running.app)
    code, out, err = await run_once("nodes", *running.sets)  # the app from the variable
    assert code == 0, err
    assert re.search(r": 1 node$", out.splitlines()[0]), out
    assert "chores@1.0.0" in out
    code, _, err = await run_once("nodes", running.app, "--app", running.app, *running.sets)
    assert code == 2
    assert "not both" in err


@shared
async def test_config_diff_reload_and_live_on_a_running_app(running: Running) -> None:
    def live_timeout(answer: list[dict[str, Any]]) -> float:
        (node,) = answer
        assert node["ok"], node
        return float(node["result"]["kernel"]["call_timeout_s"])

    app = Path(running.app)
    written = app.read_text()
    assert live_timeout(await running.json("config", "live")) == 30.0
    try:
        app.write_text(written.replace("[kernel]\n", "[kernel]\ncall_timeout_s = 7\n", 1))
        change = {"key": "kernel.call_timeout_s", "old": 30.0, "new": 7.0}
        (node,) = await running.json("config", "diff")
        assert node["result"]["diff"] == [change]
        assert node["result"]["restart_required"] == []
        out, _ = await running.cli("config", "diff")  # for people: per node, the same answer
        assert "kernel.call_timeout_s" in out
        assert live_timeout(await running.json("config", "live")) == 30.0
        (node,) = await running.json("config", "reload")
        assert node["result"]["diff"] == [change]
        assert live_timeout(await running.json("config", "live")) == 7.0
        (node,) = await running.json("config", "diff")
        assert node["result"]["diff"] == []
        # a module section its model refuses: the node rolls back, the CLI says which node
        app.write_text(written.replace("kick_on_start = false", 'kick_on_start = "maybe"'))
        _, err = await running.cli("config", "reload", code=1)
        assert re.search(
            r"^error: node \S+: organelle\.config: .*kick_on_start", err, re.MULTILINE
        ), err
        assert live_timeout(await running.json("config", "live")) == 7.0
    finally:
        app.write_text(written)


@shared
async def test_modules_load_restart_reload_unload(running: Running) -> None:
    out, err = await running.cli("modules", "load", "tests.cli.apps:Greeter")
    assert re.search(r": load greeter 1\.4\.0 active$", out.strip()), out
    try:
        listed = await running.json("modules")
        states = {m["name"]: m["state"] for m in listed[0]["result"]}
        assert states == {"chores": "active", "ops": "active", "greeter": "active"}
        code, out, err = await run_once(
            "call", "greeter.greet", "who=ada", "--app", running.app, *running.sets
        )
        assert (code, json.loads(out)) == (0, "hello ada"), err
        # restart: the running instance stops and a fresh one starts
        started = running.count(r"greeter ready")
        out, _ = await running.cli("modules", "restart", "greeter")
        assert re.search(r": restart greeter 1\.4\.0 active$", out.strip()), out

        def restarted() -> None:
            assert running.count(r"greeter stopped cleanly") >= 1
            assert running.count(r"greeter ready") == started + 1

        await eventually(restarted, timeout_s=10, interval_s=0.1)
    finally:
        out, _ = await running.cli("modules", "unload", "greeter")
    assert json.loads(out.strip().partition("unload ")[2]) == {"removed": ["greeter"]}
    listed = await running.json("modules")
    assert {m["name"] for m in listed[0]["result"]} == {"chores", "ops"}
    code, _, err = await run_once(
        "call", "greeter.greet", "who=ada", "--timeout", "2", "--app", running.app, *running.sets
    )
    assert code == 1, err
    _, err = await running.cli("modules", "restart", "greeter", code=1)
    assert "no node runs a module named 'greeter'" in err


@shared
async def test_modules_reload_reimports_the_code(running: Running) -> None:
    async def runs() -> int:
        code, out, err = await run_once(
            "call", "chores.runs_so_far", "--app", running.app, *running.sets
        )
        assert code == 0, err
        return int(out)

    out, _ = await running.cli("call", "chores.kick", "note=before-reload")
    job_id = json.loads(out)

    async def ran() -> int:
        job = await running.json("jobs", "show", job_id)
        assert job["state"] in {"succeeded", "dead"}, job
        return await runs()

    assert await eventually(ran, timeout_s=20, interval_s=0.2) >= 1
    out, _ = await running.cli("modules", "reload", "chores")
    assert re.search(r": reload chores 1\.0\.0 active$", out.strip()), out
    assert await runs() == 0  # a fresh class: the counter of the old code is gone


@shared
async def test_jobs_queues_cancel_and_resume(running: Running) -> None:
    (node,) = await running.json("jobs", "pause")
    assert node["result"]["paused"] == ["chores.sweep"]
    try:
        out, _ = await running.cli("call", "chores.kick", "note=waits")
        waiting = json.loads(out)
        (node,) = await running.json("jobs", "queues")
        assert node["result"]["paused"] == ["chores.sweep"]
        assert node["result"]["backlog"] == {"chores.sweep": 1}
        out, _ = await running.cli("jobs", "queues")
        assert "chores.sweep: 1" in out
        out, _ = await running.cli("jobs", "cancel", waiting)
        assert out.strip() == f"cancelled: {waiting}"
        _, err = await running.cli("jobs", "show", waiting, code=1)  # gone from the queue
        assert "organelle.jobs.not_found" in err
        out, _ = await running.cli("call", "chores.kick", "note=after")
        later = json.loads(out)
    finally:
        (node,) = await running.json("jobs", "resume")
    assert node["result"]["paused"] == []

    async def finished() -> str:
        job = await running.json("jobs", "show", later)
        assert job["state"] in {"succeeded", "dead"}, job
        return str(job["state"])

    await eventually(finished, timeout_s=20, interval_s=0.2)
    _, err = await running.cli("jobs", "cancel", later, code=1)  # only a waiting job
    assert "organelle.jobs.state" in err


@shared
async def test_kv_scan_pages_and_delete(running: Running) -> None:
    prefix = f"notes-{uuid.uuid4().hex[:6]}/"
    await running.cli("kv", "put", prefix + "a", '{"n": 1}')
    await running.cli("kv", "put", prefix + "b", "plain")
    page = await running.json("kv", "scan", "--prefix", prefix)
    assert [(i["key"], i["value"]) for i in page["items"]] == [
        (prefix + "a", {"n": 1}), (prefix + "b", "plain"),
    ]  # fmt: skip
    assert page["cursor"] is None
    out, err = await running.cli("kv", "scan", "--prefix", prefix, "--limit", "1")  # a table
    assert prefix + "a" in out
    assert prefix + "b" not in out
    cursor = re.search(r"^more: --cursor (\S+)$", err, re.MULTILINE)
    assert cursor, err
    rest = await running.json("kv", "scan", "--prefix", prefix, "--cursor", cursor[1])
    assert [i["key"] for i in rest["items"]] == [prefix + "b"]
    out, _ = await running.cli("kv", "delete", prefix + "a")
    assert "deleted: true" in out
    _, err = await running.cli("kv", "get", prefix + "a", code=1)
    assert "organelle.not_found" in err
    page = await running.json("kv", "scan", "--prefix", prefix)
    assert [i["key"] for i in page["items"]] == [prefix + "b"]


@shared
async def test_streams_list_replay_progress_and_dead_letters(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    (node,) = await running.json("streams")
    assert node["result"] == ["chores-log"]
    out, _ = await running.cli("streams")
    assert "chores-log" in out
    async with SqliteStreamLog(running.tmp / "streams.db") as log:  # a producer elsewhere
        for n in (10, 11):
            await log.append("chores-log", json.dumps({"n": n}).encode())

    async def caught_up() -> None:
        info = await running.json("streams", "info", "chores-log")
        assert [g["lag"] for g in info["groups"]] == [0]
        assert running.count(r"log entry 11\b") == 1, running.child.output

    await eventually(caught_up, timeout_s=20, interval_s=0.2)
    # on a terminal, the replay's progress bar goes to stderr; stdout keeps the answer
    monkeypatch.setenv("FORCE_COLOR", "1")
    out, err = await running.cli(
        "streams", "seek", "chores-log", "--group", "chores", "--to", "earliest", "--wait", "20"
    )
    monkeypatch.delenv("FORCE_COLOR")
    assert "replaying chores-log to chores" in err
    assert "2/2" in err
    assert "stream chores-log: 1 partition(s)" in out
    await eventually(lambda: running.count(r"log entry 11\b") == 2, timeout_s=10, interval_s=0.1)
    # a record its handler cannot take: retried, then kept as a dead letter
    async with SqliteStreamLog(running.tmp / "streams.db") as log:
        await log.append("chores-log", b'{"m": 1}')

    async def one_dead() -> dict[str, Any]:
        letters = await running.json("streams", "dead", "chores-log", "--group", "chores")
        assert len(letters) == 1, letters
        return dict(letters[0])

    letter = await eventually(one_dead, timeout_s=40, interval_s=0.5)
    assert letter["error"] == "KeyError: 'n'"
    assert base64.b64decode(letter["data"]) == b'{"m": 1}'  # bytes travel as base64
    _, err = await running.cli("streams", "dead", "chores-log", code=2)
    assert "--group is required" in err


async def test_jobs_purge_shows_its_progress_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = _chores_app(tmp_path)
    sets = [
        *("--set", f"kernel.storage=sqlite:///{tmp_path}/store.db"),
        *("--set", f"kernel.jobs=sqlite:///{tmp_path}/jobs.db"),
        *("--set", f"kernel.streams=sqlite:///{tmp_path}/streams.db"),
    ]
    async with await open_queue(f"sqlite:///{tmp_path}/jobs.db") as queue:  # three dead jobs
        ids = await queue.enqueue([NewJob(name="chores.sweep", max_attempts=1)] * 3)
        for lease in await queue.claim(names={"chores.sweep"}, limit=3):
            error = AttemptError(attempt=1, type="RuntimeError", message="no broom")
            assert await queue.fail(lease, error, retry_at=None) == "dead"
    code, out, err = await run_once("jobs", "purge", ids[0], "--json", "--app", app, *sets)
    assert (code, json.loads(out)) == (0, {"purged": 1}), err
    monkeypatch.setenv("FORCE_COLOR", "1")
    code, out, err = await run_once("jobs", "purge", "--app", app, *sets)
    monkeypatch.delenv("FORCE_COLOR")
    assert code == 0, err
    assert out.strip() == "purged: 2"
    assert "purging dead jobs: 2" in err
    code, out, err = await run_once("jobs", "--state", "dead", "--json", "--app", app, *sets)
    assert (code, json.loads(out)) == (0, []), err
    code, out, err = await run_once("jobs", "purge", "--app", app, *sets)  # piped: no bar
    assert (code, out.strip(), err) == (0, "purged: 0", "")

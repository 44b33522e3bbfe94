"""``running()`` keeps a test's data in memory; ``drain_jobs()`` waits for due retries."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from organelle import Module, consume, job, rpc
from organelle.jobs import Retry
from organelle.testing import in_memory, running


class Notes(Module):
    """Touches every data port a kernel opens on its own: Store, jobs, streams, blobs."""

    name = "notes"

    async def on_start(self) -> None:
        self.consumed: list[str] = []

    @rpc
    async def add(self, text: str) -> None:
        await self.store.put(text, {"text": text})
        await self.enqueue("notes.index", text=text)
        await self.append("notes", {"text": text})

    @rpc
    async def has(self, text: str) -> bool:
        return await self.store.get(text) is not None

    @job
    async def index(self, text: str) -> None:
        await self.store.put(f"indexed:{text}", {"done": True})

    @consume("notes")
    async def read(self, record: dict[str, Any]) -> None:
        self.consumed.append(record["text"])


async def test_running_writes_nothing_and_forgets_between_runs() -> None:
    cwd = Path.cwd()  # an empty folder of its own (tests/conftest.py)
    async with running(Notes, config={"kernel": {"claim_check_above": 16}}) as k:
        await k.call("notes.add", text="a" * 64)  # above the claim-check: a blob
        await k.drain_jobs()
        await k.drain_streams()
        assert await k.call("notes.has", text="a" * 64)
        assert await k.store_for("notes").get(f"indexed:{'a' * 64}") is not None
        assert k.module("notes").consumed == ["a" * 64]  # type: ignore[attr-defined]
    assert list(cwd.iterdir()) == []
    async with running(Notes) as k:
        assert not await k.call("notes.has", text="a" * 64)


async def test_a_url_the_config_names_is_kept(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    config = {"kernel": {"storage": f"sqlite:///{db}"}}
    async with running(Notes, config=config) as k:
        await k.call("notes.add", text="kept")
        await k.drain_jobs()
    assert db.exists()
    async with running(Notes, config=config) as k:
        assert await k.call("notes.has", text="kept")
    assert [p.name for p in Path.cwd().iterdir()] == []  # jobs and streams stayed in memory


def test_in_memory_fills_only_what_is_unset() -> None:
    config = {"kernel": {"jobs": "sqlite:///jobs.db"}, "modules": {"notes": {"x": 1}}}
    filled = in_memory(config)
    assert filled["kernel"] == {
        "jobs": "sqlite:///jobs.db",
        "storage": "memory://",
        "streams": "memory://",
        "blobs": "memory://",
    }
    assert filled["modules"] == {"notes": {"x": 1}}
    assert config["kernel"] == {"jobs": "sqlite:///jobs.db"}  # the caller's dict is untouched


async def test_a_reload_does_not_see_the_in_memory_defaults() -> None:
    async with running(Notes) as k:
        result = await k.reload_config({"kernel": {"call_timeout_s": 5}})
        assert [d["key"] for d in result.diff] == ["kernel.call_timeout_s"]
        assert k.settings.storage == "memory://"


class Flaky(Module):
    """Fails its first attempts; each retry is due a fraction of a second later."""

    name = "flaky"
    runs: list[float] = []

    @job(max_attempts=5, backoff_s=0.2, backoff_max_s=0.2)
    async def raises(self) -> None:
        Flaky.runs.append(time.monotonic())
        if len(Flaky.runs) < 3:
            raise RuntimeError("not yet")

    @job(max_attempts=5)
    async def asks(self) -> None:
        Flaky.runs.append(time.monotonic())
        if len(Flaky.runs) < 3:
            raise Retry(delay_s=0.2)


@pytest.fixture(params=["memory", "sqlite", "postgres", "nats"])
def jobs_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """One queue of each backend, fresh for the test."""
    name = f"j{uuid.uuid4().hex[:10]}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/jobs.db"
    if request.param == "postgres":
        server = request.getfixturevalue("postgres_server")
        return f"{server.dsn}?table={name}"
    if request.param == "nats":
        server = request.getfixturevalue("nats_server")
        return f"{server.url}?stream={name}"
    return "memory://"


@pytest.mark.parametrize("name", ["raises", "asks"])
async def test_drain_jobs_waits_for_retries_due_within_its_horizon(
    name: str, jobs_url: str
) -> None:
    Flaky.runs = []
    jobs = jobs_url
    async with running(Flaky, config={"kernel": {"jobs": jobs}}) as k:
        job_id = await k.enqueue(f"flaky.{name}")
        await k.drain_jobs(timeout_s=10)
        assert len(Flaky.runs) == 3
        assert (await k.jobs.get(job_id)).state == "succeeded"
        assert Flaky.runs[2] - Flaky.runs[0] >= 0.3  # two retries waited out, not skipped


async def test_drain_jobs_leaves_a_retry_beyond_its_horizon() -> None:
    Flaky.runs = []
    async with running(Flaky) as k:
        job_id = await k.enqueue("flaky.raises")
        await k.drain_jobs(timeout_s=10, horizon_s=0.05)
        assert len(Flaky.runs) == 1
        assert (await k.jobs.get(job_id)).state != "succeeded"

"""Jobs through the kernel: @job/@cron on modules, enqueue with validation, worker, dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

from organelle import ConfigError, DefinitionError, Kernel, Module, ValidationError, cron, job, rpc
from organelle.jobs import Retry
from organelle.module import describe


class Mailer(Module):
    name = "mailer"
    sent: ClassVar[list[tuple[str, int]]] = []
    flaky_runs: ClassVar[int] = 0
    ticks: ClassVar[int] = 0

    @rpc
    async def welcome(self, to: str) -> str:
        return await self.enqueue("mailer.send", to=to, copies=2, idempotency_key=f"welcome:{to}")

    @job(max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)
    async def send(self, to: str, copies: int = 1) -> str:
        self.sent.append((to, copies))
        return f"sent to {to}"

    @job(max_attempts=2, backoff_s=0.01, backoff_max_s=0.01)
    async def always_fails(self) -> None:
        raise RuntimeError("smtp down")

    @job(max_attempts=5)
    async def flaky(self) -> str:
        type(self).flaky_runs += 1
        if self.flaky_runs < 3:
            raise Retry(delay_s=0.01, reason="not yet")
        return "finally"

    @cron("*/5 * * * *")
    async def digest(self) -> None:
        type(self).ticks += 1


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    Mailer.sent.clear()
    Mailer.flaky_runs = 0
    Mailer.ticks = 0
    return {"kernel": {"jobs": f"sqlite:///{tmp_path / 'jobs.db'}"}}


async def test_enqueue_runs_and_records_result(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        job_id = await k.call("mailer.welcome", to="ann@example.com")
        again = await k.call("mailer.welcome", to="ann@example.com")
        assert again == job_id  # idempotency key
        await k.drain_jobs()
        record = await k.jobs.get(job_id)
        assert record.state == "succeeded"
        assert record.result == "sent to ann@example.com"
    assert Mailer.sent == [("ann@example.com", 2)]


async def test_bad_params_refused_at_enqueue(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        with pytest.raises(ValidationError) as info:
            await k.enqueue("mailer.send", to=3, copies="many", cc="x")
        assert {e["field"] for e in info.value.errors} == {"to", "copies", "cc"}


async def test_retry_signal_and_dead_letters(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        flaky = await k.enqueue("mailer.flaky")
        dead = await k.enqueue("mailer.always_fails")
        await k.drain_jobs()
        assert (await k.jobs.get(flaky)).result == "finally"
        record = await k.jobs.get(dead)
        assert record.state == "dead"
        assert record.attempts == 2
        assert "smtp down" in record.errors[-1].message
        assert [r.id for r in await k.jobs.dead_letters.list()] == [dead]


async def test_cron_tick_enqueues_once_per_tick(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        scheduler = k._jobhost.scheduler
        assert scheduler is not None
        scheduler.now = lambda: 1_700_000_100.0  # 5 minutes after a */5 tick boundary
        first = await scheduler.tick()
        again = await scheduler.tick()
        assert len(first) == 1
        assert again == []
        await k.drain_jobs()
    assert Mailer.ticks == 1


async def test_no_queue_without_jobs() -> None:
    class Plain(Module):
        name = "plain"

    async with Kernel([Plain]) as k:
        with pytest.raises(ConfigError, match="no job queue"):
            await k.enqueue("plain.nothing")


def test_job_params_must_not_shadow_enqueue_options() -> None:
    class Bad(Module):
        name = "bad"

        @job
        async def run(self, priority: int) -> None:
            pass

    with pytest.raises(DefinitionError, match="named like enqueue options"):
        describe(Bad)

"""Aggregated health with per-check timeouts; readiness apart from liveness."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from organelle import Kernel, Module, rpc
from organelle.health import CheckResult, Health, Status, as_result
from organelle.locks import leader
from organelle.testing import eventually, running


class Good(Module):
    name = "good"

    @rpc
    async def ping(self) -> str:
        return "pong"


class Moody(Module):
    name = "moody"
    mood: Any = None

    async def health(self) -> Any:
        if isinstance(self.mood, Exception):
            raise self.mood
        if self.mood == "hang":
            await asyncio.sleep(10)
        return self.mood


@dataclass
class Flag:
    name: str = "flag"
    required: bool = True
    ok: bool = True

    async def check(self) -> CheckResult:
        return CheckResult(status=Status.HEALTHY if self.ok else Status.UNHEALTHY, detail="flag")


def test_as_result_normalises_what_health_returns() -> None:
    assert as_result(None).status is Status.HEALTHY
    assert as_result(True).status is Status.HEALTHY  # noqa: FBT003
    assert as_result(False).status is Status.UNHEALTHY  # noqa: FBT003
    assert as_result("degraded").status is Status.DEGRADED
    assert as_result("weird").status is Status.UNHEALTHY
    got = as_result({"status": "degraded", "detail": "slow", "lag_ms": 40})
    assert (got.status, got.detail, dict(got.data)) == (Status.DEGRADED, "slow", {"lag_ms": 40})
    assert as_result(3).status is Status.UNHEALTHY


async def test_all_healthy_is_ready() -> None:
    async with running(Good, Moody) as kernel:
        report = await Health(kernel, cache_s=0).report()
        assert report.status is Status.HEALTHY
        assert report.ready
        assert set(report.checks) == {
            "module:good",
            "module:moody",
            "transport",
            "storage",
            "jobs",
            "streams",
            "leaders",
        }
        assert report.checks["leaders"]["detail"] == "no elections"


async def test_degraded_module_stays_ready_failing_one_is_not() -> None:
    async with running(Good, Moody) as kernel:
        health = Health(kernel, cache_s=0)
        moody = kernel.module("moody")
        assert isinstance(moody, Moody)
        moody.mood = {"status": "degraded", "detail": "slow disk"}
        report = await health.report()
        assert (report.status, report.ready) == (Status.DEGRADED, True)
        assert report.checks["module:moody"]["detail"] == "slow disk"
        moody.mood = False
        report = await health.report()
        assert (report.status, report.ready) == (Status.UNHEALTHY, False)
        assert report.reason == "required check failing: module:moody"


async def test_a_hanging_or_raising_check_is_unhealthy_within_its_timeout() -> None:
    async with running(Good, Moody) as kernel:
        health = Health(kernel, timeout_s=0.05, cache_s=0)
        moody = kernel.module("moody")
        assert isinstance(moody, Moody)
        moody.mood = "hang"
        loop = asyncio.get_running_loop()
        began = loop.time()
        report = await health.report()
        assert loop.time() - began < 1
        assert report.checks["module:moody"]["detail"] == "timed out after 0.05s"
        assert report.checks["module:good"]["status"] == "healthy"  # others unaffected
        moody.mood = RuntimeError("boom")
        report = await health.report()
        assert report.checks["module:moody"]["detail"] == "RuntimeError: boom"


async def test_optional_check_unhealthy_only_degrades() -> None:
    async with running(Good) as kernel:
        health = Health(kernel, cache_s=0)
        health.add(Flag(name="cache", required=False, ok=False))
        report = await health.report()
        assert (report.status, report.ready) == (Status.DEGRADED, True)
        with pytest.raises(ValueError, match="exists"):
            health.add(Flag(name="cache"))


async def test_not_ready_while_starting_and_draining() -> None:
    starting, gate = asyncio.Event(), asyncio.Event()
    working, release = asyncio.Event(), asyncio.Event()

    class Slow(Module):
        name = "slow"

        async def on_start(self) -> None:
            starting.set()
            await gate.wait()

        @rpc
        async def work(self) -> None:
            working.set()
            await release.wait()

    kernel = Kernel([Slow])
    health = Health(kernel, cache_s=0)
    assert (await health.report()).reason == "not started"
    start = asyncio.create_task(kernel.start())
    await starting.wait()  # inside on_start
    report = await health.report()
    assert (report.ready, report.reason) == (False, "starting")
    gate.set()
    await start
    assert (await health.report()).ready
    call = asyncio.create_task(kernel.call("slow.work"))
    await working.wait()
    stopping = asyncio.create_task(kernel.stop())
    await eventually(lambda: not kernel.accepting)  # stop() began: new calls are refused
    report = await health.report()
    assert (report.ready, report.reason) == (False, "draining")
    release.set()
    await call
    await stopping
    assert (await health.report()).reason == "stopped"
    assert health.live()["status"] == "alive"


async def test_concurrent_probes_share_one_round_and_cache() -> None:
    runs = 0

    @dataclass
    class Counting:
        name: str = "counting"
        required: bool = True

        async def check(self) -> CheckResult:
            nonlocal runs
            runs += 1
            await asyncio.sleep(0.01)
            return CheckResult(status=Status.HEALTHY)

    async with running(Good) as kernel:
        health = Health(kernel, cache_s=10)
        health.add(Counting())
        await asyncio.gather(*(health.report() for _ in range(10)))
        await health.report()
        assert runs == 1


async def test_builtin_transport_storage_and_backlog_checks() -> None:
    # A node that only enqueues (no worker here): the jobs wait in the queue.
    cfg = {"kernel": {"storage": "memory://", "jobs": "memory://", "job_worker": False}}
    async with running(Good, config=cfg) as kernel:
        health = Health(kernel, cache_s=0, backlog_limit=10)
        assert (await health.report()).checks["storage"]["status"] == "healthy"  # opened at start
        await kernel.store.put("x", 1)
        assert (await health.report()).checks["storage"]["status"] == "healthy"

        for _ in range(3):
            await kernel.enqueue("elsewhere.work")
        report = await health.report()
        assert report.checks["jobs"]["data"] == {"backlog": 3, "limit": 10}
        for _ in range(8):
            await kernel.enqueue("elsewhere.work")
        report = await health.report()
        assert (report.checks["jobs"]["status"], report.ready) == ("degraded", True)

        class Disconnected:
            connected = False
            solo = False

        real, kernel._router.transport = kernel.transport, Disconnected()  # type: ignore[assignment]
        try:
            report = await health.report()
            assert report.checks["transport"]["status"] == "unhealthy"
            assert not report.ready
        finally:
            kernel._router.transport = real


async def test_stream_lag_check(tmp_path: Any) -> None:
    from organelle import consume
    from organelle.health.checks import StreamLagCheck

    gate = asyncio.Event()

    class Slow(Module):
        name = "slow"

        @consume("ledger", lease_s=30)
        async def read(self, n: int) -> None:
            await gate.wait()

    kernel = Kernel([Slow], {"kernel": {"streams": f"sqlite:///{tmp_path}/s.db"}})
    assert (await StreamLagCheck(kernel).check()).detail == "no stream consumers"
    async with kernel:
        for n in range(5):
            await kernel.append("ledger", n)

        async def lagging() -> CheckResult:  # once the member has claimed a record
            result = await StreamLagCheck(kernel, limit=2).check()
            assert result.data.get("lag"), result
            return result

        result = await eventually(lagging)
        assert result.status is Status.DEGRADED
        assert result.data["groups"] == {"ledger/slow": 5}
        gate.set()
        await kernel.drain_streams(timeout_s=10)
        ok = await StreamLagCheck(kernel, limit=2).check()
        assert ok.status is Status.HEALTHY
        assert ok.data["lag"] == 0


class Leads(Module):
    name = "leads"

    @leader(ttl_s=2)
    async def lead(self) -> None:
        await asyncio.Event().wait()


async def test_leaders_check_says_what_this_node_leads() -> None:
    async with running(Leads, config={"kernel": {"storage": "memory://"}}) as kernel:
        health = Health(kernel, cache_s=0)
        await eventually(lambda: kernel.leaders()[0].leading, timeout_s=5)
        report = await health.report()
        check = report.checks["leaders"]
        assert check["status"] == "healthy"
        assert check["detail"] == "leading leader.leads.lead"
        token = kernel.leaders()[0].token
        assert check["data"] == {"leader.leads.lead": {"leading": True, "token": token, "terms": 1}}

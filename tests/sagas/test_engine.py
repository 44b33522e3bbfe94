"""Sagas in one kernel: forward, compensation in reverse, retries, timeouts, stuck, retry, abort.

On a real SQLite job queue and Store (files in the test's directory) and on
NATS (a JetStream job queue, a NATS KV Store); the steps are RPC methods of a
module and a method of the saga's owner.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from organelle import Kernel, Module, rpc
from organelle.errors import ConflictError, DefinitionError, NotFoundError, SagaNotFoundError
from organelle.jobs import Backoff
from organelle.kernel._dispatch import CallNext, Invocation
from organelle.sagas import (
    STEP_META,
    ParamsFn,
    Saga,
    SagaRecord,
    Step,
    step_key,
    step_key_of,
    step_phase,
)
from organelle.storage import open_store
from organelle.testing import eventually
from organelle.testing.servers import NatsServer, shared_nats

FAST = Backoff(base_s=0.01, max_s=0.02, jitter=0)

pytestmark = pytest.mark.timeout(60)


class Ledger(Module):
    """Steps on the other side of an RPC: each records what it was asked, and may fail."""

    name = "ledger"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None, str | None]] = []
        self.fail: dict[str, int] = {}  # step -> failures left (-1: always)
        self.gate: asyncio.Event | None = None

    def _maybe_fail(self, what: str) -> None:
        left = self.fail.get(what, 0)
        if left:
            self.fail[what] = left - 1 if left > 0 else left
            raise RuntimeError(f"{what} refused")

    @rpc
    async def do(self, step: str, idem: str | None = None) -> str:
        self.calls.append(("do", step, step_key(), step_phase()))
        assert idem is None or idem == step_key()
        if self.gate is not None and step == "b":
            await self.gate.wait()
        self._maybe_fail(f"do.{step}")
        return f"did {step}"

    @rpc
    async def undo(self, step: str) -> None:
        self.calls.append(("undo", step, step_key(), step_phase()))
        self._maybe_fail(f"undo.{step}")

    @rpc
    async def slow(self, step: str) -> None:
        await asyncio.sleep(5)


def named(step: str) -> ParamsFn:
    def params(saga: Mapping[str, Any], _: Mapping[str, Any]) -> dict[str, Any]:
        return {"step": step, **saga}

    return params


def steps(*names: str, **options: Any) -> list[Step]:
    return [
        Step(
            n,
            action="ledger.do",
            compensate="ledger.undo",
            params=named(n),
            backoff=FAST,
            **options,
        )
        for n in names
    ]


class Orders(Module):
    name = "orders"
    requires = ("ledger",)

    async def note(self, step: str) -> dict[str, Any]:
        """A step that is a method of the owner: runs on its live instance."""
        return {"by": self.name, "key": step_key(), "step": step}

    plain = Saga("plain", steps=steps("a", "b", "c"))
    keyed = Saga(
        "keyed",
        steps=[
            Step("a", action="ledger.do", key_param="idem", params=lambda p, r: {"step": "a"}),
            Step("m", action=note, params=lambda p, r: {"step": r["a"]}),
        ],
    )
    retried = Saga("retried", steps=steps("a", "b", max_attempts=3))
    undo_failed = Saga("undo_failed", steps=steps("a", "b", compensate_failed=True, max_attempts=1))
    timed = Saga(
        "timed",
        steps=[
            *steps("a"),
            Step(
                "s",
                action="ledger.slow",
                timeout_s=0.1,
                max_attempts=1,
                params=lambda p, r: {"step": "s"},
            ),
        ],
    )
    fragile = Saga("fragile", steps=steps("a", "b", max_attempts=1, compensate_attempts=2))
    brief = Saga("brief", steps=steps("a"), retention_s=0.3)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


@pytest.fixture(params=["sqlite", "nats"])
async def kernel(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Kernel]:
    """SQLite files, or a JetStream job queue and a NATS KV Store (no transactions needed)."""
    if request.param == "sqlite":
        urls = {"jobs": f"sqlite:///{tmp_path}/jobs.db", "storage": f"sqlite:///{tmp_path}/s.db"}
    else:
        nats: NatsServer = request.getfixturevalue("nats_server")
        host, tag = nats.url.removeprefix("nats://"), f"saga{uuid.uuid4().hex[:8]}"
        urls = {"jobs": f"nats://{host}?stream={tag.upper()}", "storage": f"nats-kv://{host}/{tag}"}
    async with Kernel([Ledger(), Orders], {"kernel": urls}) as k:
        yield k


def ledger(kernel: Kernel) -> Ledger:
    module = kernel.module("ledger")
    assert isinstance(module, Ledger)
    return module


async def settle(kernel: Kernel) -> None:
    """Until no saga is running or compensating (a NATS queue's backlog shows late)."""

    async def moving() -> bool:
        return not any(r.active for r in await kernel.sagas.list(state="unfinished"))

    await eventually(moving, timeout_s=20, interval_s=0.02)
    await kernel.drain_jobs(timeout_s=20, horizon_s=2)


async def test_a_saga_runs_its_steps_in_order_and_completes(kernel: Kernel) -> None:
    sid = await kernel.module("orders").sagas.start("plain", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "completed"
    assert [s.state for s in rec.steps] == ["done"] * 3
    assert rec.results() == {"a": "did a", "b": "did b", "c": "did c"}
    calls = ledger(kernel).calls
    assert [(c[0], c[1]) for c in calls] == [("do", "a"), ("do", "b"), ("do", "c")]
    assert [c[2] for c in calls] == [step_key_of(sid, s) for s in "abc"]
    assert {c[3] for c in calls} == {"action"}
    assert await kernel.sagas.list(state="running") == []


async def test_a_failed_step_compensates_the_done_ones_in_reverse(kernel: Kernel) -> None:
    ledger(kernel).fail = {"do.c": -1}
    sid = await kernel.module("orders").sagas.start("plain", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "compensated"
    assert [s.state for s in rec.steps] == ["compensated", "compensated", "failed"]
    assert rec.error is not None
    assert "do.c refused" in rec.error
    assert rec.steps[2].attempts == 3  # the default policy, then give up
    tail = [(c[0], c[1], c[3]) for c in ledger(kernel).calls if c[0] == "undo"]
    assert tail == [("undo", "b", "compensate"), ("undo", "a", "compensate")]
    # the compensation gets the step's key, the same as its action
    keys = {(c[0], c[1]): c[2] for c in ledger(kernel).calls}
    assert keys["undo", "a"] == keys["do", "a"] == step_key_of(sid, "a")


async def test_retries_then_success_keeps_each_error(kernel: Kernel) -> None:
    ledger(kernel).fail = {"do.b": 2}
    sid = await kernel.module("orders").sagas.start("retried", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "completed"
    assert rec.steps[1].attempts == 3
    assert [e.attempt for e in rec.steps[1].errors] == [1, 2]
    assert rec.steps[1].errors[0].message.endswith("do.b refused")


async def test_compensate_failed_also_undoes_the_failed_step(kernel: Kernel) -> None:
    ledger(kernel).fail = {"do.b": -1}
    sid = await kernel.module("orders").sagas.start("undo_failed", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "compensated"
    undone = [c[1] for c in ledger(kernel).calls if c[0] == "undo"]
    assert undone == ["b", "a"]


async def test_a_step_that_times_out_fails(kernel: Kernel) -> None:
    sid = await kernel.module("orders").sagas.start("timed", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "compensated"
    assert rec.steps[1].state == "failed"
    assert "Timeout" in rec.steps[1].errors[0].type


async def test_keys_reach_actions_as_a_param_and_methods_run_on_the_owner(kernel: Kernel) -> None:
    sid = await kernel.module("orders").sagas.start("keyed", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "completed", rec.error
    assert rec.results()["m"] == {"by": "orders", "key": step_key_of(sid, "m"), "step": "did a"}


async def test_a_compensation_that_keeps_failing_is_stuck_until_retried(kernel: Kernel) -> None:
    ledger(kernel).fail = {"do.b": -1, "undo.a": -1}
    sid = await kernel.module("orders").sagas.start("fragile", {})
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "stuck"
    assert rec.error is not None
    assert rec.error.startswith("compensating a: RemoteError") or "undo.a refused" in rec.error
    assert rec.steps[0].compensate_attempts == 2
    assert [r.id for r in await kernel.sagas.list(state="stuck")] == [sid]
    ledger(kernel).fail = {}
    await kernel.sagas.retry(sid)
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "compensated"
    assert await kernel.sagas.list(state="stuck") == []
    with pytest.raises(ConflictError):
        await kernel.sagas.retry(sid)


async def test_start_with_a_key_is_idempotent(kernel: Kernel) -> None:
    sagas = kernel.module("orders").sagas
    first = await sagas.start("plain", {}, key="order-7")
    again = await sagas.start("orders.plain", {}, key="order-7")
    other = await sagas.start("plain", {}, key="order-8")
    assert first == again != other
    await settle(kernel)
    assert len(await kernel.sagas.list(name="orders.plain")) == 2
    assert len([c for c in ledger(kernel).calls if c[1] == "a"]) == 2


async def test_abort_compensates_at_the_next_step(kernel: Kernel) -> None:
    gate = ledger(kernel).gate = asyncio.Event()
    sid = await kernel.module("orders").sagas.start("plain", {})

    async def in_b() -> None:
        while not any(c[1] == "b" for c in ledger(kernel).calls):
            await asyncio.sleep(0.01)

    await asyncio.wait_for(in_b(), 10)
    await kernel.sagas.abort(sid)
    assert (await kernel.sagas.get(sid)).aborted
    gate.set()  # the step in flight finishes, and is compensated
    await settle(kernel)
    rec = await kernel.sagas.get(sid)
    assert rec.state == "compensated"
    assert rec.error == "aborted"
    assert [s.state for s in rec.steps] == ["compensated", "compensated", "pending"]
    await kernel.sagas.abort(sid)  # changes nothing now


async def test_a_finished_saga_is_kept_for_its_retention(kernel: Kernel) -> None:
    sagas = kernel.module("orders").sagas
    sid = await sagas.start("brief", {}, key="k")
    await settle(kernel)
    assert (await kernel.sagas.get(sid)).state == "completed"
    assert await sagas.start("brief", {}, key="k") == sid  # the key holds while kept
    await asyncio.sleep(0.5)
    with pytest.raises(SagaNotFoundError):
        await kernel.sagas.get(sid)
    assert await sagas.start("brief", {}, key="k") == sid  # a new saga under the same key
    await settle(kernel)
    assert (await kernel.sagas.get(sid)).state == "completed"
    assert len([c for c in ledger(kernel).calls if c[0] == "do"]) == 2


async def test_misuse_is_refused(kernel: Kernel) -> None:
    with pytest.raises(NotFoundError):
        await kernel.sagas.start("orders.nope")
    with pytest.raises(SagaNotFoundError):
        await kernel.sagas.get("no-such-id")
    sid = await kernel.module("orders").sagas.start("plain", {})
    await settle(kernel)
    with pytest.raises(ConflictError):
        await kernel.sagas.abort(sid)
    with pytest.raises(DefinitionError, match="two steps"):
        Saga("x", steps=[Step("a", action="m.a"), Step("a", action="m.b")])
    with pytest.raises(DefinitionError, match="module"):
        Saga("x", steps=[Step("a", action="nodot")])
    with pytest.raises(DefinitionError, match="no steps"):
        Saga("x", steps=[])
    with pytest.raises(DefinitionError, match="retention_s"):
        Saga("x", steps=[Step("a", action="m.a")], retention_s=0)
    with pytest.raises(DefinitionError, match="async def"):
        Saga("x", steps=[Step("a", action=print)])


async def test_a_start_killed_before_its_first_job_is_recovered(tmp_path: Path) -> None:
    """The record was written, the job never enqueued: the owner's next start enqueues it."""
    store = await open_store(f"sqlite:///{tmp_path}/s.db")
    rec = SagaRecord(
        id="dead-start",
        name="orders.plain",
        key=None,
        params={},
        state="running",
        cursor=0,
        version=0,
        steps=[],
    )
    from organelle.sagas import StepRecord

    rec.steps = [StepRecord(name=n) for n in "abc"]
    await store.put("_sagas.a.dead-start", {"name": "orders.plain", "at": 0.0})
    await store.put("_sagas.s.dead-start", rec)
    await store.close()
    config = {
        "kernel": {"jobs": f"sqlite:///{tmp_path}/jobs.db", "storage": f"sqlite:///{tmp_path}/s.db"}
    }
    async with Kernel([Ledger(), Orders], config) as kernel:
        await settle(kernel)
        assert (await kernel.sagas.get("dead-start")).state == "completed"
        assert await kernel.sagas.list(state="running") == []


async def test_middleware_sees_each_step_as_a_job_and_its_calls(tmp_path: Path) -> None:
    seen: list[tuple[str, str, str | None]] = []

    async def recorder(inv: Invocation, call_next: CallNext) -> Any:
        meta = inv.context.meta if inv.context is not None else {}
        seen.append((inv.kind, inv.target, meta.get(STEP_META)))
        return await call_next(inv)

    urls = {"jobs": f"sqlite:///{tmp_path}/jobs.db", "storage": f"sqlite:///{tmp_path}/s.db"}
    async with Kernel([Ledger(), Orders], {"kernel": urls}, middleware=[recorder]) as kernel:
        sid = await kernel.sagas.start("orders.keyed", {})
        await settle(kernel)
        assert (await kernel.sagas.get(sid)).state == "completed"
    jobs = [s for s in seen if s[0] == "job"]
    assert [s[1] for s in jobs] == ["_saga.orders.keyed"] * 2  # one job per step
    assert ("rpc", "ledger.do", step_key_of(sid, "a")) in seen

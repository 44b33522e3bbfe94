"""The serving node's hot path: requests of one read served in one task, each kept apart."""

from __future__ import annotations

import asyncio
import time
from contextvars import ContextVar

import msgspec
import pytest

from organelle import Kernel, Module, rpc
from organelle.context import context, root_context
from organelle.errors import CallTimeoutError, InternalError
from organelle.transport._nats_headers import context_from, headers_for, parse_headers
from organelle.transport._nats_serve import _PLAIN_REQUEST, Exposer
from organelle.transport.nats import NatsTransport

from .conftest import Config

_mark: ContextVar[str | None] = ContextVar("test_nats_serve_mark", default=None)


class Answer(msgspec.Struct):
    n: int
    mark: str | None


class Mixed(Module):
    name = "mixed"
    version = "1.0.0"

    @rpc
    async def slow(self, n: int, seconds: float) -> Answer:
        """Marks its context, then waits under a timeout taken before the wait."""
        _mark.set(f"slow-{n}")
        async with asyncio.timeout(seconds + 5):
            await asyncio.sleep(seconds)
        return Answer(n=n, mark=_mark.get())

    @rpc
    async def quick(self, n: int) -> Answer:
        """Answers at once: must see no other request's context variable."""
        seen = _mark.get()
        _mark.set(f"quick-{n}")
        return Answer(n=n, mark=seen)

    @rpc
    async def stuck(self, seconds: float) -> None:
        """Takes ``asyncio.timeout`` before waiting past it: the timeout must fire here."""
        async with asyncio.timeout(seconds):
            await asyncio.sleep(60)

    @rpc
    async def request_id(self) -> str:
        return context().request_id


async def test_a_waiting_handler_holds_back_none_of_its_batch(config: Config) -> None:
    async with Kernel([Mixed], config()) as _, Kernel([], config()) as client:
        await client.wait_for("mixed", 5)
        calls = []
        for n in range(60):  # sent in one burst: the server reads them in a few batches
            if n % 10 == 0:
                calls.append(client.call("mixed.slow", n=n, seconds=0.5))
            else:
                calls.append(client.call("mixed.quick", n=n))
        started = time.monotonic()
        tasks = [asyncio.ensure_future(c) for c in calls]
        quick = [t for n, t in enumerate(tasks) if n % 10]
        async with asyncio.timeout(10):
            done = await asyncio.gather(*quick)
        assert time.monotonic() - started < 0.45  # not behind the slow ones
        assert [a.n for a in done] == [n for n in range(60) if n % 10]
        assert all(a.mark is None for a in done)  # no context variable leaks between requests
        async with asyncio.timeout(10):
            slow = await asyncio.gather(*(t for n, t in enumerate(tasks) if n % 10 == 0))
        assert [a.mark for a in slow] == [f"slow-{n}" for n in range(0, 60, 10)]


async def test_a_timeout_taken_before_the_first_wait_still_fires(config: Config) -> None:
    async with Kernel([Mixed], config()) as _, Kernel([], config()) as client:
        await client.wait_for("mixed", 5)
        started = time.monotonic()
        outcomes = await asyncio.gather(
            *(client.call_with("mixed.stuck", {"seconds": 0.2}, timeout_s=5) for _ in range(5)),
            *(client.call("mixed.quick", n=n) for n in range(5)),
            return_exceptions=True,
        )
        assert 0.15 < time.monotonic() - started < 3  # each fired after its 0.2 s
        # The handler's own TimeoutError is a bug of the handler: an internal error,
        # not the caller's deadline (nor "Timeout should be used inside a task").
        for outcome in outcomes[:5]:
            assert isinstance(outcome, InternalError)
            assert outcome.error_type == "TimeoutError"
        assert [o.n for o in outcomes[5:]] == list(range(5))  # type: ignore[union-attr]


async def test_ids_of_plain_and_nested_requests_cross_intact(config: Config) -> None:
    async with Kernel([Mixed], config()) as _, Kernel([], config()) as client:
        await client.wait_for("mixed", 5)
        ids = await asyncio.gather(*(client.call("mixed.request_id") for _ in range(20)))
        assert len(set(ids)) == 20  # each request's own id, read by the fast header path


def test_the_fast_header_paths_read_and_write_as_the_general_ones() -> None:
    root = root_context(time.monotonic() + 3)
    child = root.child(time.monotonic() + 2)
    for ctx in (root, child):
        block = NatsTransport._headers(ctx, "json")
        general = headers_for(ctx, "json", timeout=True)
        assert block.split(b"Organelle-Timeout-Ms")[0] == general.split(b"Organelle-Timeout-Ms")[0]
        found = _PLAIN_REQUEST(block)
        assert found is not None
        fast = Exposer._plain_context(found)
        slow = context_from(parse_headers(block)[1])
        assert (fast.seq, fast.corr, fast.cause, fast.principal, fast.meta, fast.topic) == (
            slow.seq,
            slow.corr,
            slow.cause,
            slow.principal,
            slow.meta,
            slow.topic,
        )
        assert fast.deadline is not None
        assert slow.deadline is not None
        assert abs(fast.deadline - slow.deadline) < 0.05
    # Anything else (a principal, meta, another client's spelling) takes the general path.
    assert _PLAIN_REQUEST(headers_for(root, "json", timeout=False)) is None
    assert _PLAIN_REQUEST(b"NATS/1.0\r\norganelle-id: x\r\nOrganelle-Timeout-Ms: 5\r\n\r\n") is None
    meta = root_context(time.monotonic() + 3, meta={"tenant": "t1"})
    assert _PLAIN_REQUEST(NatsTransport._headers(meta, "json")) is None


async def test_each_call_times_out_at_its_own_deadline(config: Config) -> None:
    async with Kernel([Mixed], config()) as _, Kernel([], config()) as client:
        await client.wait_for("mixed", 5)
        transport = client.transport
        assert isinstance(transport, NatsTransport)

        async def timed(timeout_s: float) -> float:
            started = time.monotonic()
            with pytest.raises(CallTimeoutError):
                await client.call_with("mixed.stuck", {"seconds": 30}, timeout_s=timeout_s)
            return time.monotonic() - started

        # Later deadlines first: the one timer must move to each earlier one.
        limits = (0.9, 0.3, 0.6, 0.2)
        took = await asyncio.gather(*(timed(t) for t in limits))
        for limit, elapsed in zip(limits, took, strict=True):
            assert limit - 0.01 <= elapsed < limit + 0.3
        for n in range(300):
            await client.call("mixed.quick", n=n)
        assert len(transport._deadlines) < 100  # finished calls leave no entry behind for long

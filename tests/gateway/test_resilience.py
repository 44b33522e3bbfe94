"""Retries and the circuit breaker on calls to remote modules."""

from __future__ import annotations

from typing import Any

import pytest

from organelle import CallTimeoutError, NotFoundError, UnavailableError
from organelle.gateway._resilience import CircuitBreaker, RemoteCaller
from organelle.testing import eventually


def caller(fn: Any, **options: Any) -> RemoteCaller:
    defaults = {
        "retries": 2,
        "backoff_s": 0.001,
        "max_backoff_s": 0.01,
        "breaker_failures": 3,
        "breaker_reset_s": 0.05,
    }
    return RemoteCaller(fn, **{**defaults, **options})


async def test_undelivered_calls_are_retried_with_backoff() -> None:
    attempts: list[int] = []

    async def flaky(target: str, params: dict[str, Any], **_: Any) -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise UnavailableError("no responders")
        return "ok"

    assert await caller(flaky).call("far.away", {}, timeout_s=1.0) == "ok"
    assert len(attempts) == 3


async def test_timeouts_and_answers_are_not_retried() -> None:
    attempts: list[str] = []

    async def slow(target: str, params: dict[str, Any], **_: Any) -> str:
        attempts.append(target)
        raise CallTimeoutError("late") if target == "a.slow" else NotFoundError("gone")

    c = caller(slow)
    with pytest.raises(CallTimeoutError):
        await c.call("a.slow", {}, timeout_s=1.0)
    with pytest.raises(NotFoundError):
        await c.call("b.missing", {}, timeout_s=1.0)
    assert attempts == ["a.slow", "b.missing"]
    assert c.breaker("b").state == "closed"


async def test_breaker_opens_fails_fast_then_recovers() -> None:
    down = True
    calls = 0

    async def remote(target: str, params: dict[str, Any], **_: Any) -> str:
        nonlocal calls
        calls += 1
        if down:
            raise UnavailableError("down")
        return "up"

    c = caller(remote, retries=0)
    for _ in range(3):
        with pytest.raises(UnavailableError):
            await c.call("m.f", {}, timeout_s=1.0)
    assert c.breaker("m").state == "open"
    before = calls
    with pytest.raises(UnavailableError, match="circuit open"):
        await c.call("m.f", {}, timeout_s=1.0)
    assert calls == before
    await eventually(lambda: c.breaker("m").state == "half-open", timeout_s=0.06)  # reset_s 0.05
    down = False
    assert await c.call("m.f", {}, timeout_s=1.0) == "up"
    assert c.breaker("m").state == "closed"


def test_breaker_half_open_allows_one_trial() -> None:
    b = CircuitBreaker(failures=1, reset_s=0.0)
    b.failure()
    assert b.state == "half-open"
    assert b.allow()
    assert not b.allow()
    b.failure()
    b.success()
    assert b.state == "closed"

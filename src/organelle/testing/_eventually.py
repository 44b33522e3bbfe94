"""``eventually()``: retry a check until it passes, within a deadline.

For what no ``drain()`` can wait on: another process, a server, a clock.
A bounded retry states the condition and fails with its last reason; a
``sleep`` before an assert either wastes time or, on a slow machine, fails
for no reason.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

__all__ = ["eventually"]

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout_s: float = ..., interval_s: float = ...
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T], *, timeout_s: float = ..., interval_s: float = ...
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    timeout_s: float = 5.0,
    interval_s: float = 0.01,
) -> Any:
    """Call ``check`` until it passes; return its last value.

    ``check`` (sync or async, no arguments) passes when it raises no
    ``AssertionError`` and returns ``None`` or a truthy value; a falsy value
    other than ``None`` (``False``, ``0``, an empty list) means "not yet". So
    a check may assert and return nothing, be a predicate
    (``lambda: len(seen) == 3``) or return what it waits for
    (``lambda: [e for e in events if e[0] == "order.shipped"]``, a non-empty
    list). Any other exception propagates at once: a broken check is a bug,
    not a condition to wait out.

    Always bounded: attempts start until ``timeout_s`` has passed (the last
    one at the deadline), and an attempt of an async check that takes longer
    than ``timeout_s`` is cancelled and counts as a failure; so the wait ends
    within twice ``timeout_s``. A sync check must not block.

    Example::

        await kernel.call("orders.place", sku="A")
        await eventually(lambda: remote_log == ["placed A"])  # another node writes it

        async def shipped() -> None:
            assert (await kernel.call("orders.get", id=1))["state"] == "shipped"

        await eventually(shipped, timeout_s=10)

    Args:
        check: the condition, called with no arguments.
        timeout_s: how long to retry.
        interval_s: the pause between attempts.

    Raises:
        AssertionError: ``check`` still failed at the deadline; the message
            (and ``__cause__``) is its last failure.
        ValueError: ``timeout_s`` or ``interval_s`` is not positive.
    """
    if timeout_s <= 0 or interval_s <= 0:
        raise ValueError(
            f"eventually: timeout_s and interval_s must be positive, "
            f"got {timeout_s} and {interval_s}"
        )
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    name = getattr(check, "__qualname__", None) or repr(check)
    attempts = 0
    while True:
        attempts += 1
        failure: AssertionError | None = None
        bound = asyncio.timeout(timeout_s)
        try:
            async with bound:
                value = check()
                if inspect.isawaitable(value):
                    value = await value
        except AssertionError as exc:
            failure = exc
            reason = str(exc) or type(exc).__name__
        except TimeoutError:
            if not bound.expired():
                raise  # the check's own timeout: a bug to report, not to retry
            reason = f"an attempt was still running after {timeout_s} s"
        else:
            if value is None or value:
                return value
            reason = f"returned {value!r}"
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(
                f"eventually({name}): still failing after {timeout_s} s "
                f"({attempts} attempts): {reason}"
            ) from failure
        await asyncio.sleep(min(interval_s, remaining))

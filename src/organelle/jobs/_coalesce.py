"""Group commit for a network backend: concurrent calls share one round trip.

Callers add an item and await its result; one flusher runs at a time, taking
everything added so far as one batch. While a batch is on the wire, new items
gather for the next one, so under load each round trip carries many items and
when idle an item goes out at once (no timer, no added latency).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

__all__ = ["Coalescer"]

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """Runs ``flush(items) -> results`` (one result or exception per item, in order).

    Args:
        flush: sends one batch; returns a result or an exception instance per item.
        max_batch: the most items one flush carries.
    """

    def __init__(
        self,
        flush: Callable[[Sequence[T]], Awaitable[Sequence[R | BaseException]]],
        max_batch: int = 500,
    ) -> None:
        self._flush = flush
        self._max = max_batch
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None

    async def submit(self, item: T) -> R:
        """Add ``item`` to the next batch and wait for its own result."""
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, fut))
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())
        return await fut

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[: self._max], self._pending[self._max :]
            live = [(item, fut) for item, fut in batch if not fut.done()]  # skip the cancelled
            if not live:
                continue
            try:
                results = await self._flush([item for item, _ in live])
            except Exception as exc:  # the whole batch failed: every caller sees why
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(exc)
                continue
            for (_, fut), result in zip(live, results, strict=True):
                if fut.done():
                    continue
                if isinstance(result, BaseException):
                    fut.set_exception(result)
                else:
                    fut.set_result(result)

    async def close(self) -> None:
        """Wait for the batch in flight and anything still queued."""
        runner = self._runner
        if runner is not None and not runner.done():
            await asyncio.gather(runner, return_exceptions=True)

"""JetStream writes without nats-py's per-request machinery (job queue, stream log).

A NATS job costs four JetStream writes (its record and its message at
enqueue, the claim's and the outcome's compare-and-set) and a stream record
one, each a request for a ``PubAck``. ``js.publish`` makes every one a fresh
``nc.request``: a random token (a system call), a future with a done
callback, ``asyncio.wait_for`` (a timer armed and cancelled), then
``json.loads`` and a ``PubAck`` dataclass. Here the replies come to one inbox
subscription keyed by a counter, the ack is decoded by msgspec into the two
fields the callers read, and deadlines are swept by one task instead of a
timer per write: 43-52 µs of CPU a write against 59-96 µs for ``js.publish``
(32 in flight, one process, measured side by side). Errors are nats-py's own
(``APIError.from_error``, ``NoStreamResponseError``,
``nats.errors.TimeoutError``), so callers handle them as they did.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import msgspec

__all__ = ["JsPublisher"]

TIMEOUT_S = 5.0  # nats-py's JetStream default is 5 s too
_SWEEP_S = 0.25  # how often expired writes are failed


class _Ack(msgspec.Struct):
    seq: int = 0
    error: dict[str, Any] | None = None


_decode_ack = msgspec.json.Decoder(_Ack).decode


class JsPublisher:
    """Publishes to JetStream and awaits each write's ``PubAck``; one per connection."""

    def __init__(self, nc: Any, *, timeout_s: float = TIMEOUT_S) -> None:
        self._nc = nc
        self.timeout_s = timeout_s
        self._prefix = ""
        self._cut = 0
        self._next = 0
        # token -> (future, deadline); dicts keep insertion order, so the oldest
        # (earliest deadline, one timeout for all) come first for the sweep.
        self._waiting: dict[str, tuple[asyncio.Future[int], float]] = {}
        self._sub: Any = None
        self._sweeper: asyncio.Task[None] | None = None

    async def open(self) -> None:
        if self._sub is None:
            self._prefix = self._nc.new_inbox() + "."
            self._cut = len(self._prefix)
            self._sub = await self._nc.subscribe(self._prefix + "*", cb=self._on_reply)

    async def publish(self, subject: str, payload: bytes, headers: dict[str, str]) -> int:
        """Write ``payload`` to the stream that holds ``subject``; return its sequence.

        Raises:
            nats.js.errors.APIError: the server refused the write (its subclass
                by code; ``err_code`` 10071 is a failed expected-sequence check).
            nats.js.errors.NoStreamResponseError: no stream takes ``subject``.
            nats.errors.TimeoutError: no ack within ``timeout_s``.
        """
        if self._sub is None:
            await self.open()
        self._next += 1
        token = str(self._next)
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[token] = (future, time.monotonic() + self.timeout_s)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())
        try:
            await self._nc.publish(subject, payload, reply=self._prefix + token, headers=headers)
            return await future
        finally:
            self._waiting.pop(token, None)

    async def _on_reply(self, msg: Any) -> None:
        waiting = self._waiting.pop(msg.subject[self._cut :], None)
        if waiting is None or waiting[0].done():
            return
        future = waiting[0]
        if not msg.data:  # a status message: 503 when no stream listens on the subject
            from nats.js.errors import NoStreamResponseError

            future.set_exception(NoStreamResponseError())
            return
        try:
            ack = _decode_ack(msg.data)
        except msgspec.DecodeError as exc:  # not a JetStream ack: a foreign responder
            from nats.errors import Error as NatsError

            future.set_exception(NatsError(f"undecodable JetStream ack: {exc}"))
            return
        if ack.error is None:
            future.set_result(ack.seq)
            return
        from nats.js.errors import APIError

        try:
            APIError.from_error(ack.error)  # raises the subclass for the error's code
        except APIError as exc:
            future.set_exception(exc)

    async def _sweep(self) -> None:
        """Fail writes whose ack is overdue (a reply lost to a reconnect, a dead server)."""
        from nats.errors import TimeoutError as NatsTimeoutError

        try:
            while self._waiting:
                await asyncio.sleep(_SWEEP_S)
                now = time.monotonic()
                expired = []
                for token, (future, deadline) in self._waiting.items():
                    if deadline > now:
                        break
                    expired.append(token)
                    if not future.done():
                        future.set_exception(NatsTimeoutError())
                for token in expired:
                    del self._waiting[token]
        finally:
            self._sweeper = None

    async def close(self) -> None:
        """Stop the sweep and fail what still waits (the connection is going away)."""
        from nats.errors import ConnectionClosedError

        sweeper, self._sweeper = self._sweeper, None
        if sweeper is not None:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
        waiting, self._waiting = self._waiting, {}
        for future, _ in waiting.values():
            if not future.done():
                future.set_exception(ConnectionClosedError())
        self._sub = None

"""The serving half of ``MemoryTransport``: what one node does with calls and events sent to it.

The other nodes of the broker reach it only through ``take_call`` and
``take_event``, with the bytes and headers NATS would carry; it answers as
``_nats_serve.Exposer`` does (typed error replies, a retryable refusal for a
module it no longer serves, a backlog in order when its kernel's queue is full).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from organelle._coro import Continuation
from organelle.codec import Codec, codec_for
from organelle.envelope import wire_name
from organelle.errors import InternalError, OrganelleError, UnavailableError, ValidationError
from organelle.transport._event_wire import Claimed
from organelle.transport._memory_broker import Reply
from organelle.transport._nats_headers import codec_of, context_from

if TYPE_CHECKING:
    from organelle.context import Context
    from organelle.module import ModuleSpec
    from organelle.transport._event_wire import EventWire
    from organelle.transport.base import Inbound

__all__ = ["MemoryNode"]

log = logging.getLogger("organelle.transport.memory")

_JSON = codec_for("json")


def _too_large(what: str, size: int, limit: int) -> ValidationError:
    message = f"{what} of {size} bytes exceeds the limit of {limit} bytes"
    return ValidationError(message, errors=[{"field": "$", "message": message}])


async def _finish(delivery: Any) -> None:
    """Await one delivery; a failure is logged and the backlog behind it still goes on."""
    try:
        await delivery
    except Exception:
        log.exception("event delivery failed")


class MemoryNode:
    """One node as the broker and the other nodes see it (a ``Member``).

    Args:
        node: its name, unique in the broker.
        max_payload_bytes: the largest request, reply or event it takes or sends.
        events: its events on the wire (security settings, rejected counts).
    """

    def __init__(self, node: str, max_payload_bytes: int, events: EventWire) -> None:
        self._node = node
        self._max = max_payload_bytes
        self._events = events
        self._inbound: Inbound | None = None
        self._exposed: dict[str, ModuleSpec] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._backlog: deque[tuple[str, str, Any, Context]] | None = None
        self._draining: asyncio.Task[None] | None = None

    @property
    def node(self) -> str:
        """This node's name in the cluster."""
        return self._node

    @property
    def exposed(self) -> Mapping[str, ModuleSpec]:
        """The modules this node serves now."""
        return self._exposed

    @property
    def delivering(self) -> asyncio.Task[None] | None:
        """The task handing a backlog of events to the kernel, while there is one."""
        return self._draining

    async def finish(self, timeout_s: float) -> None:
        """Wait (bounded) for replies being computed and backlogs being handed over."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)

    # -- RPC -----------------------------------------------------------------------------
    def take_call(
        self, target: str, body: bytes, headers: dict[str, str], reply: asyncio.Future[Reply]
    ) -> None:
        """Serve one request in a task of its own, with none of the caller's contextvars."""
        task = asyncio.get_running_loop().create_task(
            self._answer(target, body, headers, reply), context=contextvars.Context()
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(
        self, target: str, body: bytes, headers: dict[str, str], reply: asyncio.Future[Reply]
    ) -> None:
        answer = await self._serve(target, body, headers)
        if not reply.done():  # the caller may have timed out or gone
            reply.set_result(answer)

    async def _serve(self, target: str, body: bytes, headers: dict[str, str]) -> Reply:
        codec: Codec = _JSON
        inbound = self._inbound
        if inbound is None or target.partition(".")[0] not in self._exposed:
            err = UnavailableError(f"{target!r} is no longer served by this node")
            return self._error(codec, err, retry=True)
        try:
            codec = codec_of(headers)
            if len(body) > self._max:
                raise _too_large("request", len(body), self._max)  # noqa: TRY301
            params = codec.decode(body)  # an object: the sender encoded a dict
            result = await inbound.dispatch(target, params, context_from(headers))
            out = codec.encode(result)
            if len(out) > self._max:
                raise _too_large("reply", len(out), self._max)  # noqa: TRY301
        except OrganelleError as err:
            return self._error(codec, err)
        except Exception as exc:
            return self._error(codec, InternalError.wrap(exc))
        return None, False, out, wire_name(result)

    def _error(self, codec: Codec, err: OrganelleError, *, retry: bool = False) -> Reply:
        try:
            body = codec.encode(err.to_wire())
        except ValidationError:  # details that cannot be encoded: send the rest
            body = codec.encode({**err.to_wire(), "details": {}})
        if len(body) > self._max:
            body = codec.encode({**err.to_wire(), "details": {}})
        return err.code, retry, body, None

    # -- events --------------------------------------------------------------------------
    def take_event(
        self, module: str, handler: str, topic: str, body: bytes, headers: dict[str, str]
    ) -> None:
        """Hand one event to the kernel's queue for a local handler, in arrival order."""
        inbound = self._inbound
        if inbound is None or module not in self._exposed:
            return
        item = self._read(topic, body, headers)
        if item is None:
            return
        payload, ctx = item
        if self._backlog is not None:  # the local queue is full: keep order behind it
            self._backlog.append((module, handler, payload, ctx))
            return
        if isinstance(payload, Claimed):  # what follows waits while it is fetched
            self._backlog = deque([(module, handler, payload, ctx)])
            self._spawn_drain(self._drain(inbound, None, None))
            return
        coro = inbound.deliver(module, handler, payload, ctx)
        try:
            first = coro.send(None)
        except StopIteration:
            return
        except Exception:
            log.exception("delivering %r to %s.%s failed", topic, module, handler)
            return
        # The local queue is full: what follows waits in the backlog until it has room.
        self._backlog = deque()
        self._spawn_drain(self._drain(inbound, coro, first))

    def _read(self, topic: str, body: bytes, headers: dict[str, str]) -> tuple[Any, Context] | None:
        """``(payload, context)`` of an incoming event; ``None``: dropped (counted, logged)."""
        try:
            if len(body) > self._max:
                raise _too_large("event", len(body), self._max)  # noqa: TRY301
            ref = self._events.claim_of(headers)
            payload: Any
            if ref is None:
                payload = self._events.decode(headers, body, self._max)
            else:  # fetched in order, behind what is queued, by the draining task
                payload = Claimed(topic, headers, body, ref)
            return payload, context_from(headers, topic)
        except OrganelleError as err:
            self._events.drop(topic, err)
        except Exception as exc:  # a decoder's own failure (deep nesting): still malformed
            self._events.drop(topic, ValidationError(f"{type(exc).__name__}: {exc}"))
        return None

    def _spawn_drain(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self._draining = task

    async def _drain(
        self, inbound: Inbound, coro: Coroutine[Any, Any, Any] | None, first: Any
    ) -> None:
        backlog = self._backlog
        try:
            if coro is not None:
                await _finish(Continuation(coro, first))
            while backlog:
                module, handler, payload, ctx = backlog.popleft()
                if isinstance(payload, Claimed):
                    try:
                        payload = await self._events.redeem(payload)
                    except OrganelleError as err:
                        self._events.drop(payload.topic, err)
                        continue
                await _finish(inbound.deliver(module, handler, payload, ctx))
        finally:
            self._backlog = None
            self._draining = None

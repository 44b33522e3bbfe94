"""The local event bus: a bounded queue, one dispatcher task, isolated handlers.

``publish`` appends to a bounded deque and returns; when the deque is full it
waits for room (backpressure: no event is ever dropped). The dispatcher starts
each matching handler by hand in a fresh ``contextvars`` copy; a handler that
finishes without suspending costs no task, one that suspends goes on in its
own task, up to ``max_concurrent`` at once (then the dispatcher waits, the
queue fills, and emitters wait in turn). A failing handler is logged and
counted on its subscription; it never reaches the emitter or other handlers.
An event in an envelope whose data is at an older version of the ``@event``
type a handler declares is upcast in the handler's first step
(``envelope/_upcast.py``).

With middleware, each delivery is an ``"event"`` invocation run through the
kernel's one pipeline (``run_invocation``); without, the handler is started
directly (in C when the extension is built). Listeners that asked for
deliveries are told of each one (delivered, failed, skipped).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from organelle.context import Context, _current
from organelle.envelope import Envelope, EventType, event_type, lift
from organelle.errors import InternalError, OrganelleError
from organelle.kernel._dispatch import CallNext, Continuation, Invocation, run_invocation
from organelle.kernel._listen import EventReport, Listeners
from organelle.module import Subscription
from organelle.module._topicindex import TopicIndex
from organelle.module._topics import matches

if TYPE_CHECKING:
    from organelle.kernel._slots import Slot

__all__ = ["EnvelopeRoute", "EventBus", "Inbox", "SubscriptionStats", "Subscriptions"]

log = logging.getLogger("organelle.events")

_YIELD_EVERY = 256
_MAX_CACHED_TOPICS = 4096


@dataclass(slots=True)
class SubscriptionStats:
    """Counters of one subscription, readable from ``Kernel.subscriptions()``."""

    module: str
    handler: str
    pattern: str
    delivery: str
    priority: int
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    duplicates: int = 0
    last_error: dict[str, Any] | None = field(default=None)


class Inbox(Protocol):
    """Processed event ids per consumer (``kernel/_inbox.py``): an idempotent handler's memory."""

    async def once(
        self, consumer: str, event_id: str, coro: Coroutine[Any, Any, Any]
    ) -> tuple[bool, Any]:
        """Run ``coro`` unless ``consumer`` handled ``event_id``; ``(ran, result)``."""
        ...


class EnvelopeRoute(tuple[Any, ...]):
    """A route with a handler that takes the envelope or is idempotent.

    Not an exact tuple, so the compiled emit path leaves it to Python, which
    builds the envelope once for every handler of the event.
    """

    __slots__ = ()


class _Sub:
    __slots__ = (
        "consumer",
        "contract",
        "envelope",
        "event",
        "fast",
        "filter",
        "fn",
        "idempotent",
        "inbox",
        "order",
        "pattern",
        "stats",
        "validate",
    )

    def __init__(self, module: str, sub: Subscription, fn: Callable[..., Any], order: int) -> None:
        spec = sub.spec
        self.pattern = spec.pattern
        self.fn = fn
        self.contract = sub.contract if (spec.validate or not sub.contract.takes_payload) else None
        self.validate = spec.validate
        self.filter = spec.filter
        self.order = (-spec.priority, order)
        self.stats = SubscriptionStats(module, sub.attr, spec.pattern, spec.delivery, spec.priority)
        self.envelope = sub.contract.wants_envelope  # the handler takes Envelope[T]
        # The @event type the handler declares: data of an older version is upcast to it.
        target = sub.contract.target
        self.event: EventType | None = event_type(target) if isinstance(target, type) else None
        self.idempotent = spec.idempotent
        self.consumer = f"{module}.{sub.attr}"
        self.inbox: Inbox | None = None  # set by the bus while it has one
        # For the C dispatcher: (handler, payload type it takes as is or None for any),
        # or None when the first step needs make_coro (filter, conversion, no payload,
        # an envelope to unwrap or an inbox to ask).
        self.fast: tuple[Callable[..., Any], type | None] | None = None
        contract = self.contract
        if (
            self.filter is None
            and not self.envelope
            and not self.idempotent
            and (contract is None or contract.takes_payload)
        ):
            target = None if contract is None else contract.target
            if target is None or isinstance(target, type):
                self.fast = (fn, target)

    @property
    def needs_envelope(self) -> bool:
        """Whether events must reach this handler in their envelope."""
        return self.envelope or self.idempotent

    def invoke(self, inv: Invocation) -> Coroutine[Any, Any, Any]:
        """The innermost step of the middleware chain."""
        return self.make_coro(inv.payload)

    def make_coro(self, payload: Any) -> Coroutine[Any, Any, Any]:
        env: Envelope[Any] | None = None
        if type(payload) is Envelope:
            env = payload
            payload = env.data
            meta = self.event
            if meta is not None and env.dataversion is not None and env.dataversion != meta.version:
                payload = lift(meta, env)  # an older version's data, upcast
        contract = self.contract
        if contract is None:  # validation off, payload passed as is
            arg = payload
        elif not contract.takes_payload:
            if self.filter is not None and not self.filter(payload):
                raise _Skip
            return self._once(env, self.fn())
        elif type(payload) is contract.target:
            arg = payload
        else:
            arg = contract.convert(payload)
        if self.filter is not None and not self.filter(arg):
            raise _Skip
        if self.envelope:
            if env is None:
                raise InternalError(f"{self.consumer} takes an envelope but got a bare payload")
            arg = env.with_data(arg) if arg is not env.data else env
        return self._once(env, self.fn(arg))

    def _once(
        self, env: Envelope[Any] | None, coro: Coroutine[Any, Any, Any]
    ) -> Coroutine[Any, Any, Any]:
        inbox = self.inbox
        if not self.idempotent or inbox is None or env is None:
            return coro
        return self._idempotent(inbox, env.id, coro)

    async def _idempotent(self, inbox: Inbox, event_id: str, coro: Coroutine[Any, Any, Any]) -> Any:
        """Run the handler unless this consumer already handled ``event_id``; then remember it."""
        ran, result = await inbox.once(self.consumer, event_id, coro)
        if not ran:
            raise _Duplicate
        return result


def _route(subs: list[_Sub]) -> tuple[_Sub, ...]:
    """A cached route: an ``EnvelopeRoute`` when some handler needs the envelope."""
    if any(s.needs_envelope for s in subs):
        return EnvelopeRoute(subs)
    return tuple(subs)


def _unwraps(subs: tuple[_Sub, ...]) -> bool:
    """Whether the C first step may take an envelope for ``subs``.

    It hands the payload as is to a handler whose ``fast`` takes any type
    (``fast[1] is None``); every other handler goes through ``make_coro``,
    which unwraps the envelope as the handler asks.
    """
    for sub in subs:
        fast = sub.fast
        if fast is not None and fast[1] is None:
            return False
    return True


def _is_exact(pattern: str) -> bool:
    """A pattern without wildcards matches one topic: itself."""
    return "*" not in pattern and ">" not in pattern


class _Skip(Exception):  # noqa: N818 - a control-flow signal, not an error
    pass


class _Duplicate(_Skip):
    """An idempotent handler's inbox already holds the event: skipped, counted apart."""


def _count_skip(sub: _Sub, exc: _Skip) -> None:
    if isinstance(exc, _Duplicate):
        sub.stats.duplicates += 1
    else:
        sub.stats.skipped += 1


class EventBus:
    """Local publish/subscribe with backpressure and ``drain()``."""

    def __init__(
        self,
        *,
        max_pending: int = 10_000,
        max_concurrent: int = 1_000,
        listeners: Listeners | None = None,
    ) -> None:
        self.listeners = Listeners() if listeners is None else listeners
        # Whether listeners asked for each delivery (kept in step by the dispatcher).
        self.reporting = False
        # Every subscription in order (a dict: O(1) removal), and two indexes so
        # that routing a topic and adding or removing a module cost the same at
        # 10 modules and at 5,000: exact patterns by topic, wildcards apart.
        self._subs: dict[_Sub, None] = {}
        self._exact: dict[str, list[_Sub]] = {}
        self._wild: TopicIndex[_Sub] = TopicIndex()
        self._by_module: dict[str, list[_Sub]] = {}
        self._order = 0
        self._cache: dict[str, tuple[_Sub, ...]] = {}  # topic -> subs; shared with the C path
        self._handler_cache: dict[str, tuple[_Sub, ...]] = {}  # "module handler topic" -> subs
        self._queue: deque[tuple[tuple[_Sub, ...], Any, Context]] = deque()
        self._max_pending = max_pending
        self._max_concurrent = max_concurrent
        self._space: deque[asyncio.Future[None]] = deque()
        self._idle: list[asyncio.Future[None]] = []
        # The idle dispatcher's waker, in a one-item list shared with the C emit path.
        self._wake: list[asyncio.Future[None] | None] = [None]
        # The C first step of a delivery (organelle._speedups), set by the kernel
        # while deliveries need neither middleware nor listeners.
        self.deliver: (
            Callable[[tuple[_Sub, ...], Any, Context], list[tuple[Any, ...]] | None] | None
        ) = None
        self._slot: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._busy = False
        self.chain: CallNext | None = None
        self.inbox: Inbox | None = None  # where idempotent handlers remember what they handled

    def use_inbox(self, inbox: Inbox | None) -> None:
        """Give idempotent handlers (present and future) their inbox."""
        self.inbox = inbox
        for sub in self._subs:
            sub.inbox = inbox

    # subscriptions -------------------------------------------------------
    def subscribe(self, module: str, sub: Subscription, fn: Callable[..., Any]) -> None:
        """Add one subscription of a module's handler."""
        self._order += 1
        entry = _Sub(module, sub, fn, self._order)
        entry.inbox = self.inbox
        self._subs[entry] = None
        self._by_module.setdefault(module, []).append(entry)
        if _is_exact(entry.pattern):
            self._exact.setdefault(entry.pattern, []).append(entry)
        else:
            self._wild.add(entry.pattern, entry)
        self._forget(entry.pattern)

    def unsubscribe(self, module: str) -> None:
        """Remove every subscription of ``module``."""
        for entry in self._by_module.pop(module, ()):
            del self._subs[entry]
            if _is_exact(entry.pattern):
                same = self._exact[entry.pattern]
                same.remove(entry)
                if not same:
                    del self._exact[entry.pattern]
            else:
                self._wild.remove(entry.pattern, entry)
            self._forget(entry.pattern)

    def _forget(self, pattern: str) -> None:
        """Drop the cached routes a change of ``pattern``'s subscriptions can alter."""
        if _is_exact(pattern):
            self._cache.pop(pattern, None)
        else:
            self._cache.clear()
        self._handler_cache.clear()

    def handler_subs(self, module: str, handler: str, topic: str) -> tuple[_Sub, ...]:
        """The subscriptions of one module's handler that match ``topic`` (cached)."""
        key = f"{module} {handler} {topic}"
        subs = self._handler_cache.get(key)
        if subs is None:
            subs = _route(
                [
                    s
                    for s in self._by_module.get(module, ())
                    if s.stats.handler == handler and matches(s.pattern, topic)
                ]
            )
            if len(self._handler_cache) > _MAX_CACHED_TOPICS:
                self._handler_cache.clear()
            self._handler_cache[key] = subs
        return subs

    def stats(self) -> list[SubscriptionStats]:
        """Counters of every subscription."""
        return [s.stats for s in self._subs]

    def route(self, topic: str) -> tuple[_Sub, ...]:
        """The subscriptions matching ``topic``, in priority order (cached)."""
        subs = self._cache.get(topic)
        if subs is None:
            found = [
                *self._exact.get(topic, ()),
                *self._wild.match(topic),
            ]
            found.sort(key=lambda s: s.order)
            subs = _route(found)
            if len(self._cache) > _MAX_CACHED_TOPICS:  # distinct topics must not leak
                self._cache.clear()
            self._cache[topic] = subs
        return subs

    # publishing ----------------------------------------------------------
    def offer(self, subs: tuple[_Sub, ...], payload: Any, ctx: Context) -> bool:
        """Queue one event if there is room (no await: the common case); else ``False``."""
        queue = self._queue
        if len(queue) >= self._max_pending:
            return False
        queue.append((subs, payload, ctx))
        waker = self._wake[0]
        if waker is not None:
            self._wake[0] = None
            waker.set_result(None)
        return True

    async def publish(self, subs: tuple[_Sub, ...], payload: Any, ctx: Context) -> None:
        """Queue one event for ``subs``; waits while the queue is full."""
        queue = self._queue
        while len(queue) >= self._max_pending:
            fut = asyncio.get_running_loop().create_future()
            self._space.append(fut)
            await fut
        queue.append((subs, payload, ctx))
        waker = self._wake[0]
        if waker is not None:
            self._wake[0] = None
            waker.set_result(None)

    # lifecycle -----------------------------------------------------------
    def start(self) -> None:
        """Start the dispatcher task (idempotent)."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(
                self._run(), name="organelle-event-dispatcher"
            )

    async def drain(self) -> None:
        """Return once every queued event has been handled, also those emitted meanwhile."""
        while self._queue or self._tasks or self._busy:
            fut = asyncio.get_running_loop().create_future()
            self._idle.append(fut)
            await fut

    async def stop(self) -> None:
        """Cancel handlers still running and stop the dispatcher."""
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)
            self._runner = None
        self._wake_idle()

    @property
    def pending(self) -> int:
        """Events queued and handlers still running."""
        return len(self._queue) + len(self._tasks)

    # dispatcher ----------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        queue = self._queue
        while True:
            self._busy = True
            done = 0
            while queue:
                subs, payload, ctx = queue.popleft()
                if self._space:
                    self._wake_space()
                deliver = self.deliver
                if deliver is not None and (type(payload) is not Envelope or _unwraps(subs)):
                    left = deliver(subs, payload, ctx)
                    if left is not None:
                        self._finish_left(loop, left, payload, ctx)
                else:
                    for sub in subs:
                        self._deliver(loop, sub, payload, ctx)
                done += 1
                if len(self._tasks) >= self._max_concurrent:
                    self._slot = loop.create_future()
                    await self._slot
                elif done % _YIELD_EVERY == 0:
                    await asyncio.sleep(0)
            self._busy = False
            if not self._tasks:
                self._wake_idle()
            waker = loop.create_future()
            self._wake[0] = waker
            await waker

    def _deliver(
        self, loop: asyncio.AbstractEventLoop, sub: _Sub, payload: Any, ctx: Context
    ) -> None:
        # Each delivery runs in its own copy of the contextvars, so nothing a
        # handler sets leaks into the dispatcher or its siblings.
        cv = contextvars.copy_context()
        try:
            coro, first = cv.run(self._step, sub, payload, ctx)
        except StopIteration:
            sub.stats.delivered += 1
            if self.reporting:
                self._report(sub, "delivered", payload, ctx)
            return
        except _Skip as skip:
            _count_skip(sub, skip)
            if self.reporting:
                self._report(sub, "skipped", payload, ctx)
            return
        except Exception as exc:
            self._failed(sub, ctx, exc, payload)
            return
        task = loop.create_task(self._finish(sub, coro, first, payload, ctx), context=cv)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _finish_left(
        self,
        loop: asyncio.AbstractEventLoop,
        left: list[tuple[Any, ...]],
        payload: Any,
        ctx: Context,
    ) -> None:
        """What the C first step left, in priority order: suspended handlers, failures, skips."""
        for item in left:
            sub = item[0]
            if len(item) == 2:  # noqa: PLR2004 - (sub, exception)
                exc = item[1]
                if isinstance(exc, _Skip):
                    _count_skip(sub, exc)
                elif isinstance(exc, Exception):
                    self._failed(sub, ctx, exc, payload)
                else:
                    raise exc
            else:
                _, coro, first, cv = item
                task = loop.create_task(self._finish(sub, coro, first, payload, ctx), context=cv)
                self._tasks.add(task)
                task.add_done_callback(self._task_done)

    def _step(self, sub: _Sub, payload: Any, ctx: Context) -> tuple[Coroutine[Any, Any, Any], Any]:
        """First step of a handler; raises StopIteration if it finished without suspending."""
        chain = self.chain
        if chain is None:
            # The inline path: in a fresh contextvars copy, so there is nothing to reset.
            _current.set(ctx)
            coro = sub.make_coro(payload)
        else:
            inv = Invocation(
                "event", ctx.topic or "", sub.stats.module, None, payload, ctx, sub.invoke
            )
            coro = run_invocation(chain, inv)
        return coro, coro.send(None)

    async def _finish(
        self, sub: _Sub, coro: Coroutine[Any, Any, Any], first: Any, payload: Any, ctx: Context
    ) -> None:
        try:
            await Continuation(coro, first)
        except _Skip as skip:
            _count_skip(sub, skip)
            if self.reporting:
                self._report(sub, "skipped", payload, ctx)
        except Exception as exc:
            self._failed(sub, ctx, exc, payload)
        else:
            sub.stats.delivered += 1
            if self.reporting:
                self._report(sub, "delivered", payload, ctx)

    def _report(
        self,
        sub: _Sub,
        stage: Literal["delivered", "failed", "skipped"],
        payload: Any,
        ctx: Context,
        error: str | None = None,
    ) -> None:
        stats = sub.stats
        self.listeners.event(
            EventReport(
                stage=stage,
                topic=ctx.topic or "",
                payload=payload,
                module=stats.module,
                handler=stats.handler,
                error=error,
            ),
            self.listeners.deliveries,
        )

    def _failed(self, sub: _Sub, ctx: Context, exc: Exception, payload: Any) -> None:
        stats = sub.stats
        stats.failed += 1
        err = exc if isinstance(exc, OrganelleError) else InternalError.wrap(exc)
        stats.last_error = {**err.to_wire(), "topic": ctx.topic, "request_id": ctx.request_id}
        log.error(
            "event handler %s.%s failed on %r: %s",
            stats.module,
            stats.handler,
            ctx.topic,
            err,
            exc_info=exc,
        )
        if self.reporting:
            self._report(sub, "failed", payload, ctx, err.code)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        slot = self._slot
        if slot is not None and len(self._tasks) < self._max_concurrent:
            self._slot = None
            if not slot.done():
                slot.set_result(None)
        if not self._tasks and not self._queue and not self._busy:
            self._wake_idle()

    def _wake_space(self) -> None:
        space = self._space
        while space and len(self._queue) < self._max_pending:
            fut = space.popleft()
            if not fut.done():
                fut.set_result(None)

    def _wake_idle(self) -> None:
        idle, self._idle = self._idle, []
        for fut in idle:
            if not fut.done():
                fut.set_result(None)


class Subscriptions:
    """Binder: a slot's ``@on`` handlers subscribed on the bus.

    Detached before the module's ``on_stop``, so a stopping module gets no new
    events; attached before its ``on_start``, so it misses none once started.
    """

    kind = "events"
    stage = "listen"

    def __init__(self, bus: EventBus) -> None:
        self._bus = bus

    async def attach(self, slot: Slot) -> None:
        self._bus.unsubscribe(slot.name)
        for sub in slot.spec.subscriptions:
            self._bus.subscribe(slot.name, sub, getattr(slot.instance, sub.attr))

    async def detach(self, slot: Slot) -> None:
        self._bus.unsubscribe(slot.name)

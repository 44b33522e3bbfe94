"""Listeners: how observers (metrics, tracing, the dashboard, tests) see what a kernel does.

Observation is never code inside dispatch. A listener is an object with one
method per kind of happening; the kernel calls it after the fact with a small
frozen report, and a listener that raises is logged, never felt by the work
it watched. Subclass ``BaseListener`` and override what you need: the kernel
looks at which methods a listener overrides and pays only for those::

    class SlowCalls(BaseListener):
        def on_call(self, call: CallReport) -> None:
            if call.duration_s > 0.5:
                log.warning("%s took %.3fs", call.target, call.duration_s)

    kernel.listen(SlowCalls())

What each kind costs, because some happenings are on the hot paths:

* ``on_call`` sees every call served here and every call sent to another
  node, timed; a kernel with such a listener takes its local calls off the
  inline (and compiled) path. For counts and latency histograms set
  ``call_buckets`` instead: the kernel then keeps lean per-method counters
  (``kernel.call_stats``: one increment for a call that does not suspend)
  and ``on_call`` need not be overridden;
* ``on_event`` sees every emit (also from the compiled path); it sees each
  delivery to a handler (delivered / failed / skipped) only when the
  listener sets ``deliveries = True``, which takes deliveries off the compiled
  path;
* the others (jobs, stream records, lifecycle, connection, store operations)
  are far from the hot paths and are reported to whoever overrides them.

Reports are frozen msgspec Structs rather than the house frozen dataclasses:
one is built per call or emit while a listener watches, and a frozen dataclass
costs about ten times as much to build (see ``storage/base.py``'s ``Entry``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Literal, Protocol

import msgspec

__all__ = [
    "BaseListener",
    "CallReport",
    "ConnectionReport",
    "EventReport",
    "JobReport",
    "LifecycleReport",
    "Listener",
    "Listeners",
    "RecordReport",
    "StoreReport",
]

log = logging.getLogger("organelle.kernel")


class CallReport(msgspec.Struct, frozen=True, kw_only=True):
    """An RPC call that finished, served here or sent to another node.

    Attributes:
        target: ``"module.method"``.
        remote: ``True`` for a call this node sent to another node.
        duration_s: from the call's start to its result or error.
        error: the error's stable code, ``None`` on success.
        suspended: whether the handler (or the wire) made the caller wait;
            a handler that finishes in its first step took about a microsecond.
    """

    target: str
    remote: bool = False
    duration_s: float
    error: str | None = None
    suspended: bool


class EventReport(msgspec.Struct, frozen=True, kw_only=True):
    """An event emitted here, or (with ``deliveries``) delivered to one local handler.

    Attributes:
        stage: ``"emitted"`` (once per emit, before any handler runs),
            ``"delivered"``, ``"failed"`` or ``"skipped"`` (by a handler's filter).
        topic: the event's topic.
        payload: what was emitted (not copied: do not change it).
        module: the handler's module (deliveries only).
        handler: the handler's method name (deliveries only).
        error: the error's stable code when a handler failed.
    """

    stage: Literal["emitted", "delivered", "failed", "skipped"]
    topic: str
    payload: Any = None
    module: str | None = None
    handler: str | None = None
    error: str | None = None


class JobReport(msgspec.Struct, frozen=True, kw_only=True):
    """A durable job enqueued here, or run by this node's worker.

    Attributes:
        stage: ``"enqueued"`` (its params passed; reported just before it is
            stored), ``"succeeded"``, ``"failed"`` (an attempt raised; a retry or
            dead letter follows), ``"retried"`` or ``"dead"``.
        job: ``"module.function"`` (never an id: safe as a metric label).
        duration_s: the attempt's run time (``succeeded`` and ``failed``).
        meta: at ``enqueued``, the headers the job will carry to its run: a
            listener may add to them (tracing stores its ``PRODUCER`` span's
            ``traceparent`` there, so the run becomes that span's child).
    """

    stage: Literal["enqueued", "succeeded", "failed", "retried", "dead"]
    job: str
    duration_s: float | None = None
    meta: dict[str, str] = msgspec.field(default_factory=dict)


class RecordReport(msgspec.Struct, frozen=True, kw_only=True):
    """A durable stream record handled by one of this node's ``@consume`` members.

    Attributes:
        outcome: ``"done"`` (committed), ``"failed"`` (an attempt raised; it
            comes again), ``"dead"`` (out of attempts) or ``"lost"`` (another
            member took the partition over and runs it again).
        stream, group: where the record came from.
        module, handler: the consuming handler.
        partition, offset, attempt: which record, which try.
        duration_s: the handler's run time.
        error: ``"<code or type>: <message>"`` when it failed.
    """

    outcome: Literal["done", "failed", "dead", "lost"]
    stream: str
    group: str
    module: str
    handler: str
    partition: int
    offset: int
    attempt: int
    duration_s: float
    error: str | None = None


class LifecycleReport(msgspec.Struct, frozen=True, kw_only=True):
    """A module changed state, or a config reload was applied or rejected.

    Attributes:
        topic: the kernel event announcing it (``kernel.module.active``,
            ``kernel.config.reloaded``...), also published to local subscribers.
        module: the module whose state changed (``None`` for a config reload).
        state: its new state (a ``ModuleState`` value), ``None`` for a reload.
        payload: the kernel event's payload (version, error, config diff...).
    """

    topic: str
    module: str | None = None
    state: str | None = None
    payload: Mapping[str, Any] = msgspec.field(default_factory=dict)


class ConnectionReport(msgspec.Struct, frozen=True, kw_only=True):
    """The transport lost its connection to the broker, or got it back."""

    state: Literal["disconnected", "reconnected"]


class StoreReport(msgspec.Struct, frozen=True, kw_only=True):
    """One operation on the kernel's Store (``get``, ``put``, ``scan``...).

    Attributes:
        op: the Store method's name.
        duration_s: how long it took.
        error: the exception's type name when it raised.
    """

    op: str
    duration_s: float
    error: str | None = None


class Listener(Protocol):
    """What ``Kernel.listen`` takes: one method per kind of happening (see the module doc).

    Attributes:
        call_buckets: histogram bounds (seconds) for the kernel's lean
            per-method call counters, or ``None``; the first listener that asks
            chooses the bounds, and the counters live while one asks.
        deliveries: also report each event delivery to ``on_event``.
    """

    @property
    def call_buckets(self) -> tuple[float, ...] | None:
        """Bounds for the lean call counters, or ``None``."""
        ...

    @property
    def deliveries(self) -> bool:
        """Whether ``on_event`` also gets each delivery."""
        ...

    def on_call(self, call: CallReport, /) -> None:
        """An RPC call served here or sent to another node finished."""
        ...

    def on_event(self, event: EventReport, /) -> None:
        """An event was emitted here (or delivered, with ``deliveries``)."""
        ...

    def on_job(self, job: JobReport, /) -> None:
        """A job was enqueued here, or this node's worker ran one."""
        ...

    def on_record(self, record: RecordReport, /) -> None:
        """A ``@consume`` member of this node handled a stream record."""
        ...

    def on_lifecycle(self, change: LifecycleReport, /) -> None:
        """A module changed state or a config reload was applied or rejected."""
        ...

    def on_connection(self, change: ConnectionReport, /) -> None:
        """The transport's connection went down or came back."""
        ...

    def on_store(self, op: StoreReport, /) -> None:
        """An operation on the kernel's Store finished."""
        ...


class BaseListener:
    """A listener that ignores everything: subclass it and override what you watch.

    The kernel reports to a method only when a subclass overrides it, so an
    unused kind costs nothing.
    """

    call_buckets: tuple[float, ...] | None = None
    deliveries: bool = False

    def on_call(self, call: CallReport, /) -> None:
        """An RPC call served here or sent to another node finished."""

    def on_event(self, event: EventReport, /) -> None:
        """An event was emitted here (or delivered, with ``deliveries``)."""

    def on_job(self, job: JobReport, /) -> None:
        """A job was enqueued here, or this node's worker ran one."""

    def on_record(self, record: RecordReport, /) -> None:
        """A ``@consume`` member of this node handled a stream record."""

    def on_lifecycle(self, change: LifecycleReport, /) -> None:
        """A module changed state or a config reload was applied or rejected."""

    def on_connection(self, change: ConnectionReport, /) -> None:
        """The transport's connection went down or came back."""

    def on_store(self, op: StoreReport, /) -> None:
        """An operation on the kernel's Store finished."""


_KINDS = ("on_call", "on_event", "on_job", "on_record", "on_lifecycle", "on_connection", "on_store")


def _wants(listener: Listener, method: str) -> bool:
    """Whether ``listener`` overrides ``method`` (a listener not built on the base wants all)."""
    found = getattr(type(listener), method, None)
    return found is not None and found is not getattr(BaseListener, method)


class Listeners:
    """The listeners of one kernel, sorted by what they watch, and the one way to tell them.

    The parts read the per-kind tuples to skip all work when nobody watches.
    ``emits`` is a list changed in place: the compiled emit path holds it and
    calls back (``Dispatcher.emitted``) only while it is not empty.
    """

    def __init__(self) -> None:
        self.all: list[Listener] = []
        self.calls: tuple[Listener, ...] = ()
        self.emits: list[Listener] = []
        self.deliveries: tuple[Listener, ...] = ()
        self.jobs: tuple[Listener, ...] = ()
        self.records: tuple[Listener, ...] = ()
        self.lifecycle: tuple[Listener, ...] = ()
        self.connection: tuple[Listener, ...] = ()
        self.store: tuple[Listener, ...] = ()
        self.call_buckets: tuple[float, ...] | None = None

    def add(self, listener: Listener) -> None:
        """Register ``listener`` (a second ``add`` of the same one is ignored)."""
        if not any(known is listener for known in self.all):
            self.all.append(listener)
            self._sort()

    def remove(self, listener: Listener) -> None:
        """Forget ``listener`` (unknown ones are ignored)."""
        self.all = [known for known in self.all if known is not listener]
        self._sort()

    def _sort(self) -> None:
        everyone = self.all
        by = {kind: tuple(x for x in everyone if _wants(x, kind)) for kind in _KINDS}
        self.calls = by["on_call"]
        self.emits[:] = by["on_event"]
        self.deliveries = tuple(x for x in by["on_event"] if getattr(x, "deliveries", False))
        self.jobs = by["on_job"]
        self.records = by["on_record"]
        self.lifecycle = by["on_lifecycle"]
        self.connection = by["on_connection"]
        self.store = by["on_store"]
        asked = [b for x in everyone if (b := getattr(x, "call_buckets", None))]
        self.call_buckets = tuple(asked[0]) if asked else None

    # telling them ---------------------------------------------------------------
    def call(self, report: CallReport) -> None:
        """Report a finished call to the ``on_call`` listeners."""
        for listener in self.calls:
            try:
                listener.on_call(report)
            except Exception:
                log.exception("listener %r failed on a call to %s", listener, report.target)

    def event(self, report: EventReport, to: tuple[Listener, ...] | list[Listener]) -> None:
        """Report an emit (``to=emits``) or a delivery (``to=deliveries``)."""
        for listener in to:
            try:
                listener.on_event(report)
            except Exception:
                log.exception("listener %r failed on event %r", listener, report.topic)

    def job(self, report: JobReport) -> None:
        """Report a job's enqueue or outcome."""
        for listener in self.jobs:
            try:
                listener.on_job(report)
            except Exception:
                log.exception("listener %r failed on job %s", listener, report.job)

    def record(self, report: RecordReport) -> None:
        """Report a stream record's outcome."""
        for listener in self.records:
            try:
                listener.on_record(report)
            except Exception:
                log.exception("listener %r failed on a record of %s", listener, report.stream)

    def changed(self, report: LifecycleReport) -> None:
        """Report a module state change or a config reload."""
        for listener in self.lifecycle:
            try:
                listener.on_lifecycle(report)
            except Exception:
                log.exception("listener %r failed on %s", listener, report.topic)

    def connected(self, report: ConnectionReport) -> None:
        """Report the transport's connection going down or coming back."""
        for listener in self.connection:
            try:
                listener.on_connection(report)
            except Exception:
                log.exception("listener %r failed on the connection %s", listener, report.state)

    def stored(self, report: StoreReport) -> None:
        """Report a finished Store operation."""
        for listener in self.store:
            try:
                listener.on_store(report)
            except Exception:
                log.exception("listener %r failed on store op %s", listener, report.op)

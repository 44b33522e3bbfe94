"""OpenTelemetry spans around calls, events, jobs and lifecycle hooks; W3C trace context in meta.

The trace context travels in ``Context.meta["traceparent"]`` (W3C format), the
one place that already flows to nested calls and events and, through a
transport, into message headers. ``Tracing`` is two things on one kernel:

* middleware on the one invocation pipeline: a span per RPC call served
  (``SERVER``), per call sent to another node (``CLIENT``: the remote
  ``SERVER`` span is its child), per HTTP request (``SERVER``), and per event
  delivery, job run or stream record (``CONSUMER``), whose parent is the
  ``traceparent`` it finds; it writes its own span into the meta of the
  invocation's context, so everything that work causes is its child;
* a listener: a ``PRODUCER`` span per emit and per job enqueue (whose
  ``traceparent`` the job carries to its run), and spans for each module's
  ``on_start`` / ``on_stop`` from the lifecycle reports.

OpenTelemetry is imported only here: with tracing off nothing is installed and
nothing costs anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    Tracer,
)

from organelle.context import Context, current_context
from organelle.kernel import BaseListener
from organelle.kernel._dispatch import CallNext, Invocation

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel import EventReport, JobReport, Kernel, LifecycleReport

__all__ = ["TRACEPARENT", "Tracing", "format_traceparent", "make_tracer", "parse_traceparent"]

TRACEPARENT = "traceparent"
_VERSION = "00"


def format_traceparent(span_context: SpanContext) -> str:
    """The W3C ``traceparent`` header of a span."""
    flags = int(span_context.trace_flags)
    return f"{_VERSION}-{span_context.trace_id:032x}-{span_context.span_id:016x}-{flags:02x}"


def parse_traceparent(value: object) -> SpanContext | None:
    """A remote span context from a ``traceparent`` value; ``None`` when absent or malformed."""
    if not isinstance(value, str) or len(value) != 55:  # noqa: PLR2004 - fixed W3C length
        return None
    parts = value.split("-")
    if len(parts) != 4:  # noqa: PLR2004 - version, trace id, span id, flags
        return None
    version, trace_id, span_id, flags = parts
    try:
        tid, sid, fl = int(trace_id, 16), int(span_id, 16), int(flags, 16)
    except ValueError:
        return None
    if version != _VERSION or not tid or not sid:
        return None
    return SpanContext(tid, sid, is_remote=True, trace_flags=TraceFlags(fl))


def _parent(ctx: Context | None) -> otel_context.Context | None:
    """The parent of new work: the traceparent in meta, else the ambient OpenTelemetry span."""
    remote = parse_traceparent(ctx.meta.get(TRACEPARENT)) if ctx is not None else None
    if remote is None:
        return None  # the current OpenTelemetry context (e.g. an HTTP server span)
    return trace.set_span_in_context(NonRecordingSpan(remote))


def make_tracer(settings: KernelSettings) -> Tracer:
    """The tracer for ``[kernel] tracing``: OTLP/HTTP to an endpoint, else the global provider."""
    if not settings.tracing_endpoint:
        return trace.get_tracer("organelle")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.node or "organelle"})
    )
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=settings.tracing_endpoint))
    )
    return provider.get_tracer("organelle")


def _span_of(inv: Invocation) -> tuple[str, SpanKind, dict[str, str]]:
    """The name, kind and attributes of an invocation's span."""
    if inv.kind == "rpc":
        attrs = {
            "rpc.system": "organelle",
            "rpc.method": inv.target,
            "organelle.module": inv.module,
        }
        return inv.target, SpanKind.CLIENT if inv.remote else SpanKind.SERVER, attrs
    if inv.kind == "http":
        request = inv.request
        method = str(getattr(request, "method", "HTTP"))
        spec = getattr(request, "route", None)
        where = str(getattr(spec, "path", None) or getattr(request, "path", inv.target))
        attrs = {
            "http.request.method": method,
            "http.route": where,
            "rpc.method": inv.target,
            "organelle.module": inv.module,
        }
        return f"{method} {where}", SpanKind.SERVER, attrs
    attrs = {
        "messaging.system": "organelle",
        "messaging.destination.name": inv.target,
        "organelle.module": inv.module,
    }
    return f"{inv.target} process", SpanKind.CONSUMER, attrs


class Tracing(BaseListener):
    """Tracing for one kernel: pipeline middleware plus a listener (publish, enqueue, lifecycle).

    Example::

        Tracing(kernel, tracer).install()      # before kernel.start()
    """

    def __init__(self, kernel: Kernel, tracer: Tracer | None = None) -> None:
        self.kernel = kernel
        self.tracer = tracer or trace.get_tracer("organelle")
        self._hooks: dict[str, Span] = {}

    def install(self) -> None:
        """Add the middleware (every invocation) and the listener (emits, enqueues, lifecycle)."""
        self.kernel.use(self)
        self.kernel.listen(self)

    # the listener ----------------------------------------------------------------
    def on_job(self, job: JobReport, /) -> None:
        """A ``PRODUCER`` span per enqueue, stored in the job's meta: the run becomes its child."""
        if job.stage != "enqueued":
            return
        remote = parse_traceparent(job.meta.get(TRACEPARENT))
        span = self.tracer.start_span(
            f"{job.job} enqueue",
            context=trace.set_span_in_context(NonRecordingSpan(remote)) if remote else None,
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "organelle", "messaging.destination.name": job.job},
        )
        span.end()
        job.meta[TRACEPARENT] = format_traceparent(span.get_span_context())

    def on_event(self, event: EventReport, /) -> None:
        """A ``PRODUCER`` span per emit, child of the emitting work."""
        self.published(event.topic)

    def on_lifecycle(self, change: LifecycleReport, /) -> None:
        """Spans around modules' ``on_start`` / ``on_stop``."""
        if change.module is not None:
            self.lifecycle(change.topic, change.payload)

    # the middleware --------------------------------------------------------------
    def __call__(self, inv: Invocation, call_next: CallNext, /) -> Awaitable[Any]:
        """Run the rest of the chain inside a span that is the parent of all it causes."""
        return self._traced(inv, call_next)

    async def _traced(self, inv: Invocation, call_next: CallNext) -> Any:
        ctx: Context = inv.context
        name, kind, attributes = _span_of(inv)
        span = self.tracer.start_span(name, context=_parent(ctx), kind=kind, attributes=attributes)
        ctx.meta = {**ctx.meta, TRACEPARENT: format_traceparent(span.get_span_context())}
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            return await call_next(inv)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            otel_context.detach(token)
            span.end()

    def published(self, topic: str) -> None:
        """A ``PRODUCER`` span for an emit, child of the emitting work."""
        span = self.tracer.start_span(
            f"{topic} publish",
            context=_parent(current_context()),
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "organelle", "messaging.destination.name": topic},
        )
        span.end()

    def lifecycle(self, topic: str, payload: Mapping[str, Any]) -> None:
        """Open a span when a module starts or stops; close it when that ends."""
        module = str(payload.get("module", ""))
        phase = topic.rsplit(".", 1)[-1]
        if phase in ("starting", "stopping"):
            hook = "on_start" if phase == "starting" else "on_stop"
            self._hooks[module] = self.tracer.start_span(
                f"{module} {hook}", attributes={"organelle.module": module, "organelle.hook": hook}
            )
            return
        span = self._hooks.pop(module, None)
        if span is not None:
            if phase == "failed":
                span.set_status(Status(StatusCode.ERROR, str(payload.get("error", ""))))
            span.end()

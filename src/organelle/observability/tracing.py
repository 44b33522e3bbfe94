"""OpenTelemetry spans around calls, events and lifecycle hooks; W3C trace context in meta.

The trace context travels in ``Context.meta["traceparent"]`` (W3C format), the
one place that already flows to nested calls and events and, through a
transport, into message headers. The middleware opens a span per RPC call
(``SERVER``) and per event delivery (``CONSUMER``) whose parent is the
``traceparent`` it finds, and writes its own span into the meta of the
context being served, so everything that work causes is its child. Emitting
records a ``PRODUCER`` span; lifecycle hooks get spans from the kernel's state
events. OpenTelemetry is imported only here: with tracing off nothing is
installed and nothing costs anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
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
from organelle.kernel._dispatch import CallNext, Invocation

if TYPE_CHECKING:
    from organelle.config.settings import KernelSettings
    from organelle.kernel import Kernel

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


def _attributes(inv: Invocation, *, rpc: bool) -> dict[str, str]:
    if rpc:
        return {"rpc.system": "organelle", "rpc.method": inv.target, "organelle.module": inv.module}
    return {
        "messaging.system": "organelle",
        "messaging.destination.name": inv.target,
        "organelle.module": inv.module,
    }


class Tracing:
    """Tracing for one kernel: dispatch middleware, publish and lifecycle spans.

    Example::

        Tracing(kernel, tracer).install()      # before kernel.start()
    """

    def __init__(self, kernel: Kernel, tracer: Tracer | None = None) -> None:
        self.kernel = kernel
        self.tracer = tracer or trace.get_tracer("organelle")
        self._hooks: dict[str, Span] = {}

    def install(self) -> None:
        """Add the middleware, client spans on remote calls, publish and lifecycle spans."""
        self.kernel.use(self)
        self.kernel.wrap_remote(self._client)
        self.kernel.on_job_enqueue(self._enqueued)
        self.kernel.tap(">", _SpanTap(self))

    def _enqueued(self, job: str, parent: str | None) -> str | None:
        """A ``PRODUCER`` span for a job enqueue; the job's run becomes its child."""
        remote = parse_traceparent(parent)
        span = self.tracer.start_span(
            f"{job} enqueue",
            context=trace.set_span_in_context(NonRecordingSpan(remote)) if remote else None,
            kind=SpanKind.PRODUCER,
            attributes={"messaging.system": "organelle", "messaging.destination.name": job},
        )
        span.end()
        return format_traceparent(span.get_span_context())

    async def _client(
        self,
        target: str,
        params: dict[str, Any],
        ctx: Context,
        send: Callable[[str, dict[str, Any], Context], Awaitable[Any]],
    ) -> Any:
        """A ``CLIENT`` span around a remote call; the remote ``SERVER`` span is its child."""
        span = self.tracer.start_span(
            target,
            context=_parent(ctx),
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "organelle", "rpc.method": target},
        )
        ctx.meta = {**ctx.meta, TRACEPARENT: format_traceparent(span.get_span_context())}
        try:
            return await send(target, params, ctx)
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise
        finally:
            span.end()

    def __call__(self, inv: Invocation, call_next: CallNext, /) -> Awaitable[Any]:
        """Run the rest of the chain inside a span that is the parent of all it causes."""
        return self._traced(inv, call_next)

    async def _traced(self, inv: Invocation, call_next: CallNext) -> Any:
        ctx: Context = inv.context
        rpc = inv.kind == "rpc"
        span = self.tracer.start_span(
            inv.target if rpc else f"{inv.target} process",
            context=_parent(ctx),
            kind=SpanKind.SERVER if rpc else SpanKind.CONSUMER,
            attributes=_attributes(inv, rpc=rpc),
        )
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

    def lifecycle(self, topic: str, payload: Any) -> None:
        """Open a span when a module starts or stops; close it when that ends."""
        module = payload.get("module", "") if isinstance(payload, dict) else ""
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


class _SpanTap(list[tuple[str, Any]]):
    """A kernel tap that turns emits and module state events into spans."""

    def __init__(self, tracing: Tracing) -> None:
        super().__init__()
        self.tracing = tracing

    def append(self, item: tuple[str, Any]) -> None:
        topic, payload = item
        if topic.startswith("kernel.module."):
            self.tracing.lifecycle(topic, payload)
        elif not topic.startswith("kernel."):
            self.tracing.published(topic)

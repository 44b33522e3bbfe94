"""Jobs through the kernel: @job/@cron on modules, enqueue with validation, worker, dead letters."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from organelle import ConfigError, DefinitionError, Kernel, Module, ValidationError, cron, job, rpc
from organelle.jobs import Retry
from organelle.module import describe
from organelle.observability.metrics import Metrics
from organelle.observability.tracing import Tracing


class Mailer(Module):
    name = "mailer"
    sent: ClassVar[list[tuple[str, int]]] = []
    flaky_runs: ClassVar[int] = 0
    ticks: ClassVar[int] = 0

    @rpc
    async def welcome(self, to: str) -> str:
        return await self.enqueue("mailer.send", to=to, copies=2, idempotency_key=f"welcome:{to}")

    @job(max_attempts=3, backoff_s=0.01, backoff_max_s=0.02)
    async def send(self, to: str, copies: int = 1) -> str:
        self.sent.append((to, copies))
        return f"sent to {to}"

    @job(max_attempts=2, backoff_s=0.01, backoff_max_s=0.01)
    async def always_fails(self) -> None:
        raise RuntimeError("smtp down")

    @job(max_attempts=5)
    async def flaky(self) -> str:
        type(self).flaky_runs += 1
        if self.flaky_runs < 3:
            raise Retry(delay_s=0.01, reason="not yet")
        return "finally"

    @cron("*/5 * * * *")
    async def digest(self) -> None:
        type(self).ticks += 1


@pytest.fixture
def config(tmp_path: Path) -> dict[str, Any]:
    Mailer.sent.clear()
    Mailer.flaky_runs = 0
    Mailer.ticks = 0
    return {"kernel": {"jobs": f"sqlite:///{tmp_path / 'jobs.db'}"}}


async def test_enqueue_runs_and_records_result(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        job_id = await k.call("mailer.welcome", to="ann@example.com")
        again = await k.call("mailer.welcome", to="ann@example.com")
        assert again == job_id  # idempotency key
        await k.drain_jobs()
        record = await k.jobs.get(job_id)
        assert record.state == "succeeded"
        assert record.result == "sent to ann@example.com"
    assert Mailer.sent == [("ann@example.com", 2)]


async def test_bad_params_refused_at_enqueue(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        with pytest.raises(ValidationError) as info:
            await k.enqueue("mailer.send", to=3, copies="many", cc="x")
        assert {e["field"] for e in info.value.errors} == {"to", "copies", "cc"}


async def test_retry_signal_and_dead_letters(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        flaky = await k.enqueue("mailer.flaky")
        dead = await k.enqueue("mailer.always_fails")
        await k.drain_jobs()
        assert (await k.jobs.get(flaky)).result == "finally"
        record = await k.jobs.get(dead)
        assert record.state == "dead"
        assert record.attempts == 2
        assert "smtp down" in record.errors[-1].message
        assert [r.id for r in await k.jobs.dead_letters.list()] == [dead]


async def test_cron_tick_enqueues_once_per_tick(config: dict[str, Any]) -> None:
    async with Kernel([Mailer], config) as k:
        scheduler = k._jobs.scheduler
        assert scheduler is not None
        scheduler.now = lambda: 1_700_000_100.0  # 5 minutes after a */5 tick boundary
        first = await scheduler.tick()
        again = await scheduler.tick()
        assert len(first) == 1
        assert again == []
        await k.drain_jobs()
    assert Mailer.ticks == 1


async def test_no_queue_without_jobs() -> None:
    class Plain(Module):
        name = "plain"

    async with Kernel([Plain]) as k:
        with pytest.raises(ConfigError, match="no job queue"):
            await k.enqueue("plain.nothing")


def test_job_params_must_not_shadow_enqueue_options() -> None:
    class Bad(Module):
        name = "bad"

        @job
        async def run(self, priority: int) -> None:
            pass

    with pytest.raises(DefinitionError, match="named like enqueue options"):
        describe(Bad)


def job_metrics(metrics: Metrics) -> dict[tuple[str, str], float]:
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            if sample.name == "organelle_jobs_total":
                out[sample.labels["job"], sample.labels["event"]] = sample.value
            if sample.name == "organelle_job_queue_depth":
                out[sample.labels["queue"], "depth"] = sample.value
    return out


async def test_metrics_count_job_outcomes_and_queue_depth(config: dict[str, Any]) -> None:
    kernel = Kernel([Mailer], config)
    metrics = Metrics(kernel)
    metrics.install()
    async with kernel:
        await kernel.enqueue("mailer.send", to="a@b.c")
        await kernel.enqueue("mailer.always_fails")
        await kernel.enqueue("mailer.flaky")
        await kernel.jobs.enqueue("mailer.send", {"to": "later@b.c"}, delay_s=60)
        await kernel.drain_jobs()
        assert kernel._jobs.worker is not None
        await kernel._jobs.worker.stop()  # freeze the queue: one job due, unrun
        await kernel.enqueue("mailer.send", to="waiting@b.c")
        await metrics.refresh()
        got = job_metrics(metrics)
    assert got[("mailer.send", "enqueued")] == 3
    assert got[("mailer.send", "succeeded")] == 1
    assert got[("mailer.always_fails", "failed")] == 2
    assert got[("mailer.always_fails", "retried")] == 1
    assert got[("mailer.always_fails", "dead")] == 1
    assert got[("mailer.flaky", "retried")] == 2  # Retry is a retry, not a failure
    assert ("mailer.flaky", "failed") not in got
    assert got[("mailer.flaky", "succeeded")] == 1
    assert got[("mailer.send", "depth")] == 1  # due and waiting; the delayed one is not
    assert all(len(labels) == 2 for labels in got)  # job name and event only: no ids


class Traced(Module):
    name = "traced"

    @rpc
    async def start(self) -> str:
        return await self.enqueue("traced.work")

    @rpc
    async def inner(self) -> None:
        pass

    @job
    async def work(self) -> None:
        await self.call("traced.inner")


async def test_job_span_is_a_child_of_the_enqueuing_span(config: dict[str, Any]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    kernel = Kernel([Traced], config)
    Tracing(kernel, provider.get_tracer("test")).install()
    async with kernel:
        job_id = await kernel.call("traced.start")
        await kernel.drain_jobs()
        assert (await kernel.jobs.get(job_id)).meta["traceparent"].startswith("00-")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    start, run, inner = spans["traced.start"], spans["traced.work process"], spans["traced.inner"]
    enqueue = spans["traced.work enqueue"]
    assert enqueue.kind == SpanKind.PRODUCER
    assert run.kind == SpanKind.CONSUMER
    assert start.context is not None
    assert enqueue.parent is not None
    assert enqueue.parent.span_id == start.context.span_id  # the enqueue is part of the call
    assert enqueue.context is not None
    assert run.parent is not None
    assert run.parent.span_id == enqueue.context.span_id  # the run follows from the enqueue
    assert run.context is not None
    assert run.context.trace_id == start.context.trace_id
    assert inner.parent is not None
    assert inner.parent.span_id == run.context.span_id  # work the job does is its child

"""Envelopes on one node: typed emit, ``Envelope[T]`` handlers and the dedup inbox."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from organelle import (
    DefinitionError,
    Envelope,
    Kernel,
    Module,
    ValidationError,
    consume,
    event,
    on,
)
from organelle.kernel._inbox import inbox_key


@event("kt.paid", version=1, key=("invoice",))
class Paid(msgspec.Struct):
    invoice: str
    cents: int


@event("kt.pinged")
class Pinged(msgspec.Struct):
    n: int


class Books(Module):
    name = "books"

    def __init__(self) -> None:
        self.envelopes: list[Envelope[Paid]] = []
        self.plain: list[Any] = []
        self.applied: list[str] = []
        self.pings: list[Envelope[Any]] = []

    @on(Paid, priority=5)
    async def whole(self, env: Envelope[Paid]) -> None:
        self.envelopes.append(env)

    @on("kt.paid")
    async def data_only(self, paid: Paid) -> None:
        self.plain.append(paid)

    @on("kt.paid", idempotent=True)
    async def apply(self, paid: Paid) -> None:
        self.applied.append(paid.invoice)

    @on("kt.pinged")
    async def ping(self, env: Envelope) -> None:  # type: ignore[type-arg]
        self.pings.append(env)

    async def pay(self, invoice: str) -> None:
        await self.emit(Paid(invoice=invoice, cents=100))


def config(**kernel: Any) -> dict[str, Any]:
    return {"kernel": {"storage": "memory://", "app": "books-app", **kernel}}


@pytest.fixture(params=[True, False], ids=["compiled", "pure"])
def compiled(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    monkeypatch.setattr(Kernel, "_compiled_path", request.param)
    return bool(request.param)


async def test_one_envelope_per_event_shared_by_its_handlers(compiled: bool) -> None:
    async with Kernel([Books], config()) as kernel:
        books: Books = kernel.module("books")  # type: ignore[assignment]
        await books.pay("i-1")
        await books.pay("i-1")  # a retry: same id, applied once
        await kernel.emit("kt.paid", {"invoice": "i-2", "cents": "7"} | {"cents": 7})
        await kernel.emit(Pinged(n=1), module="books")
        await kernel.emit("kt.pinged", {"n": 2})
        await kernel.drain()
        assert [type(p) for p in books.plain] == [Paid, Paid, Paid]
        assert [e.data.invoice for e in books.envelopes] == ["i-1", "i-1", "i-2"]
        first, again, other = books.envelopes
        assert first.id == again.id != other.id
        assert first.source == other.source == f"/organelle/books-app/{kernel.transport.node}"
        assert other.dataversion is None  # a dict on a topic: no declared type
        assert books.applied == ["i-1", "i-2"]
        stats = {s.handler: s for s in kernel.subscriptions()}
        assert (stats["apply"].delivered, stats["apply"].duplicates, stats["apply"].skipped) == (
            2,
            1,
            0,
        )
        assert [p.data for p in books.pings] == [Pinged(n=1), {"n": 2}]
        assert books.pings[0].type == "kt.pinged"
        assert books.pings[0].source.endswith("/books")  # the emitting module, when named
        store = kernel.store
        assert await store.get(inbox_key("books.apply", first.id)) is not None


class Mixed(Module):
    """One topic, three handlers: the envelope, the typed data, the data as it came."""

    name = "mixed"

    def __init__(self) -> None:
        self.seen: list[tuple[str, Any]] = []

    @on("kt.pinged", priority=3)
    async def whole(self, env: Envelope[Pinged]) -> None:
        self.seen.append(("whole", env))

    @on("kt.pinged", priority=2)
    async def typed(self, ping: Pinged) -> None:
        self.seen.append(("typed", ping))

    @on("kt.pinged", priority=1)
    async def untyped(self, ping: Any) -> None:  # the data as it came
        self.seen.append(("untyped", ping))


@pytest.mark.usefixtures("compiled")
async def test_an_envelope_route_hands_each_handler_what_it_asks() -> None:
    async with Kernel([Mixed], config()) as kernel:
        mixed: Mixed = kernel.module("mixed")  # type: ignore[assignment]
        await kernel.emit(Pinged(n=4))
        await kernel.emit("kt.pinged", Pinged(n=5))
        await kernel.drain()
    for n, chunk in ((4, mixed.seen[:3]), (5, mixed.seen[3:])):
        (w, env), (t, typed), (u, untyped) = chunk
        assert (w, t, u) == ("whole", "typed", "untyped")
        assert isinstance(env, Envelope)
        assert env.data == Pinged(n=n)
        assert typed == untyped == Pinged(n=n)  # never the envelope


async def test_events_nobody_asks_the_envelope_of_travel_bare() -> None:
    class Plain(Module):
        name = "plain"
        got: list[Any] = []

        @on("kt.bare")
        async def take(self, payload: Any) -> None:
            self.got.append(payload)

    async with Kernel([Plain], config()) as kernel:
        await kernel.emit("kt.bare", {"a": 1})
        await kernel.drain()
        assert Plain.got == [{"a": 1}]


async def test_bad_emits_are_validation_errors() -> None:
    async with Kernel([Books], config()) as kernel:
        with pytest.raises(ValidationError, match="topic string or an @event"):
            await kernel.emit(42)
        with pytest.raises(ValidationError, match="topic string or an @event"):
            await kernel.emit(Paid)  # the class, not an instance
        with pytest.raises(ValidationError, match="its own payload"):
            await kernel.emit(Paid(invoice="x", cents=1), {"also": 1})


def test_on_takes_only_event_classes() -> None:
    class NotAnEvent(msgspec.Struct):
        n: int

    with pytest.raises(DefinitionError, match="not an @event type"):
        on(NotAnEvent)


async def test_the_inbox_window_is_a_setting() -> None:
    with pytest.raises(Exception, match="inbox_window_s"):
        async with Kernel([Books], config(inbox_window_s=0)):
            pass


class Billing(Module):
    name = "billing"

    def __init__(self) -> None:
        self.applied: list[str] = []
        self.whole: list[Envelope[Paid]] = []

    @consume("invoices")
    async def apply(self, paid: Paid) -> None:
        self.applied.append(paid.invoice)

    @consume("invoices", group="audit", idempotent=False)
    async def audit(self, env: Envelope[Paid]) -> None:
        self.whole.append(env)


async def test_stream_records_carry_envelopes_and_repeats_are_skipped(tmp_path: Path) -> None:
    streams = f"sqlite:///{tmp_path}/streams.db"
    async with Kernel([Billing], config(streams=streams)) as kernel:
        billing: Billing = kernel.module("billing")  # type: ignore[assignment]
        paid = Paid(invoice="i-7", cents=5)
        await kernel.append("invoices", paid, key="i-7")
        await kernel.append("invoices", paid, key="i-7")  # the producer retried
        await kernel.append("invoices", {"invoice": "i-8", "cents": 1})
        # A record written without an envelope (an older producer): its place is its id.
        await kernel.streams.append("invoices", b'{"invoice": "i-9", "cents": 2}', key=None)
        await kernel.drain_streams()
        assert billing.applied == ["i-7", "i-8", "i-9"]
        assert [e.data.invoice for e in billing.whole] == ["i-7", "i-7", "i-8", "i-9"]
        first, again, plain, old = billing.whole
        assert first.id == again.id
        assert (first.type, first.dataversion, first.partitionkey) == ("kt.paid", 1, "i-7")
        assert plain.type == "invoices"  # an untyped payload: the stream names it
        assert old.id.startswith("invoices/")
        assert old.source == "/organelle/stream/invoices"
        stats = {(s.group, s.handler): s for s in kernel.consumers()}
        assert stats["billing", "apply"].duplicates == 1
        assert stats["audit", "audit"].duplicates == 0


class EnvelopeTaker(Module):
    name = "taker"

    async def on_start(self) -> None:
        self.got: list[Any] = []

    @on("malformed.test")
    async def take(self, env: Envelope[dict[str, Any]]) -> None:
        self.got.append(env)


async def test_malformed_envelopes_are_dropped_with_throttled_logging(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from organelle.context import root_context
    from organelle.envelope import Incoming

    async with Kernel([EnvelopeTaker]) as k:
        bad = {"ce-id": "1", "ce-source": "/x", "ce-type": "malformed.test", "ce-specversion": "9"}
        with caplog.at_level("WARNING", logger="organelle.events"):
            for _ in range(1_000):
                ctx = root_context()
                ctx.topic = "malformed.test"
                await k.deliver("taker", "take", Incoming(bad, {"a": 1}), ctx)
            await k.drain()
        taker = k.module("taker")
        assert isinstance(taker, EnvelopeTaker)
        assert taker.got == []
    lines = [r for r in caplog.records if "dropping an event" in r.getMessage()]
    assert 1 <= len(lines) <= 2  # one line per interval, not one per event

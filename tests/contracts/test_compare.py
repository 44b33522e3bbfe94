"""Every compare rule, each with a v1 and a v2 of a small module."""

from __future__ import annotations

import types
from typing import Any, cast

import pytest

from organelle import Module, consume, job, on, rpc
from organelle.contracts import ContractChange, compare, snapshot
from organelle.errors import ConfigError
from tests.contracts import clash
from tests.contracts.models import (
    Clash,
    Colour,
    Line,
    LineNote,
    LineStrictQty,
    LineTextQty,
    Mode,
    MoreColour,
    MoreMode,
    Positive,
    Quote,
    QuoteLess,
    QuoteMore,
    QuoteStrict,
    Shipped,
    ShippedAt,
    Tree,
    TreeInt,
)


def module(version: str = "1.0.0", **handlers: Any) -> type[Module]:
    """A module ``m`` built from handlers whose annotations a test sets."""
    body = {"name": "m", "version": version, **handlers}
    return cast(
        "type[Module]", types.new_class("M", (Module,), exec_body=lambda ns: ns.update(body))
    )


def diff(old: type[Module], new: type[Module]) -> list[ContractChange]:
    return compare(snapshot([old]), snapshot([new]))


def rules(changes: list[ContractChange]) -> list[tuple[str, str, str]]:
    """(kind, where, rule) of each change, without the version note."""
    return [(c.kind, c.where, c.rule) for c in changes if c.rule != "version"]


def only(changes: list[ContractChange]) -> ContractChange:
    found = [c for c in changes if c.rule != "version"]
    assert len(found) == 1, found
    return found[0]


# a base to vary -------------------------------------------------------------------


class V1(Module):
    name = "pricing"
    version = "1.0.0"

    @rpc
    async def quote(self, sku: str, qty: int = 1) -> Quote:
        return Quote(sku=sku, price=float(qty))

    @rpc
    async def ping(self) -> str:
        return "pong"


def test_no_change_is_no_change() -> None:
    class Same(Module):
        name = "pricing"
        version = "1.0.1"

        @rpc
        async def quote(self, sku: str, qty: int = 1) -> Quote:
            """Reworded docs and a new body change nothing."""
            return Quote(sku=sku, price=2.0 * qty)

        @rpc
        async def ping(self) -> str:
            return "PONG"

    assert diff(V1, Same) == []
    assert diff(V1, V1) == []


# modules and methods --------------------------------------------------------------


def test_module_removed_and_added() -> None:
    class Other(Module):
        name = "stock"

    old, new = snapshot([V1]), snapshot([Other])
    assert rules(compare(old, new)) == [
        ("breaking", "pricing", "module.removed"),
        ("compatible", "stock", "module.added"),
    ]


def test_rpc_method_removed_is_breaking_added_is_compatible() -> None:
    class V2(Module):
        name = "pricing"
        version = "2.0.0"

        @rpc
        async def quote(self, sku: str, qty: int = 1) -> Quote:
            return Quote(sku=sku, price=float(qty))

        @rpc
        async def ping2(self) -> str:
            return "pong"

    assert rules(diff(V1, V2)) == [
        ("breaking", "pricing.ping", "rpc.removed"),
        ("compatible", "pricing.ping2", "rpc.added"),
    ]


# parameters -------------------------------------------------------------------------


def test_new_required_parameter_is_breaking() -> None:
    class V2(Module):
        name = "pricing"
        version = "1.1.0"

        @rpc
        async def quote(self, sku: str, region: str, qty: int = 1) -> Quote:
            raise NotImplementedError

        @rpc
        async def ping(self) -> str:
            raise NotImplementedError

    change = only(diff(V1, V2))
    assert (change.kind, change.where, change.rule) == (
        "breaking",
        "pricing.quote(region)",
        "param.added",
    )
    assert "callers that omit it fail with 'missing required parameter'" in change.message


def test_new_optional_parameter_is_compatible() -> None:
    class V2(Module):
        name = "pricing"
        version = "1.1.0"

        @rpc
        async def quote(self, sku: str, qty: int = 1, region: str = "eu") -> Quote:
            raise NotImplementedError

        @rpc
        async def ping(self) -> str:
            raise NotImplementedError

    assert diff(V1, V2) == [
        ContractChange(
            kind="compatible",
            where="pricing.quote(region)",
            message="new optional parameter",
            rule="param.added",
        )
    ]


def test_removed_parameter_is_breaking_because_unknown_fields_are_refused() -> None:
    class V2(Module):
        name = "pricing"
        version = "1.1.0"

        @rpc
        async def quote(self, sku: str) -> Quote:
            raise NotImplementedError

        @rpc
        async def ping(self) -> str:
            raise NotImplementedError

    change = only(diff(V1, V2))
    assert (change.kind, change.where, change.rule) == (
        "breaking",
        "pricing.quote(qty)",
        "param.removed",
    )
    assert "'unexpected parameter'" in change.message


def test_required_becoming_optional_and_back() -> None:
    class V2(Module):
        name = "pricing"
        version = "1.1.0"

        @rpc
        async def quote(self, sku: str = "apple", qty: int = 1) -> Quote:
            raise NotImplementedError

        @rpc
        async def ping(self) -> str:
            raise NotImplementedError

    assert rules(diff(V1, V2)) == [("compatible", "pricing.quote(sku)", "param.optional")]
    assert rules(diff(V2, V1)) == [("breaking", "pricing.quote(sku)", "param.required")]


def test_changed_default_is_reported_as_compatible() -> None:
    class V2(Module):
        name = "pricing"
        version = "1.0.1"

        @rpc
        async def quote(self, sku: str, qty: int = 10) -> Quote:
            raise NotImplementedError

        @rpc
        async def ping(self) -> str:
            raise NotImplementedError

    change = only(diff(V1, V2))
    assert (change.kind, change.rule) == ("compatible", "param.default")
    assert change.message == "default changed from 1 to 10"


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        (int, int | None, "compatible"),  # Optional added: widened
        (int, float, "compatible"),  # every int is a number
        (int, int | str, "compatible"),
        (Mode, MoreMode, "compatible"),  # a Literal gains a value
        (Colour, MoreColour, "compatible"),  # an Enum gains a member
        (Positive, int, "compatible"),  # a constraint dropped
        (list[int], list[float], "compatible"),
        (dict[str, int], dict[str, int | None], "compatible"),
        (tuple[int, str], tuple[int, str], None),
        (int | None, int, "breaking"),  # Optional removed
        (float, int, "breaking"),
        (int, str, "breaking"),
        (str, Mode, "breaking"),
        (MoreMode, Mode, "breaking"),
        (MoreColour, Colour, "breaking"),
        (int, Positive, "breaking"),  # a constraint added
        (list[int], set[int], "breaking"),  # unique items now required
        (tuple[int, str], tuple[int, str, int], "breaking"),
        (Any, int, "breaking"),
        (int, Any, "compatible"),
    ],
)
def test_parameter_types(old: Any, new: Any, kind: str | None) -> None:
    # Annotations are evaluated lazily: build the handler with a real signature.
    async def v1(self: Any, x: Any) -> None: ...

    async def v2(self: Any, x: Any) -> None: ...

    v1.__annotations__ = {"x": old, "return": None}
    v2.__annotations__ = {"x": new, "return": None}
    old_cls = module("1.0.0", f=rpc(v1))
    new_cls = module("2.0.0", f=rpc(v2))
    found = rules(diff(old_cls, new_cls))
    if kind is None:
        assert found == []
    else:
        assert found == [(kind, "m.f(x)", "param.type")]


def test_type_change_message_names_both_types_and_the_reason() -> None:
    class Old(Module):
        name = "m"

        @rpc
        async def f(self, x: int | None) -> None: ...

    class New(Module):
        name = "m"

        @rpc
        async def f(self, x: int) -> None: ...

    change = only(diff(Old, New))
    assert change.message == (
        "type changed from integer | null to integer and no longer accepts everything it did: "
        "old allows null, new expects integer"
    )
    assert str(change) == f"breaking: m.f(x): {change.message}"
    widened = only(diff(New, Old))
    assert widened.message == "type widened from integer to integer | null"


# structured parameters: Structs, pydantic models, dataclasses ----------------------------


class StructV1(Module):
    name = "m"

    @rpc
    async def f(self, q: Quote) -> None: ...


def test_struct_gaining_an_optional_field_is_compatible() -> None:
    class V2(Module):
        name = "m"

        @rpc
        async def f(self, q: QuoteMore) -> None: ...

    change = only(diff(StructV1, V2))
    assert (change.kind, change.rule) == ("compatible", "param.type")
    assert (
        change.message == "type changed from Quote to QuoteMore, still accepting everything it did"
    )


def test_struct_losing_a_field_is_compatible_unless_unknown_fields_are_forbidden() -> None:
    class Lenient(Module):
        name = "m"

        @rpc
        async def f(self, q: QuoteLess) -> None: ...

    class Strict(Module):
        name = "m"

        @rpc
        async def f(self, q: QuoteStrict) -> None: ...

    assert only(diff(StructV1, Lenient)).kind == "compatible"
    change = only(diff(StructV1, Strict))
    assert change.kind == "breaking"
    assert change.message.endswith("at price: new forbids this field, old has it")


def test_struct_gaining_a_required_field_is_breaking() -> None:
    class V0(Module):
        name = "m"

        @rpc
        async def f(self, q: QuoteLess) -> None: ...

    change = only(diff(V0, StructV1))
    assert change.kind == "breaking"
    assert change.message.endswith("at price: new requires this field, old values may omit it")


def test_a_type_that_keeps_its_name_is_named_once() -> None:
    class Old(Module):
        name = "m"

        @rpc
        async def f(self, c: Clash) -> None: ...

    class New(Module):
        name = "m"

        @rpc
        async def f(self, c: clash.Clash) -> None: ...  # a pydantic model, also named Clash

    assert only(diff(Old, New)).message == (
        "type Clash changed and no longer accepts everything it did: "
        "at b: new requires this field, old values may omit it"
    )


class ModelV1(Module):
    name = "m"

    @rpc
    async def f(self, line: Line) -> None: ...


@pytest.mark.parametrize(
    ("model", "kind", "detail"),
    [
        (LineNote, "compatible", "still accepting everything it did"),
        (LineStrictQty, "breaking", "at qty: new has a higher lower bound than old"),
        (LineTextQty, "breaking", "at qty: old allows integer, new expects string"),
    ],
)
def test_pydantic_model_changes(model: type, kind: str, detail: str) -> None:
    async def f(self: Any, line: Any) -> None: ...

    f.__annotations__ = {"line": model, "return": None}
    v2 = module(f=rpc(f))
    change = only(diff(ModelV1, v2))
    assert change.kind == kind
    assert detail in change.message


def test_recursive_types_compare_without_looping() -> None:
    class Old(Module):
        name = "m"

        @rpc
        async def f(self, t: Tree) -> Tree:
            raise NotImplementedError

    class New(Module):
        name = "m"

        @rpc
        async def f(self, t: TreeInt) -> TreeInt:
            raise NotImplementedError

    assert diff(Old, Old) == []
    found = diff(Old, New)
    assert rules(found) == [
        ("breaking", "m.f(t)", "param.type"),
        ("breaking", "m.f -> result", "rpc.returns"),
    ]
    assert "at label: old allows string, new expects integer" in found[0].message


# results ---------------------------------------------------------------------------------


def _returning(hint: Any, version: str = "1.0.0") -> type[Module]:
    async def f(self: Any) -> Any:
        raise NotImplementedError

    f.__annotations__ = {} if hint is _UNDECLARED else {"return": hint}
    return module(version, f=rpc(f))


_UNDECLARED = object()


@pytest.mark.parametrize(
    ("old", "new", "kind"),
    [
        (Quote, QuoteMore, "compatible"),  # a new field callers ignore
        (QuoteMore, Quote, "compatible"),  # an optional field they handle missing
        (Quote, QuoteLess, "breaking"),  # a field callers rely on is gone
        (int | None, int, "compatible"),  # narrowed: never null now
        (int, int | None, "breaking"),  # may now be null
        (Mode, MoreMode, "breaking"),  # a value callers do not know
        (_UNDECLARED, int, "compatible"),
        (int, _UNDECLARED, "breaking"),
        (_UNDECLARED, _UNDECLARED, None),
    ],
)
def test_result_types(old: Any, new: Any, kind: str | None) -> None:
    found = rules(diff(_returning(old), _returning(new, "2.0.0")))
    assert found == ([] if kind is None else [(kind, "m.f -> result", "rpc.returns")])


def test_result_message_speaks_of_callers() -> None:
    change = only(diff(_returning(int), _returning(int | None, "2.0.0")))
    assert change.message == (
        "changed from integer to integer | null and may return what callers do not expect: "
        "new allows null, old expects integer"
    )


# jobs ------------------------------------------------------------------------------------


class JobsV1(Module):
    name = "m"
    version = "1.0.0"

    @job
    async def reindex(self, sku: str) -> None: ...

    @job
    async def sweep(self) -> None: ...


def test_job_rules() -> None:
    class V2(Module):
        name = "m"
        version = "1.1.0"

        @job
        async def reindex(self, sku: str, full: bool) -> None: ...

        @job
        async def compact(self, limit: int = 10) -> None: ...

    assert rules(diff(JobsV1, V2)) == [
        ("compatible", "job m.compact", "job.added"),
        ("breaking", "job m.reindex(full)", "param.added"),
        ("breaking", "job m.sweep", "job.removed"),
    ]


# events and streams ---------------------------------------------------------------------


class HandlersV1(Module):
    name = "m"
    version = "1.0.0"

    @on("order.shipped")
    async def shipped(self, event: Shipped) -> None: ...

    @on("order.created")
    async def created(self, event: dict[str, Any]) -> None: ...

    @consume("orders")
    async def eat(self, line: Line) -> None: ...


def test_event_and_consumer_rules() -> None:
    class V2(Module):
        name = "m"
        version = "1.1.0"

        @on("order.shipped")
        async def on_shipped(self, event: ShippedAt) -> None: ...  # renamed and narrowed

        @on("order.paid")
        async def paid(self) -> None: ...

        @consume("orders", group="billing")
        async def eat(self, line: Line) -> None: ...

    assert rules(diff(HandlersV1, V2)) == [
        ("breaking", "m @on(order.created)", "event.removed"),
        ("compatible", "m @on(order.paid)", "event.added"),
        ("breaking", "m @on(order.shipped)", "event.payload"),
        ("compatible", "m @consume(orders, group=billing)", "consumer.added"),
        ("breaking", "m @consume(orders, group=m)", "consumer.removed"),
    ]


def test_payloads_may_widen_but_not_narrow() -> None:
    class Wider(Module):
        name = "m"
        version = "1.1.0"

        @on("order.shipped")
        async def shipped(self, event: dict[str, Any]) -> None: ...

        @on("order.created")
        async def created(self) -> None: ...  # takes no payload: accepts any

        @consume("orders")
        async def eat(self, line: LineNote) -> None: ...

    found = rules(diff(HandlersV1, Wider))
    assert found == [
        ("compatible", "m @on(order.created)", "event.payload"),
        ("compatible", "m @on(order.shipped)", "event.payload"),
        ("compatible", "m @consume(orders, group=m)", "consumer.payload"),
    ]
    narrowed = rules(diff(Wider, HandlersV1))
    assert narrowed == [
        ("breaking", "m @on(order.created)", "event.payload"),
        ("breaking", "m @on(order.shipped)", "event.payload"),
        ("compatible", "m @consume(orders, group=m)", "consumer.payload"),
    ]


# versions ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "note"),
    [
        ("1.0.0", "1.1.0", "expected 2.0.0 or later"),
        ("1.0.0", "1.0.0", "expected 2.0.0 or later"),
        ("1.4.2", "2.0.0", None),
        ("0.3.0", "0.3.5", "expected 0.4.0 or later"),
        ("0.3.0", "0.4.0", None),
        ("0.3.0", "1.0.0", None),
    ],
)
def test_breaking_changes_need_a_major_bump(old: str, new: str, note: str | None) -> None:
    class Old(Module):
        name = "m"
        version = old

        @rpc
        async def f(self, x: int) -> None: ...

    class New(Module):
        name = "m"
        version = new

        @rpc
        async def f(self, x: str) -> None: ...

    notes = [c for c in diff(Old, New) if c.rule == "version"]
    if note is None:
        assert notes == []
    else:
        assert [(c.kind, c.where) for c in notes] == [("breaking", "m")]
        assert notes[0].message == (
            f"1 breaking change but version {old} -> {new} is not a major bump ({note})"
        )


def test_compatible_changes_need_no_bump() -> None:
    class V2(Module):
        name = "pricing"
        version = "1.0.0"

        @rpc
        async def quote(self, sku: str, qty: int = 1) -> Quote:
            raise NotImplementedError

        @rpc
        async def ping(self) -> str:
            raise NotImplementedError

        @rpc
        async def extra(self) -> None: ...

    assert [c.rule for c in diff(V1, V2)] == ["rpc.added"]


# input ------------------------------------------------------------------------------------


def test_compare_refuses_what_is_not_a_snapshot() -> None:
    with pytest.raises(ConfigError, match="the old snapshot is not a contract snapshot"):
        compare({"modules": {}}, snapshot([V1]))
    with pytest.raises(ConfigError, match="the new snapshot has snapshot format 2"):
        compare(snapshot([V1]), {"format": 2, "modules": {}})

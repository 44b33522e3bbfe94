"""Event types in snapshots: which ones, and each ``event_type.*`` rule of ``compare``."""

from __future__ import annotations

import copy
from typing import Any

import msgspec

from organelle import Envelope, Module, consume, event, on, rpc
from organelle.contracts import compare, loads, snapshot
from organelle.envelope import upcaster


@event("up.snap.paid", version=3, key=("invoice",))
class Paid(msgspec.Struct):
    invoice: str
    cents: int


@event("up.snap.paid", version=2, key=("invoice",))
class PaidV2(msgspec.Struct):
    invoice: str
    total: float


@upcaster("up.snap.paid", 2, 3)
def _paid_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    return {"invoice": data["invoice"], "cents": round(data.pop("total") * 100)}


@event("up.snap.heard")
class Heard(msgspec.Struct):
    n: int


@event("up.snap.booked")
class Booked(msgspec.Struct):
    n: int


@event("up.snap.quoted")
class Quoted(msgspec.Struct):
    n: int


class Books(Module):
    name = "books"

    @on("up.snap.heard")
    async def hear(self, env: Envelope[Heard]) -> None: ...

    @consume("up-snap")
    async def book(self, got: Booked) -> None: ...

    @rpc
    async def quote(self, n: int) -> list[Quoted]:
        return [Quoted(n=n)]


def test_the_app_event_types_are_those_its_modules_refer_to() -> None:
    types = snapshot([Books])["event_types"]
    # Handler payloads (an envelope's too), RPC results, and the defining file's namespace
    # (Paid: the newest version wins).
    assert {"up.snap.heard", "up.snap.booked", "up.snap.quoted", "up.snap.paid"} <= set(types)
    assert types["up.snap.paid"] == {
        "data": {"$ref": "#/schemas/Paid"},
        "key": ["invoice"],
        "upcasters": [2],
        "version": 3,
    }
    assert types["up.snap.heard"]["upcasters"] == []


def test_snapshots_without_event_types_still_load() -> None:
    old = loads('{"format": 1, "modules": {}}')
    assert old["event_types"] == {}
    changes = compare(old, snapshot([Books]))
    added = [c for c in changes if c.rule == "event_type.added"]
    assert added
    assert all(not c.breaking for c in added)


def _rules(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (c.kind, c.rule, c.message) for c in compare(old, new) if c.where == "event up.snap.paid"
    ]


def test_each_event_type_rule() -> None:
    new = snapshot([Books])
    assert _rules(new, new) == []

    old = copy.deepcopy(new)
    old["event_types"]["up.snap.paid"]["version"] = 2
    assert _rules(old, new) == [
        ("compatible", "event_type.version", "version 2 -> 3, older data upcast")
    ]

    old["event_types"]["up.snap.paid"]["version"] = 1  # no step 1 -> 2
    ((kind, rule, message),) = _rules(old, new)
    assert (kind, rule) == ("breaking", "event_type.upcaster")
    assert "without an upcaster 1 -> 2:" in message

    old["event_types"]["up.snap.paid"]["version"] = 4
    ((kind, rule, message),) = _rules(old, new)
    assert (kind, rule) == ("breaking", "event_type.version")
    assert "downcasting is not supported" in message

    old = copy.deepcopy(new)
    old["event_types"]["up.snap.paid"]["key"] = ["invoice", "cents"]
    ((kind, rule, message),) = _rules(old, new)
    assert (kind, rule) == ("breaking", "event_type.key")

    gone = copy.deepcopy(new)
    del gone["event_types"]["up.snap.paid"]
    assert _rules(new, gone) == [
        ("compatible", "event_type.removed", "no longer an event type of the app")
    ]
    assert _rules(gone, new) == [("compatible", "event_type.added", "new event type (version 3)")]


def test_data_that_accepts_more_at_the_same_version_is_compatible() -> None:
    new = snapshot([Books])
    old = copy.deepcopy(new)
    old["schemas"]["Paid"]["properties"]["note"] = {"type": "string"}
    old["schemas"]["Paid"]["required"].append("note")  # the old data always had a note
    ((kind, rule, _),) = _rules(old, new)
    assert (kind, rule) == ("compatible", "event_type.data")
    ((kind, rule, message),) = _rules(new, old)  # and the other way round: a new required field
    assert (kind, rule) == ("breaking", "event_type.data")
    assert message.endswith("bump the version (now 3) and upcast")

"""Wire types: a result's class is named on the wire and rebuilt only from what is registered."""

from __future__ import annotations

import dataclasses

import msgspec
import pydantic

from organelle import Module, event, rpc
from organelle.envelope import convert, register, wire_name, wire_type


@event("wire.happened", version=4)
class Happened(msgspec.Struct):
    n: int


class Receipt(pydantic.BaseModel):
    total: float


@dataclasses.dataclass
class Slip:
    code: str


class Till(Module):
    name = "till"

    @rpc
    async def receipt(self) -> Receipt:
        return Receipt(total=1.0)


def test_builtins_travel_unnamed() -> None:
    assert [wire_name(v) for v in (1, "a", [1], {"a": 1}, None, 2.5)] == [None] * 6


def test_events_go_by_their_ref_and_module_results_by_their_path() -> None:
    assert wire_name(Happened(n=1)) == "wire.happened@4"
    assert wire_type("wire.happened@4") is Happened
    name = wire_name(Receipt(total=2.0))
    assert name == f"{__name__}:Receipt"
    assert wire_type(name) is Receipt  # read from Till's @rpc return type on the first miss
    assert convert({"total": 3}, Receipt) == Receipt(total=3.0)


def test_unknown_names_are_never_imported() -> None:
    assert wire_type("os:system") is None
    assert wire_type(f"{__name__}:Slip") is None  # a dataclass nobody registered
    register(Slip)
    assert wire_type(f"{__name__}:Slip") is Slip
    assert convert({"code": "x"}, Slip) == Slip(code="x")
    assert convert({"wrong": 1}, Slip) == {"wrong": 1}  # does not fit: left as decoded

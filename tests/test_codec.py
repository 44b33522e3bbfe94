from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import uuid
from typing import Any

import msgspec
import pydantic
import pytest

from organelle.codec import JsonCodec, MsgpackCodec, codec_for, to_builtins
from organelle.errors import ValidationError


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Item(msgspec.Struct):
    sku: str
    qty: int


class Order(pydantic.BaseModel):
    id: uuid.UUID
    total: decimal.Decimal
    at: dt.datetime
    items: list[str]


ORDER = Order(
    id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    total=decimal.Decimal("12.34"),
    at=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
    items=["a", "b"],
)

CASES: list[tuple[Any, Any]] = [
    ({"a": 1, "b": [1, 2.5, "x", None, True]}, Any),
    (Point(1, 2), Point),
    (Item(sku="A", qty=3), Item),
    (ORDER, Order),
    (dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC), dt.datetime),
    (dt.date(2026, 1, 2), dt.date),
    (uuid.UUID("12345678-1234-5678-1234-567812345678"), uuid.UUID),
    (decimal.Decimal("1.10"), decimal.Decimal),
    (b"\x00\x01binary", bytes),
    ([Item(sku="A", qty=1), Item(sku="B", qty=2)], list[Item]),
]


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=lambda c: c.name)
@pytest.mark.parametrize(("value", "target"), CASES, ids=lambda v: type(v).__name__)
def test_round_trip(codec: JsonCodec | MsgpackCodec, value: Any, target: Any) -> None:
    data = codec.encode(value)
    assert isinstance(data, bytes)
    assert codec.decode(data, target) == value


def test_json_is_plain_json() -> None:
    assert JsonCodec().encode(ORDER) == (
        b'{"id":"12345678-1234-5678-1234-567812345678","total":"12.34",'
        b'"at":"2026-01-02T03:04:05Z","items":["a","b"]}'
    )


@pytest.mark.parametrize("codec", [JsonCodec(), MsgpackCodec()], ids=lambda c: c.name)
def test_malformed_payload_is_a_validation_error(codec: JsonCodec | MsgpackCodec) -> None:
    with pytest.raises(ValidationError, match="malformed"):
        codec.decode(b"\xc1{not valid")


_DEEP = 50_000


@pytest.mark.parametrize(
    ("codec", "data"),
    [
        (JsonCodec(), b"[" * _DEEP + b"]" * _DEEP),
        (JsonCodec(), b'{"a":' * _DEEP + b"1" + b"}" * _DEEP),
        (MsgpackCodec(), b"\x91" * _DEEP + b"\x90"),
    ],
    ids=["json-lists", "json-objects", "msgpack"],
)
def test_hostile_nesting_is_a_validation_error(
    codec: JsonCodec | MsgpackCodec, data: bytes
) -> None:
    # msgspec raises RecursionError here; a sender's input is never an internal error.
    with pytest.raises(ValidationError, match="nested too deeply"):
        codec.decode(data)


def test_wrong_type_is_a_validation_error() -> None:
    with pytest.raises(ValidationError):
        JsonCodec().decode(b'{"sku": "A", "qty": "many"}', Item)
    with pytest.raises(ValidationError):
        JsonCodec().decode(b'{"id": "nope"}', Order)


def test_unencodable_value_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="cannot encode"):
        JsonCodec().encode(object())


def test_codec_for_names() -> None:
    assert codec_for("json").name == "json"
    assert codec_for("msgpack") is codec_for("msgpack")
    with pytest.raises(ValidationError, match="unknown codec"):
        codec_for("xml")


def test_to_builtins_handles_models() -> None:
    assert to_builtins({"o": ORDER})["o"]["total"] == "12.34"
    assert sorted(to_builtins({1, 2})) == [1, 2]

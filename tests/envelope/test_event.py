"""Typed, versioned events: the decorator, the registry, deterministic ids."""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable

import msgspec
import pydantic
import pytest

from organelle import DefinitionError, event
from organelle._native import speedups
from organelle.envelope import (
    app_namespace,
    event_type,
    event_types,
    keyed_id,
    registered,
)
from organelle.envelope._ids import keyed_hasher, py_uuid7

# Both forms of uuid7: the pure Python reference and, where built, the C one (ids.c).
UUID7S = [pytest.param(py_uuid7, id="python")]
if speedups is not None:
    UUID7S.append(pytest.param(speedups.uuid7, id="c"))


@event("test.shipped", version=1, key=("order_id", "parcel"))
class Shipped(msgspec.Struct):
    order_id: str
    parcel: int
    carrier: str = "post"


@event("test.refunded", version=3, key="order_id", personal=("email",))
class Refunded(pydantic.BaseModel):
    order_id: str
    email: str


@event("test.noted")
@dataclasses.dataclass
class Noted:
    text: str


def test_the_decorator_describes_the_class() -> None:
    meta = event_type(Shipped)
    assert meta is not None
    assert (meta.name, meta.version, meta.key, meta.ref) == (
        "test.shipped",
        1,
        ("order_id", "parcel"),
        "test.shipped@1",
    )
    assert event_type(Shipped(order_id="o", parcel=1)) is meta
    refunded = event_type(Refunded)
    assert refunded is not None
    assert refunded.personal == ("email",)
    assert refunded.key == ("order_id",)
    assert event_type(Noted) is not None
    assert event_type(dict) is None


def test_the_registry_finds_types_by_name_and_version() -> None:
    assert registered("test.refunded", 3) is event_type(Refunded)
    assert registered("test.refunded") is event_type(Refunded)  # the newest
    assert registered("test.refunded", 1) is None
    assert registered("test.nothing") is None
    assert any(m.cls is Shipped for m in event_types())


def test_a_subclass_is_not_the_event_unless_declared() -> None:
    class Later(Shipped):
        pass

    assert event_type(Later) is None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("bad name",), {}, "dotted words"),
        (("a..b",), {}, "dotted words"),
        (("ok.name",), {"version": 0}, "version"),
        (("ok.name",), {"version": True}, "version"),
        (("ok.name",), {"key": ("missing",)}, "lacks"),
        (("ok.name",), {"secret": ("nope",)}, "lacks"),
    ],
)
def test_bad_declarations_are_definition_errors(
    args: tuple[str], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(DefinitionError, match=message):

        @event(*args, **kwargs)  # type: ignore[arg-type]
        class Bad(msgspec.Struct):
            order_id: str


def test_two_classes_cannot_share_a_name_and_version() -> None:
    with pytest.raises(DefinitionError, match="already"):

        @event("test.shipped", version=1)
        class Impostor(msgspec.Struct):
            order_id: str
            parcel: int

    with pytest.raises(DefinitionError, match="Struct, pydantic model or dataclass"):
        event("test.plain")(int)


def test_keyed_ids_are_deterministic_and_namespaced() -> None:
    one = keyed_id("shop", "test.shipped", 1, ["o-1", 2])
    assert one == keyed_id("shop", "test.shipped", 1, ["o-1", 2])
    assert uuid.UUID(one).version == 5
    assert one != keyed_id("shop", "test.shipped", 1, ["o-1", 3])  # other key
    assert one != keyed_id("shop", "test.shipped", 2, ["o-1", 2])  # other version
    assert one != keyed_id("bank", "test.shipped", 1, ["o-1", 2])  # other app


@pytest.mark.parametrize("values", [["o-1", 2], [1], ["ü", 2.5, None], [{"b": 1, "a": [True]}], []])
def test_keyed_ids_are_the_standard_uuid5(values: list[object]) -> None:
    name = f"test.shipped@3:{msgspec.json.encode(values, order='sorted').decode()}"
    assert keyed_id("shop", "test.shipped", 3, values) == str(
        uuid.uuid5(app_namespace("shop"), name)
    )


@pytest.mark.parametrize("uuid7", UUID7S)
def test_uuid7_is_time_ordered_and_unique(uuid7: Callable[[], str]) -> None:
    ids = [uuid7() for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)  # increasing within a process, also inside one millisecond
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


@pytest.mark.parametrize("uuid7", UUID7S)
def test_uuid7_carries_the_time_and_the_variant_across_buffer_refills(
    uuid7: Callable[[], str],
) -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid.UUID(uuid7()) for _ in range(2_000)]  # several refills of the random buffer
    after = time.time_ns() // 1_000_000
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in ids)
    stamps = [u.int >> 80 for u in ids]
    assert before <= stamps[0] <= stamps[-1] <= after + 1  # +1: a borrowed millisecond
    assert len({u.int & ((1 << 62) - 1) for u in ids}) == len(ids)  # random bits differ


def test_keyed_hasher_matches_keyed_id() -> None:
    make = keyed_hasher("shop", "test.shipped", 3)
    assert make(("o-1", 2)) == keyed_id("shop", "test.shipped", 3, ["o-1", 2])


@pytest.mark.parametrize("uuid7", UUID7S)
def test_uuid7_from_several_threads_stays_unique(uuid7: Callable[[], str]) -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def make(ids: list[str]) -> None:
        ids.extend(uuid7() for _ in range(5_000))

    workers = [threading.Thread(target=make, args=(ids,)) for ids in out]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=30)
    every = [i for ids in out for i in ids]
    assert len(every) == 20_000
    assert len(set(every)) == len(every)


def test_the_default_uuid7_is_the_c_one_where_built() -> None:
    from organelle.envelope import uuid7

    assert uuid7 is (py_uuid7 if speedups is None else speedups.uuid7)

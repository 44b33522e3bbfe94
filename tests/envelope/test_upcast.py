"""Upcasters: the registry, chains, and the typed errors of a step that is missing or fails."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import pydantic
import pytest

from organelle import DefinitionError, ValidationError, event
from organelle.envelope import Envelope, event_type, lift, upcast, upcaster, upcasters


@event("up.unit.placed", version=3)
class PlacedV3(msgspec.Struct):
    order_id: str
    cents: int
    currency: str


@event("up.unit.placed", version=1)
class PlacedV1(msgspec.Struct):
    order_id: str
    total: float


@upcaster("up.unit.placed", 1, 2)
def _total_to_cents(data: dict[str, Any]) -> dict[str, Any]:
    total = data.pop("total")
    return {**data, "cents": round(total * 100)}


@upcaster("up.unit.placed", 2, 3)
def _add_currency(data: dict[str, Any]) -> dict[str, Any]:
    return {**data, "currency": "EUR"}


@event("up.unit.signed", version=2)
class SignedV2(pydantic.BaseModel):
    user: str
    plan: str


@event("up.unit.signed", version=1)
class SignedV1(pydantic.BaseModel):
    user: str


@upcaster("up.unit.signed", 1, 2)
def _default_plan(data: dict[str, Any]) -> dict[str, Any]:
    data["plan"] = "free"
    return data


def _env(
    data: Any, version: int | None, type_: str = "up.unit.placed", **more: Any
) -> Envelope[Any]:
    return Envelope(
        id="e-1",
        source="/test",
        type=type_,
        data=data,
        time=datetime.now(UTC),
        dataversion=version,
        **more,
    )


def test_steps_chain() -> None:
    v1 = {"order_id": "o-1", "total": 9.5}
    assert upcast("up.unit.placed", 1, 2, dict(v1)) == {"order_id": "o-1", "cents": 950}
    assert upcast("up.unit.placed", 1, 3, dict(v1)) == {
        "order_id": "o-1",
        "cents": 950,
        "currency": "EUR",
    }
    assert upcast("up.unit.placed", 2, 3, {"order_id": "o", "cents": 1})["currency"] == "EUR"
    same = {"order_id": "o"}
    assert upcast("up.unit.placed", 3, 3, same) is same  # nothing to do
    assert set(upcasters("up.unit.placed")) == {1, 2}
    assert upcasters("up.unit.nothing") == {}


def test_lift_reads_the_version_from_the_envelope() -> None:
    v3 = event_type(PlacedV3)
    assert v3 is not None
    data = {"order_id": "o-1", "total": 1.25}
    lifted = lift(v3, _env(dict(data), 1))
    assert msgspec.convert(lifted, PlacedV3) == PlacedV3(order_id="o-1", cents=125, currency="EUR")
    # At the handler's version, without a version, or of another type: as is.
    for env in (_env(data, 3), _env(data, None), _env(data, 1, "up.unit.other")):
        assert lift(v3, env) is data
    # The type named by dataschema wins over the topic it was emitted on.
    on_topic = _env(dict(data), 1, "some.topic", dataschema="urn:organelle:event:up.unit.placed@1")
    assert lift(v3, on_topic)["currency"] == "EUR"


def test_lift_takes_objects_as_well_as_dicts() -> None:
    # A local envelope holds the emitted object itself.
    v3 = event_type(PlacedV3)
    v2 = event_type(SignedV2)
    assert v3 is not None
    assert v2 is not None
    assert lift(v3, _env(PlacedV1(order_id="o", total=2.0), 1))["cents"] == 200
    signed = lift(v2, _env(SignedV1(user="ann"), 1, "up.unit.signed"))
    assert SignedV2.model_validate(signed) == SignedV2(user="ann", plan="free")


def test_a_missing_step_is_a_validation_error_naming_it() -> None:
    @event("up.unit.gap", version=3)
    class GapV3(msgspec.Struct):
        n: int

    @upcaster("up.unit.gap", 1, 2)
    def _first(data: dict[str, Any]) -> dict[str, Any]:
        raise AssertionError("no step runs when the chain has a gap")

    with pytest.raises(ValidationError, match=r"no upcaster for event up\.unit\.gap 2 -> 3") as err:
        upcast("up.unit.gap", 1, 3, {"n": 1})
    assert err.value.details["from_version"] == 2
    assert err.value.details["to_version"] == 3
    assert err.value.errors == [
        {"field": "dataversion", "message": "no upcaster up.unit.gap 2 -> 3"}
    ]
    meta = event_type(GapV3)
    assert meta is not None
    with pytest.raises(ValidationError, match=r"register @upcaster\('up.unit.gap', 2, 3\)"):
        lift(meta, _env({"n": 1}, 1, "up.unit.gap"))
    with pytest.raises(ValidationError, match=r"no upcaster for event up\.unit\.never 1 -> 2"):
        upcast("up.unit.never", 1, 2, {})


def test_downcasting_is_refused() -> None:
    with pytest.raises(ValidationError, match="downcasting is not supported") as err:
        upcast("up.unit.placed", 3, 1, {})
    assert err.value.code == "organelle.validation"
    assert err.value.details["from_version"] == 3


def test_a_failing_step_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"upcaster up\.unit\.placed 1 -> 2 failed: KeyError"):
        upcast("up.unit.placed", 1, 2, {"order_id": "o"})

    @upcaster("up.unit.bad", 1, 2)
    def _not_a_dict(data: dict[str, Any]) -> dict[str, Any]:
        return [data]  # type: ignore[return-value]

    with pytest.raises(ValidationError, match="returned list, not a dict"):
        upcast("up.unit.bad", 1, 2, {})


def test_bad_registrations_are_definition_errors() -> None:
    def step(data: dict[str, Any]) -> dict[str, Any]:
        return data

    with pytest.raises(DefinitionError, match="goes up by one version"):
        upcaster("up.unit.skip", 1, 3)
    with pytest.raises(DefinitionError, match="goes up by one version"):
        upcaster("up.unit.skip", 2, 1)
    with pytest.raises(DefinitionError, match="integers >= 1"):
        upcaster("up.unit.skip", 0, 1)
    with pytest.raises(DefinitionError, match="integers >= 1"):
        upcaster("up.unit.skip", bool(1), 2)
    with pytest.raises(DefinitionError, match="dotted words"):
        upcaster("not a name", 1, 2)
    with pytest.raises(DefinitionError, match="decorates a function"):
        upcaster("up.unit.skip", 1, 2)(42)  # type: ignore[type-var]
    assert upcasters("up.unit.skip") == {}


def test_a_step_registered_twice_is_a_definition_error() -> None:
    with pytest.raises(
        DefinitionError, match=r"up\.unit\.placed 1 -> 2 is already .*_total_to_cents"
    ):

        @upcaster("up.unit.placed", 1, 2)
        def _another(data: dict[str, Any]) -> dict[str, Any]:
            return data

    assert upcasters("up.unit.placed")[1] is _total_to_cents
    # The same function defined again (a re-import) replaces itself.
    upcaster("up.unit.placed", 1, 2)(_total_to_cents)
    assert upcasters("up.unit.placed")[1] is _total_to_cents

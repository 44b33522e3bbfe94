"""Bad input never crashes the kernel: every failure is a typed OrganelleError."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from typing import Any

import msgspec
import pydantic
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from organelle import Kernel, Module, OrganelleError, ValidationError, on, rpc


@dataclasses.dataclass
class Point:
    x: int
    y: int


class Item(msgspec.Struct):
    sku: str
    qty: int = 1


class Customer(pydantic.BaseModel):
    name: str
    born: dt.date | None = None


class Target(Module):
    name = "target"

    @rpc
    async def simple(self, a: int, b: str = "x", c: float | None = None) -> str:
        return f"{a}{b}{c}"

    @rpc
    async def rich(self, p: Point, items: list[Item], who: Customer, tags: dict[str, int]) -> int:
        return len(items)

    @on("bad.>")
    async def typed(self, event: Item) -> None:
        pass


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)
params_strategy = st.dictionaries(
    st.sampled_from(["a", "b", "c", "p", "items", "who", "tags", "zzz", ""]),
    json_values,
    max_size=5,
)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(method=st.sampled_from(["simple", "rich"]), params=params_strategy)
async def test_random_params_give_typed_errors(method: str, params: dict[str, Any]) -> None:
    async with Kernel([Target]) as k:
        try:
            await k.call_with(f"target.{method}", params)
        except ValidationError as exc:
            assert exc.errors, exc  # noqa: PT017 - hypothesis drives many inputs per test
            assert all({"field", "message"} <= e.keys() for e in exc.errors)  # noqa: PT017
        except OrganelleError as exc:  # pragma: no cover - any other typed error would be a finding
            raise AssertionError(f"unexpected {exc!r}") from exc


@settings(max_examples=100, deadline=None)
@given(target=st.one_of(st.text(max_size=20), st.none(), st.integers()))
async def test_random_targets(target: Any) -> None:
    async with Kernel([Target]) as k:
        with contextlib.suppress(OrganelleError):
            await k.call_with(target, {"a": 1})


@settings(max_examples=100, deadline=None)
@given(topic=st.text(max_size=20), payload=json_values)
async def test_random_events_never_reach_the_emitter(topic: str, payload: Any) -> None:
    async with Kernel([Target]) as k:
        try:
            await k.emit(topic, payload)
        except ValidationError:
            return
        await k.drain()

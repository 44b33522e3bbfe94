"""Typed clients: calls by the module's own signatures, results as the declared types.

Local calls, remote ones over a ``memory://`` cluster and a real nats-server,
and mypy --strict on a sample that calls a client with a wrong argument type.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import inspect
import os
import re
import subprocess
import sys
import textwrap
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar, Protocol

import msgspec
import pydantic
import pytest

from organelle import DefinitionError, InternalError, Kernel, Module, ValidationError, rpc
from organelle._native import speedups
from organelle.module import _client as client_module
from organelle.module._client import client_of
from organelle.testing.servers import NatsServer, shared_nats

SRC = Path(__file__).resolve().parents[2] / "src"


class Quote(msgspec.Struct):
    sku: str
    price: float


class Item(pydantic.BaseModel):
    sku: str
    stock: int


@dataclasses.dataclass
class Box:
    size: int


KEPT = Quote("kept", 1.0)
KEPT_LIST = [KEPT]


class Pricing(Module):
    name = "pricing"

    @rpc
    async def kept(self) -> Quote:
        return KEPT

    @rpc
    async def kept_list(self) -> list[Quote]:
        return KEPT_LIST

    @rpc
    async def quote(self, sku: str, qty: int = 1) -> Quote:
        return Quote(sku, 2.5 * qty)

    @rpc
    async def quotes(self, skus: list[str]) -> list[Quote]:
        return [Quote(s, 1.0) for s in skus]

    @rpc
    async def find(self, sku: str) -> Quote | None:
        return None if sku == "none" else Quote(sku, 3.0)

    @rpc
    async def item(self, sku: str) -> Item:
        return Item(sku=sku, stock=7)

    @rpc
    async def box(self, size: int) -> Box:
        return Box(size)

    @rpc
    async def span(self, a: int, *, b: int) -> tuple[int, int]:
        return (a, b)

    @rpc
    async def total(self, a: int, b: int) -> int:
        return a + b

    @rpc
    async def nothing(self) -> None:
        return None

    @rpc
    async def foreign(self, sku: str) -> Quote:
        # What a server in another language sends: a plain object.
        return {"sku": sku, "price": "4.5"}  # type: ignore[return-value]

    @rpc
    async def broken(self) -> Quote:
        return {"sku": 1}  # type: ignore[return-value]

    @rpc(name="renamed")
    async def old_name(self) -> str:
        return "renamed"

    async def helper(self) -> str:  # not an RPC method: not on the client
        return "helper"


class PricingAPI(Protocol):
    """What a caller knows of pricing, without importing its implementation."""

    name: ClassVar[str] = "pricing"

    async def quote(self, sku: str, qty: int = 5) -> Quote: ...

    async def quotes(self, skus: list[str]) -> list[Quote]: ...


class Anonymous(Protocol):
    async def total(self, a: int, b: int) -> int: ...


class Checkout(Module):
    """Calls pricing through a client made in on_load."""

    name = "checkout"
    requires = ("pricing",)

    async def on_load(self) -> None:
        self.pricing = self.client(Pricing)

    @rpc
    async def pay(self, sku: str, qty: int) -> float:
        assert self.client(Pricing) is self.pricing  # made once per module instance
        quote = await self.pricing.quote(sku, qty=qty)
        return quote.price


async def check_results(kernel: Kernel) -> None:
    """The same assertions for every place pricing runs: here, another node, over NATS."""
    pricing = kernel.client(Pricing)
    assert await pricing.quote("a") == Quote("a", 2.5)
    assert await pricing.quote("a", 2) == Quote("a", 5.0)  # positional, as the method takes it
    assert await pricing.quote(sku="b", qty=3) == Quote("b", 7.5)
    quotes = await pricing.quotes(["x", "y"])
    assert quotes == [Quote("x", 1.0), Quote("y", 1.0)]
    assert all(type(q) is Quote for q in quotes)
    assert await pricing.find("none") is None
    assert type(await pricing.find("z")) is Quote
    item = await pricing.item("k")
    assert (type(item), item.stock) == (Item, 7)
    assert await pricing.box(3) == Box(3)
    assert await pricing.span(1, b=2) == (1, 2)
    assert await pricing.total(1, 2) == 3
    await pricing.nothing()  # -> None: nothing to convert
    assert await pricing.foreign("f") == Quote("f", 4.5)
    assert await pricing.old_name() == "renamed"
    with pytest.raises(ValidationError, match=r"result of pricing\.broken is not a Quote"):
        await pricing.broken()
    api = kernel.client(PricingAPI)
    assert await api.quote("p") == Quote("p", 2.5)  # qty left out: the server's default (1)
    assert await api.quotes(["q"]) == [Quote("q", 1.0)]
    assert await kernel.client(Anonymous, module="pricing").total(2, 2) == 4
    assert await kernel.call("checkout.pay", sku="c", qty=2) == 5.0


async def test_local_calls_return_the_declared_types() -> None:
    async with Kernel([Pricing, Checkout]) as kernel:
        await check_results(kernel)


async def test_a_local_result_comes_back_as_the_handler_returned_it() -> None:
    async with Kernel([Pricing]) as kernel:
        pricing = kernel.client(Pricing)
        assert await pricing.kept() is KEPT  # checked, not converted
        assert await pricing.kept_list() is KEPT_LIST
        assert pricing.quotes.__qualname__ == "Pricing.quotes"


def memory_node(cluster: str, node: str) -> dict[str, Any]:
    return {"kernel": {"transport": f"memory://{cluster}", "node": node}}


async def test_remote_calls_over_a_memory_cluster() -> None:
    cluster = f"clients-{uuid.uuid4().hex[:8]}"
    async with (
        Kernel([Pricing], memory_node(cluster, "a")),
        Kernel([Checkout], memory_node(cluster, "b")) as caller,
    ):
        await check_results(caller)


@pytest.fixture(scope="module")
def nats_server() -> Iterator[NatsServer]:
    with shared_nats() as server:
        yield server


def nats_node(url: str, prefix: str) -> dict[str, Any]:
    options = {"prefix": prefix, "heartbeat_s": 0.2, "registry_ttl_s": 1.0}
    return {"kernel": {"transport": url, "transport_options": options}}


@pytest.fixture
async def nats_caller(nats_server: NatsServer) -> AsyncIterator[Kernel]:
    prefix = f"t{uuid.uuid4().hex[:10]}"
    async with (
        Kernel([Pricing], nats_node(nats_server.url, prefix)),
        Kernel([Checkout], nats_node(nats_server.url, prefix)) as caller,
    ):
        yield caller


async def test_remote_calls_over_nats(nats_caller: Kernel) -> None:
    await check_results(nats_caller)


async def test_arguments_are_bound_like_the_methods_own() -> None:
    async with Kernel([Pricing]) as kernel:
        pricing: Any = kernel.client(Pricing)
        with pytest.raises(TypeError, match="multiple values for argument 'sku'"):
            await pricing.quote("a", sku="b")
        with pytest.raises(TypeError, match="unexpected keyword argument 'colour'"):
            await pricing.quote("a", colour="red")
        with pytest.raises(TypeError, match="positional argument"):
            await pricing.span(1, 2)  # b is keyword-only
        with pytest.raises(TypeError, match="missing 1 required"):
            await pricing.total(1)


async def test_only_rpc_methods_are_on_the_client() -> None:
    async with Kernel([Pricing]) as kernel:
        pricing = kernel.client(Pricing)
        with pytest.raises(
            AttributeError, match=r"'helper' is not an RPC method of module 'pricing'"
        ):
            await pricing.helper()
        with pytest.raises(AttributeError, match="'store' is not an RPC method"):
            _ = pricing.store
        with pytest.raises(AttributeError, match="read-only"):
            pricing.quote = None  # type: ignore[assignment, method-assign]
        assert repr(pricing) == "<client of module 'pricing' (Pricing)>"


class Unnamed(Protocol):
    async def total(self, a: int, b: int) -> int: ...


class Blocking(Protocol):
    name: ClassVar[str] = "pricing"

    def total(self, a: int, b: int) -> int: ...


class Splat(Protocol):
    name: ClassVar[str] = "pricing"

    async def total(self, *numbers: int) -> int: ...


async def test_what_cannot_be_a_client_is_refused_when_made() -> None:
    async with Kernel([Pricing]) as kernel:
        with pytest.raises(DefinitionError, match='no module name; .* module="<name>"'):
            kernel.client(Unnamed)
        with pytest.raises(DefinitionError, match="total must be an 'async def' method"):
            kernel.client(Blocking)
        with pytest.raises(DefinitionError, match="'numbers' cannot be sent by name"):
            kernel.client(Splat)
        with pytest.raises(DefinitionError, match="expected a Module class or a Protocol"):
            kernel.client(len)
        with pytest.raises(DefinitionError, match="not attached to a kernel"):
            Checkout().client(Pricing)


SAMPLE = """
from organelle import Kernel
from test_sample_module import Pricing


async def main(kernel: Kernel) -> float:
    pricing = kernel.client(Pricing)
    quote = await pricing.quote({sku}, qty=2)
    return quote.price
"""

SAMPLE_MODULE = """
import msgspec
from organelle import Module, rpc


class Quote(msgspec.Struct):
    sku: str
    price: float


KEPT = Quote("kept", 1.0)
KEPT_LIST = [KEPT]


class Pricing(Module):
    name = "pricing"

    @rpc
    async def kept(self) -> Quote:
        return KEPT

    @rpc
    async def kept_list(self) -> list[Quote]:
        return KEPT_LIST

    @rpc
    async def quote(self, sku: str, qty: int = 1) -> Quote:
        return Quote(sku, 2.5 * qty)
"""


@pytest.mark.timeout(150)  # a cold mypy run over organelle's imports, on a busy machine
def test_mypy_checks_calls_through_a_client(tmp_path: Path) -> None:
    (tmp_path / "test_sample_module.py").write_text(textwrap.dedent(SAMPLE_MODULE))
    (tmp_path / "good.py").write_text(textwrap.dedent(SAMPLE.format(sku='"a"')))
    (tmp_path / "bad.py").write_text(textwrap.dedent(SAMPLE.format(sku="42")))
    mypy = Path(sys.executable).with_name("mypy")
    # silent: organelle's own files are read for their types, not reported on
    options = ["--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path / "c")]
    out = subprocess.run(
        [str(mypy), *options, "good.py", "bad.py"],
        cwd=tmp_path,
        env={**os.environ, "MYPYPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=140,
        check=False,
    )
    errors = [line for line in out.stdout.splitlines() if ": error:" in line]
    expected = (
        'bad.py:8: error: Argument 1 to "quote" of "Pricing" has incompatible type "int"; '
        'expected "str"  [arg-type]'
    )
    assert errors == [expected], out.stdout + out.stderr


# The C methods (organelle._speedups.ClientCall) against the generated Python
# ones, case by case: what the call receives, what the caller gets back.

needs_c = pytest.mark.skipif(speedups is None, reason="C extension not in use")


class Shapes(Protocol):
    name: ClassVar[str] = "shapes"

    async def none(self) -> int: ...

    async def pair(self, a: int, b: int) -> int: ...

    async def opt(self, a: int, b: int = 0, c: int = 0) -> int: ...

    async def mixed(self, a: int, b: int = 0, *, c: int, d: int = 0) -> Quote: ...

    async def kwonly(self, *, x: int, y: int = 0) -> list[Quote]: ...


WIDE = {f"p{i}": i for i in range(40)}  # more parameters than ClientCall's buffers hold


async def _wide(self: Any, **params: Any) -> int:
    raise NotImplementedError


_wide.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
    [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    + [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in WIDE]
)
Shapes.wide = _wide  # type: ignore[attr-defined]

UNSET = client_module._UNSET
LOOSE_A = bytes([97]).decode()  # "a", made at run time: not the interned name
SHAPES: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
    ("none", (), {}),
    ("none", (1,), {}),
    ("none", (), {"a": 1}),
    ("pair", (1, 2), {}),
    ("pair", (1,), {"b": 2}),
    ("pair", (), {"b": 2, "a": 1}),
    ("pair", (1,), {}),
    ("pair", (), {}),
    ("pair", (1, 2, 3), {}),
    ("pair", (1,), {"a": 2}),
    ("pair", (1, 2), {"c": 3}),
    ("pair", (), {"a": UNSET, "b": 2}),  # a required parameter is sent as given
    ("opt", (1,), {}),
    ("opt", (1,), {"c": 3}),
    ("opt", (1, 2, 3), {}),
    ("opt", (), {"c": 3, "a": 1}),
    ("opt", (1, UNSET), {"c": UNSET}),  # "not given", however it came
    ("opt", (1, 2, 3, 4), {}),
    ("opt", (), {"a": 1, "b": 2}),
    ("opt", (1,), {"b": UNSET}),
    ("opt", (), {"a": 1, "c": UNSET}),
    ("pair", (), {LOOSE_A: 1, "b": 2}),  # a keyword that is not interned
    ("pair", (), {"b": 2, LOOSE_A: 1}),
    ("mixed", (1,), {"c": 3}),
    ("mixed", (1,), {"c": 3, "b": 2}),
    ("mixed", (1, 2), {"c": 3, "d": 4}),
    ("mixed", (1, 2), {"d": 4, "c": 3}),
    ("mixed", (1, 2, 3), {}),
    ("mixed", (1,), {}),
    ("mixed", (), {"c": 3}),
    ("mixed", (1,), {"c": 3, "e": 5}),
    ("kwonly", (), {"x": 1}),
    ("kwonly", (1,), {}),
    ("kwonly", (), {"y": 2}),
    ("kwonly", (), {"y": 2, "x": 1}),
    ("wide", tuple(WIDE.values()), {}),
    ("wide", (), dict(WIDE)),
    ("wide", (), {"p0": 1}),
]


def _recorded(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """What ``method(*args, **kwargs)`` sends to a plain Python call, or the error it raises."""
    sent: list[Any] = []

    def call(target: str, /, **params: Any) -> Any:
        sent.append((target, list(params.items())))
        return "awaitable"

    try:
        out = method(call)(*args, **kwargs)
    except TypeError as exc:
        return ("raised", type(exc), str(exc))
    if inspect.iscoroutine(out):
        out.close()  # a finisher: not awaited here
        out = "finisher"
    return ("called", sent, out)


@needs_c
@pytest.mark.parametrize(("attr", "args", "kwargs"), SHAPES)
def test_the_c_method_binds_and_sends_what_the_python_one_does(
    attr: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    def c(call: Any) -> Any:
        return getattr(client_of(Shapes, call), attr)

    def py(call: Any) -> Any:
        return getattr(client_of(Shapes, call, pure=True), attr)

    c_method = c(print)
    assert type(c_method).__name__ == "ClientCall"
    assert _recorded(c, args, kwargs) == _recorded(py, args, kwargs)


@needs_c
def test_the_c_methods_look_like_the_python_ones() -> None:
    c_client: Any = client_of(Shapes, print)
    py_client: Any = client_of(Shapes, print, pure=True)
    for attr in ("none", "pair", "opt", "mixed", "kwonly", "wide"):
        c, py = getattr(c_client, attr), getattr(py_client, attr)
        for name in ("__name__", "__qualname__", "__doc__", "__module__"):
            assert getattr(c, name) == getattr(py, name), (attr, name)
        assert inspect.signature(c) == inspect.signature(py)
        address = re.compile(r" at 0x[0-9a-f]+>$")
        assert address.sub("", repr(c)) == address.sub("", repr(py)) == f"<function Shapes.{attr}"


async def _outcome(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    try:
        value = await method(*args, **kwargs)
    except Exception as exc:  # compared, not handled
        return ("raised", type(exc), str(exc))
    return ("returned", type(value), value)


@needs_c
async def test_the_c_methods_return_what_the_python_ones_do() -> None:
    async with Kernel([Pricing]) as kernel:
        c: Any = kernel.client(Pricing)
        py: Any = client_of(Pricing, kernel.call, pure=True)
        cases: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = [
            ("kept", (), {}),
            ("kept_list", (), {}),
            ("quote", ("a",), {}),
            ("quote", ("a", 2), {}),
            ("quote", (), {"sku": "b", "qty": 3}),
            ("quote", (), {"qty": 3}),
            ("quote", (1,), {}),  # the server's validation error
            ("quotes", (["x"],), {}),
            ("find", ("none",), {}),
            ("find", ("z",), {}),
            ("item", ("k",), {}),
            ("box", (3,), {}),
            ("span", (1,), {"b": 2}),
            ("total", (1, 2), {}),
            ("nothing", (), {}),
            ("foreign", ("f",), {}),
            ("broken", (), {}),
            ("old_name", (), {}),
        ]
        for attr, args, kwargs in cases:
            want = await _outcome(getattr(py, attr), args, kwargs)
            assert await _outcome(getattr(c, attr), args, kwargs) == want, attr
        # A finished local call whose value is the declared class comes back as it is.
        assert type(c.kept()) is type(kernel.call("pricing.kept"))
        assert await c.kept() is KEPT


class Slow(Module):
    name = "slow"

    @rpc
    async def later(self, sku: str) -> Quote:
        await asyncio.sleep(0)
        return Quote(sku, 1.0)

    @rpc
    async def fail(self) -> Quote:
        raise ValueError("no")

    @rpc(validate=False)
    async def hold(self, x: Any, y: Any = None) -> Any:
        return x


@needs_c
async def test_a_pending_or_failed_call_goes_to_the_finisher_and_leaks_nothing() -> None:
    async with Kernel([Slow, Pricing]) as kernel:
        slow: Any = kernel.client(Slow)
        pricing: Any = kernel.client(Pricing)
        assert await slow.later("s") == Quote("s", 1.0)
        with pytest.raises(InternalError):
            await slow.fail()
        held = object()

        async def rounds(n: int) -> int:
            for _ in range(n):
                assert await slow.hold(held) is held
                assert await slow.hold(x=held, y=held) is held
                with pytest.raises(TypeError):
                    slow.hold(held, x=held)
                assert await pricing.quote("q", qty=2) == Quote("q", 5.0)
                assert await pricing.kept() is KEPT
                assert await slow.later("s") == Quote("s", 1.0)
            gc.collect()
            return sys.getrefcount(held)

        first = await rounds(10)
        assert await rounds(300) == first

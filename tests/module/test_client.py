"""Typed clients: calls by the module's own signatures, results as the declared types.

Local calls, remote ones over a ``memory://`` cluster and a real nats-server,
and mypy --strict on a sample that calls a client with a wrong argument type.
"""

from __future__ import annotations

import dataclasses
import os
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

from organelle import DefinitionError, Kernel, Module, ValidationError, rpc
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

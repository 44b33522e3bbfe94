"""The plugin test kit: ``check_plugin`` holds a plugin to its declared range and permissions."""

from __future__ import annotations

from typing import Any

import pytest

from organelle import Module, on, rpc
from organelle._version import __version__
from organelle.errors import (
    LifecycleError,
    PermissionDeniedError,
    PluginError,
    PluginIncompatibleError,
)
from organelle.plugins import Manifest
from organelle.testing import fake_module
from organelle.testing.plugins import check_plugin


async def _quote(sku: str) -> float:
    return 9.5


class Good(Module):
    name = "good"
    version = "2.1.0"
    requires = ("pricing",)
    manifest = Manifest(kernel=">=0.1,<1", rpc=("pricing.quote",), subscribe=("order.*",))

    async def on_start(self) -> None:
        self.price = await self.call("pricing.quote", sku="A1")

    @on("order.created")
    async def on_order(self, payload: Any) -> None:
        pass


class Greedy(Module):
    name = "greedy"
    manifest = Manifest(kernel=">=0.1,<1", rpc=("pricing.quote",))

    async def on_start(self) -> None:
        await self.store.namespace("pricing").get("secret")


class Loose(Module):
    name = "loose"

    @rpc
    async def ping(self) -> str:
        return "pong"


class Future(Module):
    name = "future"
    manifest = Manifest(kernel=">=99")


class Vague(Module):
    name = "vague"
    requires = ("pricing",)
    manifest = Manifest(kernel=">=0.1")


async def test_a_plugin_within_its_manifest_passes() -> None:
    found = await check_plugin(Good, modules=[fake_module("pricing", "1.0.0", quote=_quote)])
    assert (found.name, found.version, found.kernel) == ("good", "2.1.0", __version__)
    assert found.manifest is Good.manifest
    assert found.warnings == ()


async def test_by_import_string() -> None:
    found = await check_plugin(
        "tests.testing.test_plugins:Good", modules=[fake_module("pricing", "1.0.0", quote=_quote)]
    )
    assert found.name == "good"


async def test_a_use_outside_the_manifest_while_starting_fails() -> None:
    with pytest.raises(LifecycleError) as caught:
        await check_plugin(Greedy)
    cause = caught.value.__cause__
    assert isinstance(cause, PermissionDeniedError)
    assert cause.details == {"module": "greedy", "kind": "storage", "name": "pricing"}


async def test_no_manifest_or_the_wrong_kernel_is_refused() -> None:
    with pytest.raises(PluginError, match="declares no manifest"):
        await check_plugin(Loose)
    with pytest.raises(PluginIncompatibleError, match=">=99"):
        await check_plugin(Future)
    with pytest.raises(PluginError, match="is not a Module class"):
        await check_plugin("tests.testing.test_plugins:_quote")


async def test_hints_for_a_vague_manifest() -> None:
    found = await check_plugin(Vague, modules=[fake_module("pricing", "1.0.0", quote=_quote)])
    assert found.warnings == (
        "requires 'pricing' but may call none of its methods",
        "kernel range '>=0.1' has no upper bound",
    )

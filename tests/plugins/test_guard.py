"""A plugin module in a real kernel: what its manifest declares works, the rest is refused."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import msgspec
import pytest

from organelle import Kernel, Module, event, job, on, rpc
from organelle.auth.base import Principal
from organelle.errors import (
    ForbiddenError,
    PermissionDeniedError,
    PluginError,
    PluginIncompatibleError,
)
from organelle.plugins import GuardedKernel, Manifest

CONFIG = {"kernel": {"storage": "memory://"}}


@event("order.created")
class OrderCreated(msgspec.Struct):
    order: str


class Inventory(Module):
    name = "inventory"
    seen: ClassVar[list[str]] = []

    @rpc
    async def reserve(self, sku: str) -> str:
        return f"reserved {sku}"

    @rpc
    async def release(self, sku: str) -> str:
        return f"released {sku}"

    @on("pricing.>")
    async def on_pricing(self, payload: Any) -> None:
        type(self).seen.append(str(payload))


class Pricing(Module):
    name = "pricing"
    manifest = Manifest(
        kernel=">=0.1,<1",
        rpc=("inventory.reserve",),
        emit=("pricing.changed",),
        subscribe=("order.*",),
        jobs=(),
        storage=("cache",),
    )
    orders: ClassVar[list[str]] = []

    @rpc
    async def call_kernel(self, target: str) -> Any:
        return await self.kernel.call(target, sku="A1")

    @rpc
    async def call_as_module(self, target: str) -> Any:
        return await Module.call(self, target, sku="A1")

    @rpc
    async def call_with_options(self, target: str) -> Any:
        return await self.call_with(target, {"sku": "A1"}, timeout_s=1.0)

    @rpc
    async def call_as(self, who: str) -> Any:
        principal = Principal(id=who, roles=frozenset({"admin"}))
        return await self.kernel.call_with("inventory.reserve", {"sku": "A1"}, principal=principal)

    @rpc
    async def via_client(self) -> Any:
        return await self.client(Inventory).release("A1")

    @rpc
    async def own(self) -> str:
        return "own"

    @rpc
    async def loop_back(self) -> str:
        return str(await self.kernel.call("pricing.own"))

    @rpc
    async def tell(self, topic: str) -> None:
        await self.emit(topic, {"from": "pricing"})

    @rpc
    async def tell_event(self) -> None:
        await self.emit(OrderCreated(order="o1"))

    @rpc
    async def store_in(self, namespace: str) -> int:
        store = self.store if namespace == self.name else self.store.namespace(namespace)
        return await store.put("k", 1)

    @rpc
    async def store_whole(self) -> None:
        _ = self.store.store

    @rpc
    async def tx_in(self, namespace: str) -> None:
        async with self.transaction() as tx:
            await tx.store.namespace(namespace).put("k", 1)

    @rpc
    async def tx_emit(self, topic: str) -> None:
        async with self.transaction() as tx:
            await tx.emit(topic, {"n": 1})

    @rpc
    async def queue(self, name: str) -> str:
        return await self.enqueue(name, n=1)

    @job
    async def recompute(self, n: int) -> None:
        pass

    @rpc
    async def reach(self) -> dict[str, str]:
        """Try each whole-port handle and lock; say which were refused."""
        outcomes: dict[str, str] = {}
        attempts: dict[str, Callable[[], object]] = {
            "states": lambda: self.kernel.states,
            "jobs": lambda: self.kernel.jobs,
            "streams": lambda: self.kernel.streams,
            "store": lambda: self.kernel.store,
            "foreign lock": lambda: self.kernel.lock("inventory.x"),
            "own lock": lambda: self.kernel.lock("pricing.x"),
            "no-module transaction": self.kernel.transaction,
        }
        for name, attempt in attempts.items():
            try:
                attempt()
                outcomes[name] = "ok"
            except PermissionDeniedError as exc:
                outcomes[name] = exc.details["kind"]
        await self.kernel.wait_for("inventory", 1.0)
        outcomes["running"] = str(self.kernel.running)
        async with self.lock("x") as lease:
            outcomes["lock token"] = str(lease.token > 0)
        return outcomes

    @on("order.created")
    async def on_order(self, payload: Any) -> None:
        type(self).orders.append(str(payload))


@pytest.fixture(autouse=True)
def _clear() -> None:
    Inventory.seen.clear()
    Pricing.orders.clear()


async def test_declared_calls_pass_and_others_are_refused_with_a_typed_error() -> None:
    async with Kernel([Inventory, Pricing], CONFIG) as k:
        assert isinstance(k.module("pricing").kernel, GuardedKernel)
        assert k.module("inventory").kernel is k  # no manifest, no guard
        for method in ("call_kernel", "call_as_module", "call_with_options"):
            assert await k.call(f"pricing.{method}", target="inventory.reserve") == "reserved A1"
            with pytest.raises(PermissionDeniedError) as caught:
                await k.call(f"pricing.{method}", target="inventory.release")
            assert caught.value.code == "organelle.plugin.denied"
            assert caught.value.details == {
                "module": "pricing",
                "kind": "rpc",
                "name": "inventory.release",
            }
            assert isinstance(caught.value, ForbiddenError)
        with pytest.raises(PermissionDeniedError, match="inventory.release"):
            await k.call("pricing.via_client")
        assert await k.call("pricing.loop_back") == "own"  # its own methods need no declaration
        with pytest.raises(PermissionDeniedError, match="may not use principal 'root'"):
            await k.call("pricing.call_as", who="root")  # no calling as someone else


async def test_a_caller_policy_keeps_the_guard() -> None:
    config = {**CONFIG, "policies": {"pricing -> *": {"timeout_s": 5}}}
    async with Kernel([Inventory, Pricing], config) as k:
        assert await k.call("pricing.call_as_module", target="inventory.reserve") == "reserved A1"
        with pytest.raises(PermissionDeniedError):
            await k.call("pricing.call_as_module", target="inventory.release")
        await k.reload_config({})  # the policy goes: the module's call is reset, still guarded
        with pytest.raises(PermissionDeniedError):
            await k.call("pricing.call_as_module", target="inventory.release")
        assert await k.call("pricing.call_as_module", target="inventory.reserve") == "reserved A1"


async def test_emits_outside_the_manifest_are_refused() -> None:
    async with Kernel([Inventory, Pricing], CONFIG) as k:
        await k.call("pricing.tell", topic="pricing.changed")
        await k.drain()
        assert Inventory.seen == ["{'from': 'pricing'}"]
        with pytest.raises(PermissionDeniedError, match="emit 'pricing.deleted'"):
            await k.call("pricing.tell", topic="pricing.deleted")
        with pytest.raises(PermissionDeniedError, match="emit 'order.created'"):
            await k.call("pricing.tell_event")
        with pytest.raises(PermissionDeniedError, match="emit 'pricing.other'"):
            await k.call("pricing.tx_emit", topic="pricing.other")
        await k.drain()
        assert Inventory.seen == ["{'from': 'pricing'}"]
        await k.emit(OrderCreated(order="o2"))  # its declared subscription receives
        await k.drain()
        assert Pricing.orders == ["OrderCreated(order='o2')"]


async def test_storage_namespaces_outside_the_manifest_are_refused() -> None:
    async with Kernel([Inventory, Pricing], CONFIG) as k:
        assert await k.call("pricing.store_in", namespace="pricing") >= 1
        assert await k.call("pricing.store_in", namespace="cache") >= 1
        with pytest.raises(PermissionDeniedError, match="storage 'inventory'"):
            await k.call("pricing.store_in", namespace="inventory")
        with pytest.raises(PermissionDeniedError, match="the shared Store"):
            await k.call("pricing.store_whole")
        await k.call("pricing.tx_in", namespace="cache")
        with pytest.raises(PermissionDeniedError, match="storage 'inventory'"):
            await k.call("pricing.tx_in", namespace="inventory")
        assert await k.store_for("inventory").get("k") is None  # the refused writes left nothing
        entry = await k.store_for("cache").get("k")
        assert entry is not None
        assert entry.value == 1


async def test_jobs_outside_the_manifest_are_refused(tmp_path: Any) -> None:
    config = {"kernel": {"storage": "memory://", "jobs": f"sqlite:///{tmp_path}/jobs.db"}}
    async with Kernel([Inventory, Pricing], config) as k:
        assert await k.call("pricing.queue", name="pricing.recompute")
        with pytest.raises(PermissionDeniedError, match="jobs 'inventory.rebuild'"):
            await k.call("pricing.queue", name="inventory.rebuild")


def test_a_subscription_outside_the_manifest_refuses_the_load() -> None:
    class Wide(Module):
        name = "wide"
        manifest = Manifest(subscribe=("order.created",))

        @on("order.*")
        async def any_order(self, payload: Any) -> None:
            pass

    with pytest.raises(PermissionDeniedError, match="subscribe 'order.\\*'"):
        Kernel([Wide], CONFIG)


def test_a_kernel_outside_the_range_refuses_the_load() -> None:
    class Future(Module):
        name = "future"
        manifest = Manifest(kernel=">=2")

    with pytest.raises(PluginIncompatibleError, match="'future' supports organelle >=2"):
        Kernel([Future], CONFIG)


def test_a_manifest_that_is_not_a_manifest_refuses_the_load() -> None:
    class Odd(Module):
        name = "odd"
        manifest: ClassVar[Any] = {"kernel": ">=0.1"}

    with pytest.raises(PluginError, match="must be an organelle.plugins.Manifest"):
        Kernel([Odd], CONFIG)


async def test_whole_ports_and_foreign_locks_need_a_wildcard() -> None:
    async with Kernel([Inventory, Pricing], CONFIG) as k:
        assert await k.call("pricing.reach") == {
            "states": "storage",
            "jobs": "jobs",
            "streams": "streams",
            "store": "storage",
            "foreign lock": "storage",
            "own lock": "ok",
            "no-module transaction": "storage",
            "running": "True",
            "lock token": "True",
        }

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pydantic
import pytest

from organelle import (
    ConfigError,
    DefinitionError,
    Kernel,
    Module,
    ValidationError,
    context,
    on,
    rpc,
)
from organelle.testing import eventually


class Counter(Module):
    name = "counter"

    @rpc
    async def bump(self) -> int:
        return await self.store.incr("hits")

    @rpc
    async def peek_other(self) -> Any:
        entry = await self.store.namespace("other").get("hits")
        return None if entry is None else entry.value


async def test_module_store_is_namespaced_and_durable(tmp_path: Path) -> None:
    config = {"kernel": {"storage": f"sqlite:///{tmp_path / 'app.db'}"}}
    async with Kernel([Counter], config) as k:
        assert await k.call("counter.bump") == 1
        assert await k.call("counter.bump") == 2
        assert await k.call("counter.peek_other") is None
        entry = await k.store.get("counter.hits")
        assert entry is not None
    async with Kernel([Counter], config) as k:
        assert await k.call("counter.bump") == 3


async def test_a_configured_store_opens_at_start_and_closes_at_stop(tmp_path: Path) -> None:
    """Like every port: opened (connected) by ``start``, so a bad URL fails there."""
    path = tmp_path / "app.db"
    k = Kernel([Counter], {"kernel": {"storage": f"sqlite:///{path}"}})
    async with k:
        assert path.exists()  # opened before any module used it
        store = k.store
    with pytest.raises(Exception, match="closed"):
        await store.get("x")
    with pytest.raises(ConfigError, match="unknown scheme 'mongodb'"):
        Kernel([Counter], {"kernel": {"storage": "mongodb://h"}})  # refused when read


async def test_the_default_store_is_created_on_first_use_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An app that stores nothing leaves no ``organelle.db`` behind."""
    monkeypatch.chdir(tmp_path)
    async with Kernel([Counter]) as k:
        assert k.store_if_open is None
        assert not (tmp_path / "organelle.db").exists()
        assert await k.call("counter.bump") == 1  # uses self.store
        assert (tmp_path / "organelle.db").exists()


async def test_memory_store_url() -> None:
    async with Kernel([Counter], {"kernel": {"storage": "memory://"}}) as k:
        assert await k.call("counter.bump") == 1


async def test_spawn_runs_in_fresh_context_and_is_cancelled_on_stop() -> None:
    ticks: list[str] = []
    cancelled = asyncio.Event()

    class Ticker(Module):
        name = "ticker"

        async def on_start(self) -> None:
            self.spawn(self.loop())

        async def loop(self) -> None:
            try:
                while True:
                    ticks.append(await self.call("ticker.ping"))
                    await asyncio.sleep(0.001)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        @rpc
        async def ping(self) -> str:
            return context().correlation_id

    k = Kernel([Ticker])
    await k.start()
    await eventually(lambda: len(ticks) >= 3)
    await k.stop()
    assert cancelled.is_set()
    assert len(set(ticks)) == 1  # one background root, one correlation


async def test_from_config_only_selects_modules(tmp_path: Path) -> None:
    app = tmp_path / "app.toml"
    app.write_text(
        '[kernel]\nmodules = ["tests.kernel.test_features:Counter", "tests.kernel.test_features:Other"]\n'
        "[modules.other]\nx = 1\n"
    )
    k = Kernel.from_config(app, environ={}, only=["counter"])
    assert list(k.modules()) == ["counter"]
    with pytest.raises(DefinitionError, match="no module named .nope. in this app"):
        Kernel.from_config(app, environ={}, only=["nope"])


class Other(Module):
    name = "other"

    class Config(pydantic.BaseModel):
        x: int = 0


def test_unknown_config_section_warns(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="organelle.kernel")
    Kernel([Counter], {"modules": {"countr": {"x": 1}}})
    assert "[modules.countr] names no loaded module" in caplog.text


def test_broken_module_import_is_a_config_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_mod_xyz.py").write_text("raise RuntimeError('import-time failure')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match="importing 'broken_mod_xyz' failed: RuntimeError"):
        Kernel([], {"kernel": {"modules": ["broken_mod_xyz:X"]}})


class Line(pydantic.BaseModel):
    sku: str
    qty: int = pydantic.Field(gt=0)


class Shop(Module):
    name = "shop"

    @rpc
    async def order(self, lines: list[Line]) -> int:
        return len(lines)


async def test_pydantic_errors_are_one_line() -> None:
    async with Kernel([Shop]) as k:
        with pytest.raises(ValidationError) as info:
            await k.call("shop.order", lines=[{"sku": "A", "qty": 0}])
    assert "\n" not in str(info.value)
    assert "qty: Input should be greater than 0" in str(info.value)


class Vault(Module):
    name = "vault"

    @rpc(roles=["admin", "auditor"])
    async def secrets(self) -> str:
        return "s3cr3t"

    @rpc(permissions=["vault.read"])
    async def by_permission(self) -> str:
        return "never without RBAC"

    @rpc
    async def relay(self) -> str:
        return str(await self.call("vault.secrets"))


async def test_roles_enforced_on_direct_and_nested_calls() -> None:
    from organelle import ForbiddenError, Principal, UnauthenticatedError

    admin = Principal(id="ann", roles=frozenset({"admin"}))
    guest = Principal(id="bob", roles=frozenset({"guest"}))
    async with Kernel([Vault]) as k:
        assert await k.call_with("vault.secrets", principal=admin) == "s3cr3t"
        assert await k.call_with("vault.relay", principal=admin) == "s3cr3t"
        with pytest.raises(ForbiddenError, match="needs one of the roles admin, auditor"):
            await k.call_with("vault.secrets", principal=guest)
        with pytest.raises(ForbiddenError):
            await k.call_with("vault.relay", principal=guest)  # no bypass through a module
        with pytest.raises(UnauthenticatedError):
            await k.call("vault.secrets")
        with pytest.raises(ForbiddenError, match="permission 'vault.read'"):
            await k.call_with("vault.by_permission", principal=admin)


def test_rpc_roles_must_be_names() -> None:
    with pytest.raises(DefinitionError, match="roles"):

        @rpc(roles=[""])
        async def f(self: Module) -> None:
            pass


async def test_states_emit_and_persist(tmp_path: Path) -> None:
    seen: list[Any] = []

    class Watch(Module):
        name = "watch"

        @on("state.changed.>")
        async def changed(self, change: dict[str, Any]) -> None:
            seen.append((context().topic, change["value"]))

    config = {"kernel": {"storage": f"sqlite:///{tmp_path / 's.db'}", "persist_state": True}}
    async with Kernel([Watch], config) as k:
        await k.states.set("feeds.btc.price", 42.5)
        assert k.states.get("feeds.btc.price") == 42.5
        await k.drain()
    assert seen == [("state.changed.feeds.btc.price", 42.5)]
    async with Kernel([Watch], config) as k:
        assert k.states.get("feeds.btc.price") == 42.5

from __future__ import annotations

import asyncio
import gc
from typing import Any, ClassVar

import pydantic
import pytest

from organelle import (
    ConfigError,
    DefinitionError,
    DependencyError,
    Kernel,
    LifecycleError,
    Module,
    ModuleState,
    UnavailableError,
    on,
    rpc,
)
from organelle.testing import capture

LOG: list[str] = []


def tracked(
    name: str,
    *,
    requires: tuple[str, ...] = (),
    fail: str = "",
    version: str = "1.0.0",
    delay: float = 0.0,
) -> type[Module]:
    async def hook(self: Module, which: str) -> None:
        LOG.append(f"{which}:{name}")
        if delay:
            await asyncio.sleep(delay)
        if which == fail:
            raise RuntimeError(f"{name} {which} broke")

    async def on_load(self: Module) -> None:
        await hook(self, "load")

    async def on_start(self: Module) -> None:
        await hook(self, "start")

    async def on_stop(self: Module) -> None:
        await hook(self, "stop")

    async def on_abort(self: Module, error: BaseException) -> None:
        LOG.append(f"abort:{name}")

    async def ping(self: Module) -> str:
        return name

    return type(
        f"M_{name}",
        (Module,),
        {
            "name": name,
            "version": version,
            "requires": requires,
            "on_load": on_load,
            "on_start": on_start,
            "on_stop": on_stop,
            "on_abort": on_abort,
            "ping": rpc(ping),
        },
    )


@pytest.fixture(autouse=True)
def _clear() -> None:
    LOG.clear()


async def test_start_in_dependency_order_stop_in_reverse() -> None:
    a, b, c = tracked("a"), tracked("b", requires=("a",)), tracked("c", requires=("b",))
    k = Kernel([c, a, b])
    await k.start()
    assert LOG == ["load:a", "load:b", "load:c", "start:a", "start:b", "start:c"]
    assert all(k.state(n) is ModuleState.ACTIVE for n in "abc")
    await k.stop()
    assert LOG[-3:] == ["stop:c", "stop:b", "stop:a"]
    assert all(k.state(n) is ModuleState.STOPPED for n in "abc")


async def test_independent_modules_start_concurrently() -> None:
    mods = [tracked(f"m{i}", delay=0.2) for i in range(5)]
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with Kernel(mods):
        pass
    # 5 x (load + start + stop): loads are sequential, starts and stops concurrent.
    assert loop.time() - t0 < 5 * 0.2 + 2 * 0.2 + 0.5


async def test_failed_start_stops_what_started_and_names_module_and_hook() -> None:
    a, b, c = (
        tracked("a"),
        tracked("b", requires=("a",), fail="start"),
        tracked("c", requires=("b",)),
    )
    k = Kernel([a, b, c])
    with pytest.raises(
        LifecycleError, match="module 'b': on_start failed: RuntimeError: b start broke"
    ) as info:
        await k.start()
    assert info.value.details == {
        "module": "b",
        "hook": "on_start",
        "reason": "RuntimeError: b start broke",
    }
    assert "abort:b" in LOG
    assert "start:c" not in LOG
    assert LOG[-1] == "stop:a"
    assert k.state("a") is ModuleState.STOPPED
    assert k.state("b") is ModuleState.FAILED
    assert not k.running
    with pytest.raises(UnavailableError):
        await k.call("a.ping")


async def test_failed_load_means_nothing_starts() -> None:
    k = Kernel([tracked("a"), tracked("b", fail="load")])
    with pytest.raises(LifecycleError, match="module 'b': on_load failed"):
        await k.start()
    assert not any(e.startswith("start") for e in LOG)
    assert "abort:b" in LOG


async def test_hook_timeout() -> None:
    class Slow(Module):
        name = "slow"
        hook_timeout_s = 0.05

        async def on_start(self) -> None:
            await asyncio.sleep(5)

    with pytest.raises(LifecycleError, match="module 'slow': on_start timed out after 0.05s"):
        await Kernel([Slow]).start()


async def test_kernel_hook_timeout_from_config() -> None:
    class Slow(Module):
        name = "slow"

        async def on_load(self) -> None:
            await asyncio.sleep(5)

    with pytest.raises(LifecycleError, match="on_load timed out"):
        await Kernel([Slow], {"kernel": {"hook_timeout_s": 0.05}}).start()


async def test_stop_never_raises() -> None:
    k = Kernel([tracked("a", fail="stop"), tracked("b")])
    await k.start()
    await k.stop()
    assert k.state("a") is ModuleState.FAILED
    assert k.state("b") is ModuleState.STOPPED


async def test_state_events_announced() -> None:
    seen: list[tuple[str, str]] = []

    class Watcher(Module):
        name = "watcher"

        @on("kernel.module.>")
        async def on_state(self, event: dict[str, Any]) -> None:
            seen.append((event["module"], event["state"]))

    k = Kernel([Watcher, tracked("a")])
    events = capture(k, "kernel.module.>")
    async with k:
        await k.drain()
    topics = [t for t, p in events if p["module"] == "a"]
    assert topics == [
        "kernel.module.loaded",
        "kernel.module.starting",
        "kernel.module.started",
        "kernel.module.stopping",
        "kernel.module.stopped",
    ]
    assert ("a", "active") in seen


async def test_graph_errors_before_anything_runs() -> None:
    with pytest.raises(DependencyError, match="cycle"):
        await Kernel([tracked("a", requires=("b",)), tracked("b", requires=("a",))]).start()
    with pytest.raises(DependencyError, match="not registered"):
        await Kernel([tracked("a", requires=("zzz",))]).start()
    with pytest.raises(DependencyError, match="version 1.0.0"):
        await Kernel([tracked("a", requires=("b>=2",)), tracked("b")]).start()
    assert LOG == []


async def test_duplicate_module_names() -> None:
    with pytest.raises(DefinitionError, match="two modules are named 'a'"):
        Kernel([tracked("a"), tracked("a")])


class Configured(Module):
    name = "configured"

    class Config(pydantic.BaseModel):
        low_stock: int = 5
        label: str = "x"

    seen: ClassVar[list[Any]] = []

    async def on_start(self) -> None:
        self.seen.append(self.config)


async def test_module_config_validated() -> None:
    async with Kernel([Configured], {"modules": {"configured": {"low_stock": "3"}}}) as k:
        assert k.module("configured").config.low_stock == 3
    with pytest.raises(
        ConfigError, match=r"modules.configured.low_stock: Input should be a valid integer"
    ):
        Kernel([Configured], {"modules": {"configured": {"low_stock": "many"}}})
    with pytest.raises(ConfigError, match="modules.configured.nope"):

        class Strict(Configured):
            class Config(pydantic.BaseModel):
                model_config = pydantic.ConfigDict(extra="forbid")
                a: int = 1

        Kernel([Strict], {"modules": {"configured": {"nope": 1}}})


async def test_config_for_module_without_config() -> None:
    with pytest.raises(ConfigError, match="modules.a: module takes no config"):
        Kernel([tracked("a")], {"modules": {"a": {"x": 1}}})


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"call_timeout_s": "soon"}, "kernel.call_timeout_s"),
        ({"bogus": 1}, "kernel"),
        ({"call_timeout_s": -1}, "kernel"),
    ],
)
async def test_kernel_settings_errors(section: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        Kernel([], {"kernel": section})


async def test_start_and_stop_are_idempotent() -> None:
    k = Kernel([tracked("a")])
    await k.start()
    await k.start()
    await k.stop()
    await k.stop()
    assert LOG.count("start:a") == 1


class _Seen(Module):
    """Records how many objects the GC had frozen while its on_start ran."""

    name = "seen"
    frozen_at_start = -1

    async def on_start(self) -> None:
        type(self).frozen_at_start = gc.get_freeze_count()


class _Refuses(Module):
    name = "refuses"

    async def on_start(self) -> None:
        raise RuntimeError("no")


async def test_start_freezes_what_was_there_and_thaws_it_after() -> None:
    gc.unfreeze()  # whatever an earlier test left
    async with Kernel([_Seen]):
        # During the start, what the process held was out of the collector's way...
        assert _Seen.frozen_at_start > 0
        # ...and after it, back in: nothing stays frozen unless [kernel] gc_freeze asks.
        assert gc.get_freeze_count() == 0
    with pytest.raises(LifecycleError):
        await Kernel([_Refuses]).start()
    assert gc.get_freeze_count() == 0  # a failed start thaws too
    kernel = Kernel([_Seen], {"kernel": {"gc_freeze": True}})
    await kernel.start()
    try:
        assert gc.get_freeze_count() > 0
    finally:
        await kernel.stop()
        gc.unfreeze()

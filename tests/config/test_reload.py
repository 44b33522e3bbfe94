"""Hot config reload: validate all first, apply in dependency order, roll back on failure."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pydantic
import pytest

from organelle import ConfigError, Kernel, Module, rpc
from organelle.config.secrets import MASK, mask, mask_url
from organelle.testing import capture, running

CALLS: list[tuple[str, Any, Any]] = []


class Base(Module):
    name = "base"
    version = "1.0.0"

    class Config(pydantic.BaseModel):
        limit: int = 5
        password: pydantic.SecretStr = pydantic.SecretStr("hunter2")

    config: Config

    async def on_config_changed(self, old: Config, new: Config) -> None:
        CALLS.append((self.name, old.limit, new.limit))

    @rpc
    async def limit(self) -> int:
        return self.config.limit


class Top(Module):
    name = "top"
    version = "1.0.0"
    requires = ("base",)
    fail_on: int | None = None

    class Config(pydantic.BaseModel):
        level: int = 1

    config: Config

    async def on_config_changed(self, old: Config, new: Config) -> None:
        CALLS.append((self.name, old.level, new.level))
        if new.level == Top.fail_on:
            raise RuntimeError("cannot apply level")

    @rpc
    async def level(self) -> int:
        return self.config.level


class Plain(Module):
    name = "plain"


@pytest.fixture(autouse=True)
def _reset() -> None:
    CALLS.clear()
    Top.fail_on = None


def cfg(limit: int = 5, level: int = 1, **kernel: Any) -> dict[str, Any]:
    return {
        "kernel": kernel,
        "modules": {"base": {"limit": limit, "password": "hunter2"}, "top": {"level": level}},
    }


async def test_changed_modules_get_the_hook_in_dependency_order() -> None:
    async with running(Top, Base, Plain, config=cfg()) as kernel:
        events = capture(kernel, "kernel.config.>")
        result = await kernel.reload_config(cfg(limit=7, level=2))
        assert CALLS == [("base", 5, 7), ("top", 1, 2)]
        assert result.changed == ("base", "top")
        assert {d["key"] for d in result.diff} == {"modules.base.limit", "modules.top.level"}
        assert await kernel.call("base.limit") == 7
        assert await kernel.call("top.level") == 2
        assert kernel.config["modules"]["top"] == {"level": 2}
        assert events[0][0] == "kernel.config.reloaded"
        assert events[0][1]["changed"] == ["base", "top"]


async def test_unchanged_sections_are_left_alone() -> None:
    async with running(Top, Base, config=cfg()) as kernel:
        result = await kernel.reload_config(cfg(level=3))
        assert CALLS == [("top", 1, 3)]
        assert result.changed == ("top",)


async def test_an_invalid_value_rejects_everything_before_any_hook() -> None:
    async with running(Top, Base, config=cfg()) as kernel:
        events = capture(kernel, "kernel.config.>")
        bad = cfg(limit=9)
        bad["modules"]["top"]["level"] = "high"
        with pytest.raises(ConfigError, match=r"modules\.top\.level"):
            await kernel.reload_config(bad)
        assert CALLS == []
        assert await kernel.call("base.limit") == 5
        assert events[0][0] == "kernel.config.rejected"
        assert "modules.top.level" in events[0][1]["error"]


async def test_a_failing_hook_rolls_back_the_modules_already_changed() -> None:
    Top.fail_on = 4
    async with running(Top, Base, config=cfg()) as kernel:
        events = capture(kernel, "kernel.config.>")
        with pytest.raises(ConfigError, match="cannot apply level") as info:
            await kernel.reload_config(cfg(limit=8, level=4))
        # base applied, top failed, base rolled back with (new, old)
        assert CALLS == [("base", 5, 8), ("top", 1, 4), ("base", 8, 5)]
        assert info.value.details["module"] == "top"
        assert info.value.details["rolled_back"] == ["base"]
        assert await kernel.call("base.limit") == 5
        assert await kernel.call("top.level") == 1
        assert kernel.config["modules"]["base"]["limit"] == 5
        assert events[-1][0] == "kernel.config.rejected"
        assert events[-1][1]["rolled_back"] == ["base"]
        # and the next good reload still works
        await kernel.reload_config(cfg(limit=6))
        assert await kernel.call("base.limit") == 6


async def test_kernel_keys_restart_required_or_applied_live() -> None:
    async with running(Top, Base, config=cfg()) as kernel:
        result = await kernel.reload_config(
            cfg(storage="sqlite:///other.db", call_timeout_s=2.5, max_pending_events=5)
        )
        assert result.restart_required == ("max_pending_events", "storage")
        assert kernel.settings.call_timeout_s == 2.5
        assert kernel.settings.storage == "memory://"  # still the running one (running()'s)
        with pytest.raises(ConfigError, match="kernel"):
            await kernel.reload_config(cfg(call_timeout_s=-1))
        assert kernel.settings.call_timeout_s == 2.5


async def test_secrets_are_masked_in_diff_events_and_dump() -> None:
    async with running(Top, Base, config=cfg()) as kernel:
        events = capture(kernel, "kernel.config.>")
        new = cfg()
        new["modules"]["base"]["password"] = "swordfish"  # noqa: S105
        new["kernel"] = {"storage": "postgresql://app:pw123@db/app"}
        result = await kernel.reload_config(new)
        assert result.changed == ("base",)
        text = repr(result) + repr(events) + repr(kernel.config_dump())
        assert "swordfish" not in text
        assert "hunter2" not in text
        assert "pw123" not in text
        assert {"key": "modules.base.password", "old": MASK, "new": MASK} in result.diff
        assert kernel.config_dump()["modules"]["base"]["password"] == MASK
        assert kernel.module("base").config.password.get_secret_value() == "swordfish"


def test_mask_helpers() -> None:
    assert mask_url("nats://u:p@h:4222,nats://h2:4222") == f"nats://u:{MASK}@h:4222,nats://h2:4222"
    assert mask_url("sqlite:///x.db") == "sqlite:///x.db"
    assert mask({"token": "abc", "timeout": 3, "nested": {"password": "x"}}, by_name=True) == {
        "token": MASK,
        "timeout": 3,
        "nested": {"password": MASK},
    }
    assert mask({"token": "abc"}) == {"token": "abc"}  # by name only where no model says


async def test_reload_rereads_the_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text("[modules.base]\nlimit = 3\n")
    env = {"ORGANELLE__MODULES__TOP__LEVEL": "2"}
    kernel = Kernel.from_config(path, modules=[Base, Top], environ=env)
    async with kernel:
        path.write_text("[modules.base]\nlimit = 4\n")
        await kernel.reload_config()
        assert await kernel.call("base.limit") == 4
        assert await kernel.call("top.level") == 2
        path.write_text("[modules.base\nlimit = ")
        with pytest.raises(ConfigError, match="invalid TOML"):
            await kernel.reload_config()
        assert await kernel.call("base.limit") == 4


async def test_reload_without_a_source_says_so() -> None:
    async with running(Base) as kernel:
        with pytest.raises(ConfigError, match="no config source"):
            await kernel.reload_config()


async def test_before_start_the_config_is_swapped_without_hooks() -> None:
    kernel = Kernel([Base, Top], cfg())
    await kernel.reload_config(cfg(limit=2))
    assert CALLS == []
    async with kernel:
        assert await kernel.call("base.limit") == 2


async def test_hundred_bad_reloads_apply_nothing_while_calls_keep_succeeding() -> None:
    Top.fail_on = 99
    async with running(Top, Base, config=cfg()) as kernel:
        stop = asyncio.Event()
        served = {"ok": 0, "failed": 0}

        async def caller() -> None:
            while not stop.is_set():
                try:
                    assert await kernel.call("base.limit") == 5
                    assert await kernel.call("top.level") == 1
                    served["ok"] += 1
                except Exception:
                    served["failed"] += 1
                await asyncio.sleep(0)

        task = asyncio.create_task(caller())
        rejected = 0
        for i in range(100):
            if i % 2:
                bad = cfg(limit=100 + i, level=99)  # base applies, top's hook raises
            else:
                bad = cfg(limit=100 + i)
                bad["modules"]["base"]["limit"] = "not a number"
            with pytest.raises(ConfigError):
                await kernel.reload_config(bad)
            rejected += 1
            await asyncio.sleep(0)
        stop.set()
        await task
        assert rejected == 100
        assert served["failed"] == 0
        assert served["ok"] > 0
        assert await kernel.call("base.limit") == 5
        assert await kernel.call("top.level") == 1
        assert kernel.config["modules"]["base"]["limit"] == 5

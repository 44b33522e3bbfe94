"""Reload on file change (watchfiles) and through Ops (what SIGHUP calls)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from organelle import Kernel
from organelle.kernel._watch import watch_config
from organelle.ops import Ops
from organelle.testing import capture, eventually

from .test_reload import Base


async def test_a_file_change_reloads_and_a_bad_one_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text("[modules.base]\nlimit = 1\n")
    kernel = Kernel.from_config(path, modules=[Base])
    events = capture(kernel, "kernel.config.>")
    stop = asyncio.Event()
    async with kernel:
        task = asyncio.create_task(watch_config(kernel, path, stop=stop, debounce_ms=50))

        def reloaded() -> bool:
            """The watcher has no ready signal: write again until it has seen a write."""
            if kernel.module("base").config.limit == 2:
                return True
            path.write_text("[modules.base]\nlimit = 2\n")
            return False

        await eventually(reloaded, timeout_s=10, interval_s=0.2)  # > debounce: one reload each
        path.write_text("[modules.base]\nlimit = 'many'\n")
        await eventually(
            lambda: any(t == "kernel.config.rejected" for t, _ in events), timeout_s=10
        )
        assert await kernel.call("base.limit") == 2
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_ops_request_reload_and_watch_setting(tmp_path: Path) -> None:
    path = tmp_path / "app.toml"
    path.write_text("[kernel]\nconfig_watch = true\n[modules.base]\nlimit = 1\n")
    kernel = Kernel.from_config(path, modules=[Base])
    async with Ops(kernel, config_path=path, metrics=False) as ops, kernel:
        path.write_text("[kernel]\nconfig_watch = true\n[modules.base]\nlimit = 5\n")
        await ops.request_reload()
        assert await kernel.call("base.limit") == 5
        path.write_text("[kernel]\nconfig_watch = true\n[modules.base]\nlimit = 6\n")
        await eventually(lambda: kernel.module("base").config.limit == 6, timeout_s=10)
        path.write_text("[kernel]\nconfig_watch = true\n[modules.base]\nlimit = []\n")
        await ops.request_reload()  # rejected, logged, not raised
        assert await kernel.call("base.limit") == 6

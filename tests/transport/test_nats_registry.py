"""The registry: nodes with modules, versions and methods; expiry; wait_for; `organelle nodes`."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from organelle import DependencyError, Kernel
from organelle.errors import CallTimeoutError, LifecycleError
from organelle.testing import eventually
from organelle.testing.servers import NatsServer
from organelle.transport.nats import NatsTransport
from tests.cli.proc import run_once

from .conftest import Config
from .nodes import Item, Peer, Server


def transport(kernel: Kernel) -> NatsTransport:
    assert isinstance(kernel.transport, NatsTransport)
    return kernel.transport


async def test_nodes_list_modules_versions_and_methods(config: Config) -> None:
    async with (
        Kernel([Server], config(kernel={"node": "alpha"})) as _,
        Kernel([Peer], config(kernel={"node": "beta"})) as beta,
    ):
        await beta.wait_for("server", 5)
        nodes = {n.node: n for n in await transport(beta).nodes()}
        assert set(nodes) == {"alpha", "beta"}
        server = nodes["alpha"].modules["server"]
        assert server.version == "1.2.3"
        assert "echo" in server.methods
        assert server.events == ["shop.*.created"]


async def test_wait_for_a_module_that_starts_later(config: Config) -> None:
    async with Kernel([Peer], config()) as client:
        with pytest.raises(CallTimeoutError):
            await client.wait_for("server", timeout_s=0.3)
        waiter = asyncio.create_task(client.wait_for("server", timeout_s=5))
        await asyncio.sleep(0.1)
        async with Kernel([Server], config()):
            await asyncio.wait_for(waiter, 5)
            assert await client.call("server.echo", sku="late") == Item(sku="late", qty=1)


async def test_a_silent_node_expires_and_a_stopped_one_leaves_at_once(config: Config) -> None:
    async with Kernel([Peer], config()) as watcher:
        stopped = Kernel([Server], config(kernel={"node": "stopped"}))
        await stopped.start()
        silent = Kernel([Server], config(kernel={"node": "silent"}))
        await silent.start()
        await watcher.wait_for("server", 5)
        names = {n.node for n in await transport(watcher).nodes()}
        assert {"stopped", "silent"} <= names
        await stopped.stop()
        assert "stopped" not in {n.node for n in await transport(watcher).nodes()}
        # Stop heartbeating without leaving, as a frozen or killed process would.
        announcer = transport(silent)._announcer
        assert announcer is not None
        announcer._stopping = True
        assert announcer._task is not None
        announcer._task.cancel()
        start = time.monotonic()

        async def expired() -> None:
            assert "silent" not in {n.node for n in await transport(watcher).nodes()}

        await eventually(expired, timeout_s=3.0, interval_s=0.05)  # else: outlived its TTL
        assert time.monotonic() - start <= 1.5  # ttl 1.0 s + one heartbeat
        await silent.stop()


async def test_a_required_remote_module_is_awaited_at_start(config: Config) -> None:
    class NeedsServer(Peer):
        name = "needs"
        requires = ("server>=1.0",)

    cfg = config(kernel={"hook_timeout_s": 0.5})
    with pytest.raises(LifecycleError):
        await Kernel([NeedsServer], cfg).start()
    async with Kernel([Server], config()), Kernel([NeedsServer], cfg) as needs:
        assert needs.state("needs").value == "active"


async def test_organelle_nodes_command(
    config: Config, tmp_path: Path, nats_server: NatsServer, prefix: str
) -> None:
    app = tmp_path / "app.toml"
    app.write_text(
        f'[kernel]\ntransport = "{nats_server.url}"\n'
        f'[kernel.transport_options]\nprefix = "{prefix}"\n'
    )
    async with Kernel([Server], config(kernel={"node": "alpha"})):
        code, out, err = await run_once("nodes", str(app))
    assert code == 0, err
    assert "alpha" in out
    assert "server@1.2.3" in out
    empty = tmp_path / "memory.toml"
    empty.write_text('[kernel]\ntransport = "memory://"\n')
    code, _, err = await run_once("nodes", str(empty))
    assert code == 2
    assert "transport" in err


async def test_a_remote_dependency_must_be_served_in_a_required_version(config: Config) -> None:
    class WantsNew(Peer):
        name = "wants-new"
        requires = ("server>=2",)

    class WantsOne(Peer):
        name = "wants-one"
        requires = ("server>=1.2,<2",)

    cfg = config(kernel={"hook_timeout_s": 0.6})
    async with Kernel([Server], config(kernel={"node": "old"})):  # serves server 1.2.3
        with pytest.raises(DependencyError) as caught:
            await Kernel([WantsNew], cfg).start()
        err = caught.value
        assert "'wants-new' requires server>=2" in str(err)
        assert "1.2.3 on old" in str(err)
        assert err.details["found"] == {"old": "1.2.3"}
        async with Kernel([WantsOne], cfg) as ok:
            assert ok.state("wants-one").value == "active"

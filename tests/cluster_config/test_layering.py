"""Where the cluster layer sits, and how ``secret://`` references in it are kept and shown.

Precedence, lowest first: the file, the cluster layer, ``ORGANELLE__``
variables, ``--set`` overrides. A reference stays a reference in the store,
is resolved by each node, and is masked in reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from organelle import Kernel
from organelle.cluster_config import ChangeReport
from organelle.config.secrets import MASK
from organelle.errors import ConfigChangeError
from tests.cluster_config._shop import Shop, ShopConfig

pytestmark = pytest.mark.timeout(30)


def write_app(tmp_path: Path, node: str) -> Path:
    path = tmp_path / f"{node}.toml"
    path.write_text(
        "[kernel]\n"
        f'node = "{node}"\n'
        f'storage = "sqlite:///{tmp_path / "cluster.db"}"\n'
        "cluster_config = true\n"
        "[modules.shop]\n"
        "limit = 10\n"
        'region = "eu"\n'
    )
    return path


@pytest.fixture
async def pinned(tmp_path: Path) -> AsyncIterator[tuple[Kernel, Kernel]]:
    """Two nodes from files; the second pins ``limit`` with a variable and ``region`` with --set."""
    plain = Kernel.from_config(write_app(tmp_path, "a"), modules=[Shop()], environ={})
    local = Kernel.from_config(
        write_app(tmp_path, "b"),
        modules=[Shop()],
        environ={"ORGANELLE__MODULES__SHOP__LIMIT": "7"},
        overrides={"modules": {"shop": {"region": "local"}}},
    )
    async with plain, local:
        yield plain, local


def shop(kernel: Kernel) -> ShopConfig:
    config: ShopConfig = kernel.module("shop").config
    return config


async def test_the_layer_sits_between_the_file_and_local_overrides(
    pinned: tuple[Kernel, Kernel],
) -> None:
    plain, local = pinned
    assert (shop(plain).limit, shop(local).limit, shop(local).region) == (10, 7, "local")
    report = await plain.cluster_config.propose(
        {"modules": {"shop": {"limit": 20, "region": "us"}}}
    )
    assert {n.node: n.state for n in report.nodes} == {"a": "applied", "b": "applied"}
    assert (shop(plain).limit, shop(plain).region) == (20, "us")
    assert (shop(local).limit, shop(local).region) == (7, "local")  # its overrides win
    # Re-reading the file (SIGHUP, config_watch) keeps the layer in its place.
    await plain.reload_config()
    assert (shop(plain).limit, shop(plain).region) == (20, "us")


async def test_a_restarted_node_reads_the_layer_before_its_modules_start(tmp_path: Path) -> None:
    first = Kernel.from_config(write_app(tmp_path, "a"), modules=[Shop()], environ={})
    async with first:
        await first.cluster_config.propose({"modules": {"shop": {"limit": 33}}})
    again = Shop()
    async with Kernel.from_config(write_app(tmp_path, "a"), modules=[again], environ={}) as k:
        assert shop(k).limit == 33
        assert again.changes == []  # started on it: no change to go through
        seen = await k.store.get("seen.a")
        assert seen is not None
        assert seen.value["limit"] == 33  # what on_start saw


async def test_references_stay_references_and_are_masked(
    pinned: tuple[Kernel, Kernel], monkeypatch: pytest.MonkeyPatch
) -> None:
    plain, local = pinned
    monkeypatch.setenv("SHOP_TOKEN", "hunter2-token")
    report = await plain.cluster_config.propose(
        {"modules": {"shop": {"token": "secret://env/SHOP_TOKEN"}}}
    )
    assert report.patch == {"modules": {"shop": {"token": MASK}}}
    stored = await plain.store.get("_ccfg.layer")
    assert stored is not None
    reference = stored.value["layer"]["modules"]["shop"]["token"]
    assert reference == "secret://env/SHOP_TOKEN"
    assert [shop(k).token.get_secret_value() for k in (plain, local)] == ["hunter2-token"] * 2
    shown = (await plain.cluster_config.get()).to_data()
    assert shown["layer"]["modules"]["shop"]["token"] == MASK
    history = [h.to_data() for h in await plain.cluster_config.history()]
    assert "hunter2" not in repr(history)
    assert "SHOP_TOKEN" not in repr(history)


async def test_a_reference_no_node_can_resolve_is_rejected(pinned: tuple[Kernel, Kernel]) -> None:
    plain, _ = pinned
    with pytest.raises(ConfigChangeError) as caught:
        await plain.cluster_config.propose(
            {"modules": {"shop": {"token": "secret://env/NO_SUCH_VARIABLE_HERE"}}}
        )
    report = ChangeReport.from_data(caught.value.details["change"])
    assert report.outcome == "aborted"
    assert {n.state for n in report.nodes} == {"rejected"}
    assert all("NO_SUCH_VARIABLE_HERE" in n.message for n in report.nodes)

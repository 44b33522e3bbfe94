"""``organelle config cluster``: show, set and history against the app's store and a running node."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from organelle import Kernel
from organelle.cli import app
from organelle.testing import eventually
from tests.cli.proc import ROOT

runner = CliRunner()
pytestmark = pytest.mark.timeout(60)


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args), prog_name="organelle")
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def app_file(tmp_path: Path) -> str:
    path = tmp_path / "app.toml"
    path.write_text(
        f'[kernel]\npythonpath = [{str(ROOT)!r}]\nmodules = ["tests.cluster_config._shop:Shop"]\n'
        f'storage = "sqlite:///{tmp_path / "app.db"}"\nnode = "n1"\ncluster_config = true\n',
        encoding="utf-8",
    )
    return str(path)


async def test_set_show_and_history_with_a_running_node(app_file: str) -> None:
    async with Kernel.from_config(app_file) as node:
        admin = node.cluster_config

        async def joined() -> bool:
            return len(await admin.nodes()) == 1

        await eventually(joined, timeout_s=5.0)
        # The CLI runs its own event loop: give it a thread, as a shell would a process.
        code, out, err = await asyncio.to_thread(
            cli, "config", "cluster", "set", "modules.shop.limit=42", "modules.shop.region=us",
            "--app", app_file, "--by", "ann",
        )  # fmt: skip
        assert code == 0, err
        assert "committed  by ann" in out
        assert "n1: applied" in out
        assert (node.module("shop").config.limit, node.module("shop").config.region) == (42, "us")

        code, out, err = await asyncio.to_thread(
            cli, "config", "cluster", "set", "modules.shop.limit=lots", "--app", app_file
        )
        assert code == 1
        assert "aborted" in out
        assert "n1: rejected [organelle.config]" in out
        assert node.module("shop").config.limit == 42

        code, out, _ = await asyncio.to_thread(
            cli, "config", "cluster", "set", "--unset", "modules.shop.region", "--app", app_file
        )
        assert code == 0, out
        code, out, _ = await asyncio.to_thread(
            cli, "config", "cluster", "show", "--app", app_file, "--json"
        )
        shown = json.loads(out)
        assert shown["layer"] == {"modules": {"shop": {"limit": 42}}}
        assert shown["nodes"] == [{"node": "n1", "revision": shown["revision"]}]
        code, out, _ = await asyncio.to_thread(
            cli, "config", "cluster", "history", "--app", app_file, "--json"
        )
        outcomes = [(c["outcome"], [n["state"] for n in c["nodes"]]) for c in json.loads(out)]
        assert outcomes == [
            ("committed", ["applied"]),
            ("aborted", ["rejected"]),
            ("committed", ["applied"]),
        ]


def test_bad_input_exits_2(app_file: str) -> None:
    code, _, err = cli("config", "cluster", "set", "limit", "--app", app_file)
    assert code == 2
    assert "expected SECTION.KEY=VALUE" in err
    code, _, err = cli("config", "cluster", "set", "--app", app_file)
    assert (code, "nothing to change" in err) == (2, True)
    code, _, err = cli("config", "cluster", "set", "shop.limit=1", "--app", app_file)
    assert (code, "unknown section(s) shop" in err) == (2, True)
    code, out, _ = cli("config", "cluster", "show", "--app", app_file)
    assert code == 0
    assert "no live node takes part" in out

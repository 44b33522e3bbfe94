"""``organelle flags``: list, set, rule and reset against the app's store, nothing started."""

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
    db = tmp_path / "app.db"
    path.write_text(
        f'[kernel]\npythonpath = [{str(ROOT)!r}]\nmodules = ["tests.cli.flag_apps:Shop"]\n'
        f'storage = "sqlite:///{db}"\n',
        encoding="utf-8",
    )
    return str(path)


def test_list_set_rule_and_reset(app_file: str) -> None:
    code, out, _ = cli("flags", "list", "--app", app_file)
    assert code == 0
    assert "shop.new_checkout  bool  = false (default)" in out
    assert cli("flags", "set", "shop.discount_pct", "15", "--app", app_file, "--by", "ann")[0] == 0
    code, out, _ = cli(
        "flags", "rule", "shop.new_checkout", "--app", app_file,
        "--role", "beta", "--attr", "tenant=acme", "--percent", "25",
    )  # fmt: skip
    assert code == 0, out
    code, out, _ = cli("flags", "list", "--app", app_file, "--json")
    listed = {f["name"]: f for f in json.loads(out)}
    assert listed["discount_pct"]["effective"] == 15
    assert listed["discount_pct"]["by"] == "ann"
    assert listed["new_checkout"]["rules"] == [
        {"value": True, "roles": ["beta"], "attributes": {"tenant": ["acme"]}, "percent": 25.0}
    ]
    assert listed["new_checkout"]["by"].startswith("cli:")
    assert cli("flags", "rule", "shop.new_checkout", "--app", app_file, "--clear")[0] == 0
    assert cli("flags", "reset", "shop.discount_pct", "--app", app_file)[0] == 0
    code, out, _ = cli("flags", "list", "--app", app_file, "--json")
    listed = {f["name"]: f for f in json.loads(out)}
    assert (listed["discount_pct"]["overridden"], listed["new_checkout"]["rules"]) == (False, [])


def test_bad_input_exits_2_and_says_why(app_file: str) -> None:
    code, _, err = cli("flags", "set", "shop.discount_pct", "lots", "--app", app_file)
    assert code == 2
    assert "error: shop.discount_pct: 'lots' does not fit the flag" in err
    code, _, err = cli("flags", "set", "shop.nope", "1", "--app", app_file)
    assert (code, "has no flag 'nope'" in err) == (2, True)
    code, _, err = cli("flags", "rule", "shop.new_checkout", "--app", app_file, "--percent", "150")
    assert (code, "percent" in err) == (2, True)
    code, _, err = cli("flags", "rule", "shop.new_checkout", "--app", app_file, "--attr", "x")
    assert (code, "CLAIM=VALUE" in err) == (2, True)


async def test_a_running_node_sees_a_change_made_from_the_cli(app_file: str) -> None:
    async with Kernel.from_config(app_file) as node:
        shop = node.module("shop")
        # The CLI runs its own event loop: give it a thread, as a shell would a process.
        code, _, err = await asyncio.to_thread(
            cli, "flags", "set", "shop.discount_pct", "7", "--app", app_file
        )
        assert code == 0, err

        def seen() -> None:
            assert shop.flags.discount_pct == 7

        await eventually(seen, timeout_s=2)

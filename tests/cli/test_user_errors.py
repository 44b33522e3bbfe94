"""Errors a user can act on (issue 15): each names what to change, and where."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
from pathlib import Path

import pytest

from organelle.cli._output import describe
from organelle.errors import ConfigError
from organelle.storage import open_store
from organelle.testing.servers import free_port
from tests.cli.proc import spawn
from tests.cli.test_cli import cli, write_app


def test_check_lists_jobs_cron_consumers_and_routes(tmp_path: Path) -> None:
    code, out, err = cli("check", write_app(tmp_path, ["Busy"]))
    assert code == 0, err
    lines = [line.strip() for line in out.splitlines()]
    assert "job rebuild (max 4 attempts)" in lines
    assert any(line.startswith("cron '*/5 * * * *' (UTC, misfire skip) -> job") for line in lines)
    assert "consumer tally <- stream 'orders' (group busy)" in lines
    assert "route GET /busy/{n} -> busy.show" in lines


def test_a_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # import asyncpg now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'organelle\[postgres\]'"):
        # the driver is imported when the backend is built, before any connection
        asyncio.run(open_store("postgresql://nobody@127.0.0.1:1/none"))


def test_describe_adds_the_install_line_to_a_bare_import_error() -> None:
    text = describe(ModuleNotFoundError("No module named 'starlette'", name="starlette"))
    assert "pip install 'organelle[gateway]'" in text


async def test_address_in_use_names_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", port))
        taken.listen()
        app = write_app(tmp_path, ["Greeter"], f"ops_port = {port}\n")
        async with spawn("run", app) as child:
            code = await child.finish()
    assert code != 0
    assert f"cannot listen on 127.0.0.1:{port}" in child.output


async def test_the_banner_prints_where_the_app_answers(tmp_path: Path) -> None:
    port = free_port()
    app = write_app(tmp_path, ["Greeter"], f"ops_port = {port}\n")
    async with spawn("run", app) as child:
        await child.wait_for(r"^organelle: 1 module active")
        child.signal(signal.SIGINT)
        assert await child.finish() == 0, child.output
    assert f"organelle: ops      http://127.0.0.1:{port}" in child.output


def test_nodes_with_nats_down_says_why(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    app = write_app(tmp_path, ["Greeter"], f"transport = 'nats://127.0.0.1:{port}'\n")
    code, _, err = cli("nodes", app)
    assert code == 1
    assert f"no NATS server answered at nats://127.0.0.1:{port}" in err
    assert "is nats-server running there" in err
